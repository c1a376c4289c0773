//! The `distill` binary: the command of the `distill-cli` library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(distill_cli::main_with(std::env::args_os()))
}
