//! Python steps as engine steps: [`PyStep`] implements the engine's step traits by calling
//! the Python object (see `distill/_steps.py` for the protocol, `_distill_*` methods), and
//! [`StepHandle`] is a step's lifecycle (the engine's `StepSlot`) as Python sees it.

use crate::context::PyTaskContext;
use crate::convert::{py_to_rows, rows_to_py};
use distill_engine::step::{
    Generator, GlobalStep, Lifecycle, Step, StepError, StepKind, StepResult,
};
use distill_engine::task::{Task, TaskContext};
use distill_engine::{LoadGuard, LoadState, NodeKind, StepSlot};
use distill_storage::Row;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::{Arc, Mutex};

/// An exception raised by a Python step: its message is the Python traceback, and it keeps
/// the exception, so that a `load()` called from Python raises it as it was.
#[derive(Debug)]
pub struct PyStepError {
    text: String,
    error: PyErr,
}

impl std::fmt::Display for PyStepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for PyStepError {}

impl PyStepError {
    /// Wraps `error`, formatting its traceback.
    pub fn new(py: Python<'_>, error: PyErr) -> Self {
        let text = format_exception(py, &error);
        Self { text, error }
    }

    /// The Python exception.
    pub fn to_pyerr(&self) -> PyErr {
        Python::attach(|py| self.error.clone_ref(py))
    }
}

/// The exception with its traceback, as Python prints it (`traceback.format_exception`).
pub fn format_exception(py: Python<'_>, error: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (error.get_type(py), error.value(py), error.traceback(py)),
        )?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    })();
    formatted
        .unwrap_or_else(|_| error.to_string())
        .trim_end()
        .to_owned()
}

fn step_error(py: Python<'_>, error: PyErr) -> StepError {
    Box::new(PyStepError::new(py, error))
}

/// How a step's object is held: strongly by steps the engine built, weakly by the handle an
/// object keeps of itself (which would otherwise be a cycle the garbage collector cannot see).
enum Obj {
    Strong(Py<PyAny>),
    Weak(Py<PyAny>),
}

impl Obj {
    fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Obj::Strong(obj) => Ok(obj.bind(py).clone()),
            Obj::Weak(weak) => {
                let obj = weak.bind(py).call0()?;
                if obj.is_none() {
                    return Err(crate::errors::StepStateError::new_err(
                        "the step's Python object no longer exists",
                    ));
                }
                Ok(obj)
            }
        }
    }
}

/// What a Python step says of itself (`_distill_describe`).
struct Described {
    kind: NodeKind,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    arrow: bool,
    version: String,
    idempotent: bool,
}

fn describe(obj: &Bound<'_, PyAny>) -> PyResult<Described> {
    let d = obj.call_method0("_distill_describe")?;
    let d = d.cast::<PyDict>()?;
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(key)?.ok_or_else(|| {
            pyo3::exceptions::PyKeyError::new_err(format!("_distill_describe lacks '{key}'"))
        })
    };
    let kind: String = get("kind")?.extract()?;
    let kind = match kind.as_str() {
        "step" => NodeKind::Step,
        "global" => NodeKind::Global,
        "generator" => NodeKind::Generator,
        "task" => NodeKind::Task,
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown step kind '{other}'"
            )));
        }
    };
    let format: String = get("format")?.extract()?;
    Ok(Described {
        kind,
        name: get("name")?.extract()?,
        inputs: get("inputs")?.extract()?,
        outputs: get("outputs")?.extract()?,
        arrow: format == "arrow",
        version: get("version")?.extract()?,
        idempotent: get("idempotent")?.extract()?,
    })
}

/// Where a generator's Python iterator is.
#[derive(Default)]
struct Cursor {
    /// Rows taken from the iterator so far.
    position: u64,
    iterator: Option<Py<PyAny>>,
    /// Rows taken but not handed out yet (a generator may yield lists of rows).
    pending: std::collections::VecDeque<Row>,
    exhausted: bool,
}

/// A Python step, as the engine runs it.
pub struct PyStep {
    obj: Obj,
    d: Described,
    cursor: Mutex<Cursor>,
}

impl PyStep {
    /// The engine step of a Python step object (held strongly).
    pub fn new(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::with(obj, Obj::Strong(obj.clone().unbind()))
    }

