//! The package's exception classes, defined once here and exported by `distill`, and how
//! distill's errors become them.

use distill::ErrorKind;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyErr, create_exception};

create_exception!(
    distill,
    DistillError,
    PyException,
    "Base class of every error distill raises."
);
create_exception!(
    distill,
    PipelineError,
    DistillError,
    "The pipeline is invalid: bad YAML, an unknown step type, a missing column, a bad parameter (the CLI's exit code 3)."
);
create_exception!(
    distill,
    StepFailedError,
    DistillError,
    "A step failed; everything committed is kept, and running again resumes (exit code 4). A Python step's traceback is in the message and in `distill.status`."
);
create_exception!(
    distill,
    BudgetReachedError,
    DistillError,
    "The run's spending budget (`budget_usd`) was reached; raise it and run again to resume (exit code 6)."
);
create_exception!(
    distill,
    StorageError,
    DistillError,
    "The run database failed: damaged, in use by another process, or a full disk."
);
create_exception!(
    distill,
    InternalError,
    DistillError,
    "A bug in distill (exit code 70); committed work is kept and running again resumes."
);
create_exception!(
    distill,
    StepStateError,
    DistillError,
    "A step's lifecycle was used out of order (loading a loaded step, say)."
);
create_exception!(
    distill,
    AlreadyLoadedError,
    StepStateError,
    "`load()` was called on a step that is loaded (and does not declare its load idempotent)."
);

/// The Python exception of a distill error, by its kind; a Python step's own exception (from
/// `load`) is raised as it was.
pub fn to_py(err: distill::Error) -> PyErr {
    if let distill::Error::Engine(engine) = &err {
        match engine {
            distill_engine::Error::AlreadyLoaded { .. } => {
                return AlreadyLoadedError::new_err(err.to_string());
            }
            distill_engine::Error::LoadFailed { source, .. } => {
                if let Some(py_err) = source.downcast_ref::<crate::step::PyStepError>() {
                    return py_err.to_pyerr();
                }
            }
            _ => {}
        }
    }
    let message = err.to_string();
    match err.kind() {
        ErrorKind::Invalid => PipelineError::new_err(message),
        ErrorKind::StepFailed => StepFailedError::new_err(message),
        ErrorKind::Budget => BudgetReachedError::new_err(message),
        ErrorKind::Storage => StorageError::new_err(message),
        ErrorKind::Bug => InternalError::new_err(message),
        _ => DistillError::new_err(message),
    }
}

/// [`to_py`] for an engine error.
pub fn engine(err: distill_engine::Error) -> PyErr {
    to_py(err.into())
}

/// Adds the exception classes to the module.
pub fn add(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("DistillError", py.get_type::<DistillError>())?;
    module.add("PipelineError", py.get_type::<PipelineError>())?;
    module.add("StepFailedError", py.get_type::<StepFailedError>())?;
    module.add("BudgetReachedError", py.get_type::<BudgetReachedError>())?;
    module.add("StorageError", py.get_type::<StorageError>())?;
    module.add("InternalError", py.get_type::<InternalError>())?;
    module.add("StepStateError", py.get_type::<StepStateError>())?;
    module.add("AlreadyLoadedError", py.get_type::<AlreadyLoadedError>())?;
    Ok(())
}
