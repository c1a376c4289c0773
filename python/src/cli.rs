//! The `distill` command inside Python: the package's console entry point runs the same
//! command as the binary, so pipelines whose steps are Python (`type: py:MODULE:NAME`) run
//! from the command line and in cluster jobs.

use pyo3::prelude::*;

/// Runs the `distill` command on `argv` (program name first) with the GIL released (Python
/// steps take it when they run); returns the exit code.
#[pyfunction]
pub fn cli_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| distill_cli::main_with(argv))
}