    fn with(obj: &Bound<'_, PyAny>, held: Obj) -> PyResult<Self> {
        Ok(Self {
            d: describe(obj)?,
            obj: held,
            cursor: Mutex::new(Cursor::default()),
        })
    }

    /// Boxed as the kind of step it is.
    pub fn into_kind(self) -> StepKind {
        match self.d.kind {
            NodeKind::Generator => StepKind::Generator(Box::new(self)),
            NodeKind::Step => StepKind::Step(Box::new(self)),
            NodeKind::Global => StepKind::Global(Box::new(self)),
            NodeKind::Task => StepKind::Task(Box::new(self)),
        }
    }

    fn call<T>(
        &self,
        f: impl for<'py> FnOnce(Python<'py>, &Bound<'py, PyAny>) -> PyResult<T>,
    ) -> StepResult<T> {
        Python::attach(|py| {
            let obj = self.obj.get(py).map_err(|e| step_error(py, e))?;
            f(py, &obj).map_err(|e| step_error(py, e))
        })
    }

    /// The rows as the step takes them: a list of dicts or a `pyarrow.Table`.
    fn batch<'py>(&self, py: Python<'py>, rows: &[Row]) -> PyResult<Bound<'py, PyAny>> {
        if self.d.arrow {
            crate::arrow::rows_to_table(py, rows)
        } else {
            Ok(rows_to_py(py, rows)?.into_any())
        }
    }

    /// The rows a step returned (a list of dicts, or a table for an Arrow step).
    fn rows(&self, out: &Bound<'_, PyAny>) -> PyResult<Vec<Row>> {
        if out.is_none() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "{} returned None; a step returns its output rows",
                self.d.name
            )));
        }
        if self.d.arrow && !out.is_instance_of::<PyList>() {
            crate::arrow::table_to_rows(out)
        } else {
            py_to_rows(out)
        }
    }

    fn process_rows(
        &self,
        rows: Vec<Row>,
        ctx: Option<&Arc<dyn TaskContext>>,
    ) -> StepResult<Vec<Row>> {
        self.call(|py, obj| {
            let batch = self.batch(py, &rows)?;
            drop(rows);
            let out = match ctx {
                Some(ctx) => {
                    let ctx = Py::new(py, PyTaskContext::new(ctx.clone()))?;
                    obj.call_method1("_distill_process", (batch, ctx))?
                }
                None => obj.call_method1("_distill_process", (batch,))?,
            };
            self.rows(&out)
        })
    }
}

impl Lifecycle for PyStep {
    fn load(&mut self) -> StepResult<()> {
        self.call(|_, obj| obj.call_method0("_distill_load").map(drop))
    }

    fn unload(&mut self) {
        if let Err(e) = self.call(|_, obj| obj.call_method0("_distill_unload").map(drop)) {
            tracing_free_warning(&self.d.name, &e.to_string());
        }
        // A generator starts from its first row when loaded again.
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Cursor::default();
    }

    fn load_is_idempotent(&self) -> bool {
        self.d.idempotent
    }

    fn code_version(&self) -> Option<String> {
        Some(self.d.version.clone())
    }
}

/// An `unload` that raised: the step is unloaded anyway; the error goes to stderr.
fn tracing_free_warning(step: &str, error: &str) {
    eprintln!(
        "warning: {step}: unload raised an exception (the step counts as unloaded):\n{error}"
    );
}

impl Step for PyStep {
    fn inputs(&self) -> Vec<String> {
        self.d.inputs.clone()
    }

    fn outputs(&self) -> Vec<String> {
        self.d.outputs.clone()
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        self.process_rows(rows, None)
    }

    fn keeps_rows(&self) -> bool {
        // A Python step may filter or expand rows.
        false
    }
}

impl GlobalStep for PyStep {
    fn inputs(&self) -> Vec<String> {
        self.d.inputs.clone()
    }

    fn outputs(&self) -> Vec<String> {
        self.d.outputs.clone()
    }

    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        self.process_rows(rows, None)
    }
}

impl Task for PyStep {
    fn inputs(&self) -> Vec<String> {
        self.d.inputs.clone()
    }

    fn outputs(&self) -> Vec<String> {
        self.d.outputs.clone()
    }

    fn process(&self, rows: Vec<Row>, ctx: &Arc<dyn TaskContext>) -> StepResult<Vec<Row>> {
        self.process_rows(rows, Some(ctx))
    }

