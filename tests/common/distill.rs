//! Runs the real `distill` binary.

use std::path::Path;
use std::process::{Command, Output};

/// The workspace root (where fixtures/ is).
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A `distill` command, run in `dir`.
pub fn distill(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_distill"));
    cmd.current_dir(dir);
    cmd
}

/// Runs `distill ARGS` in `dir` and returns its output.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    distill(dir).args(args).output().expect("run distill")
}

/// Runs `distill ARGS` in `dir` with file writes limited to `kib` KiB (SIGXFSZ ignored, so a
/// write past the limit fails with EFBIG, as on a full disk).
pub fn run_with_file_limit(dir: &Path, kib: u64, args: &[&str]) -> Output {
    let script = format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\"");
    Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_distill")])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run distill")
}

/// Text of stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Text of stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of a JSONL file as JSON values.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
