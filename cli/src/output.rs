//! Writing to stdout and stderr without panicking: a closed pipe (`distill status | head -1`)
//! ends the command quietly, as ripgrep does.

use std::io::Write;

/// Writes a line to stdout; an error (a closed pipe) goes up to `main`.
macro_rules! outln {
    ($($arg:tt)*) => {
        crate::output::write_out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes a line to stderr, ignoring failures (there is nowhere left to report them).
macro_rules! errln {
    ($($arg:tt)*) => {
        crate::output::write_err(format_args!($($arg)*))
    };
}
pub(crate) use errln;

/// Writes `args` and a newline to stdout.
pub fn write_out(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes `args` and a newline to stderr, ignoring failures.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// Whether `err` is a write to a pipe whose reader has gone.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
