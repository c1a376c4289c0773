//! `distill._distill`: the compiled part of the `distill` Python package (PyO3, abi3). The
//! package in `distill/` re-exports it with docstrings and type stubs; see `distill/_steps.py`
//! for the protocol Python steps follow.
#![deny(missing_docs)]

mod arrow;
mod cli;
mod context;
mod convert;
mod errors;
mod pipeline;
mod read;
mod run;
mod step;

use pyo3::prelude::*;

/// The module: classes, functions and exception classes; importing it teaches distill's
/// pipeline loader the `py:MODULE:NAME` step types.
#[pymodule]
fn _distill(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::add(module)?;
    module.add_class::<pipeline::PipelineCore>()?;
    module.add_class::<step::StepHandle>()?;
    module.add_class::<context::PyTaskContext>()?;
    module.add_function(wrap_pyfunction!(read::status, module)?)?;
    module.add_function(wrap_pyfunction!(read::export, module)?)?;
    module.add_function(wrap_pyfunction!(read::load_tables, module)?)?;
    module.add_function(wrap_pyfunction!(cli::cli_main, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    static RESOLVER: std::sync::Once = std::sync::Once::new();
    RESOLVER.call_once(|| distill::add_resolver(pipeline::resolver()));
    Ok(())
}