    fn keeps_rows(&self) -> bool {
        false
    }
}

impl Generator for PyStep {
    fn outputs(&self) -> Vec<String> {
        self.d.outputs.clone()
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let available = cursor.position - cursor.pending.len() as u64;
        if cursor.iterator.is_none() || available != offset {
            // A resumed run (or a repeated call) starts at `offset`: the generator is
            // deterministic, so its first rows are passed over.
            *cursor = Cursor::default();
        }
        let name = self.d.name.clone();
        let cursor = &mut *cursor;
        self.call(|py, obj| {
            if cursor.iterator.is_none() {
                let iterable = obj.call_method0("_distill_generate")?;
                cursor.iterator = Some(iterable.try_iter()?.into_any().unbind());
            }
            let skip_to = offset;
            let want = count as u64 + 1;
            while !cursor.exhausted
                && (cursor.position < skip_to || (cursor.position - skip_to) < want)
            {
                let iterator = cursor.iterator.as_ref().map(|i| i.bind(py).clone());
                let Some(iterator) = iterator else { break };
                match iterator.call_method0("__next__") {
                    Ok(item) => {
                        let rows = if item.is_instance_of::<PyDict>() {
                            vec![crate::convert::dict_to_row(item.cast::<PyDict>()?)?]
                        } else {
                            py_to_rows(&item)?
                        };
                        for row in rows {
                            cursor.position += 1;
                            if cursor.position > skip_to {
                                cursor.pending.push_back(row);
                            }
                        }
                    }
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                        cursor.exhausted = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            let _ = &name;
            let take = count.min(cursor.pending.len());
            let rows: Vec<Row> = cursor.pending.drain(..take).collect();
            let done = cursor.exhausted && cursor.pending.is_empty();
            Ok((rows, done))
        })
    }
}

/// A step's lifecycle, for Python: `load()` and `unload()` by hand go through the engine's
/// state machine (`StepSlot`), so a second `load()` is `AlreadyLoadedError`, and a pipeline
/// run uses a step loaded by hand as it is (it neither loads nor unloads it).
#[pyclass(module = "distill._distill", frozen)]
pub struct StepHandle {
    pub(crate) slot: Arc<StepSlot>,
    hand: Mutex<Option<LoadGuard>>,
}

impl StepHandle {
    /// A handle on a built step.
    pub fn new(slot: Arc<StepSlot>) -> Self {
        Self {
            slot,
            hand: Mutex::new(None),
        }
    }
}

#[pymethods]
impl StepHandle {
    /// The handle of a Python step object, which keeps it (the handle holds the object
    /// weakly).
    #[staticmethod]
    fn of_step(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let weak = obj.py().import("weakref")?.call_method1("ref", (obj,))?;
        let step = PyStep::with(obj, Obj::Weak(weak.unbind()))?;
        let name = step.d.name.clone();
        Ok(Self::new(Arc::new(StepSlot::new(&name, step.into_kind()))))
    }

    /// Loads the step; `AlreadyLoadedError` if it is loaded (unless its load is idempotent).
    fn load(&self, py: Python<'_>) -> PyResult<()> {
        let slot = self.slot.clone();
        let guard = py
            .detach(move || slot.load())
            .map_err(crate::errors::engine)?;
        let mut hand = self.hand.lock().unwrap_or_else(|p| p.into_inner());
        if guard.owns() || hand.is_none() {
            *hand = Some(guard);
        }
        Ok(())
    }

    /// Unloads the step if it was loaded by hand; nothing if it is not loaded. A step loaded
    /// by a running pipeline is unloaded by the run.
    fn unload(&self, py: Python<'_>) -> PyResult<()> {
        let guard = self.hand.lock().unwrap_or_else(|p| p.into_inner()).take();
        if guard.is_none() && self.slot.state() != LoadState::Unloaded {
            return Err(crate::errors::StepStateError::new_err(format!(
                "step '{}' was loaded by a running pipeline, which unloads it",
                self.slot.name()
            )));
        }
        py.detach(move || drop(guard));
        Ok(())
    }

    /// `"unloaded"`, `"loading"` or `"loaded"`.
    #[getter]
    fn state(&self) -> &'static str {
        match self.slot.state() {
            LoadState::Unloaded => "unloaded",
            LoadState::Loading => "loading",
            LoadState::Loaded => "loaded",
        }
    }
}
