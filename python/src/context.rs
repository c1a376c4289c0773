//! What a Python task gets besides its rows: the run's request cache (never pay twice),
//! counters and the stop flag.

use crate::convert::{json_to_py, py_to_json};
use distill_engine::task::TaskContext;
use pyo3::prelude::*;
use std::sync::Arc;

/// The key of a Python task's request: blake3 of its canonical JSON, in a namespace of its
/// own (an LLM task's keys hash another form, so the two never meet).
pub fn request_key(request: &serde_json::Value) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"distill-python-request\0");
    hasher.update(
        distill_engine::canonical_json(request)
            .to_string()
            .as_bytes(),
    );
    *hasher.finalize().as_bytes()
}

fn storage_err(e: distill_storage::Error) -> PyErr {
    crate::errors::to_py(e.into())
}

/// The run's request cache and counters, for a Python task's `process(rows, ctx)`.
///
/// A request is any JSON data that says everything the answer depends on (model, prompt,
/// parameters); its answer, also JSON data, is committed to the run database by `store`
/// before it returns, so a resumed or changed run finds it with `cached` instead of paying
/// for it again.
#[pyclass(module = "distill._distill", name = "TaskContext", frozen)]
pub struct PyTaskContext {
    ctx: Arc<dyn TaskContext>,
}

impl PyTaskContext {
    /// Wraps the engine's context of the task.
    pub fn new(ctx: Arc<dyn TaskContext>) -> Self {
        Self { ctx }
    }
}

#[pymethods]
impl PyTaskContext {
    /// The answer committed earlier for `request`, or None.
    fn cached<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = request_key(&py_to_json(request)?);
        let ctx = self.ctx.clone();
        let found = py.detach(move || ctx.cached(&key)).map_err(storage_err)?;
        match found {
            None => Ok(py.None().into_bound(py)),
            Some(bytes) => {
                let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    crate::errors::StorageError::new_err(format!(
                        "a cached answer is not JSON ({e}); the run database may be damaged"
                    ))
                })?;
                json_to_py(py, &json)
            }
        }
    }

    /// Commits `response` as the answer to `request`, durably, before returning.
    fn store(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        response: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = request_key(&py_to_json(request)?);
        let bytes = serde_json::to_vec(&py_to_json(response)?)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let ctx = self.ctx.clone();
        py.detach(move || ctx.store(key, bytes))
            .map_err(storage_err)
    }

    /// The cached answer to `request`, or `compute(request)`'s, stored first; with the
    /// counters `cache_hits` or `requests` counted.
    fn call<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
        compute: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hit = self.cached(py, request)?;
        if !hit.is_none() {
            self.ctx.count("cache_hits", 1);
            return Ok(hit);
        }
        let answer = compute.call1((request,))?;
        self.ctx.count("requests", 1);
        self.store(py, request, &answer)?;
        Ok(answer)
    }

    /// Adds `delta` to the task's counter `name` (shown by `distill.status`).
    #[pyo3(signature = (name, delta = 1))]
    fn count(&self, name: &str, delta: u64) {
        self.ctx.count(name, delta);
    }

    /// Whether the run is stopping (Ctrl-C): start no new request.
    #[getter]
    fn stopping(&self) -> bool {
        self.ctx.stopping()
    }
}
