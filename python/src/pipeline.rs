//! A pipeline built from Python: the same `PipelineSpec` as YAML and the Rust builder, with
//! Python objects as step types and steps built (maybe loaded) beforehand.

use crate::convert::{json_to_py, py_to_json};
use crate::errors::{PipelineError, to_py};
use crate::step::{PyStep, StepHandle, format_exception};
use distill::{BuildContext, OnError, Pipeline, PipelineSpec, Registry, StepSlot, StepSpec};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Prefix of the type names of Python steps: `py:MODULE:NAME`.
pub const PY_PREFIX: &str = "py:";

/// Registers the Python step type `kind`, made by `obj` (a decorated function, a `Step`
/// subclass or an instance) with each step's parameters; `obj`'s operational parameters are
/// left out of signatures.
pub fn register_py_type(
    py: Python<'_>,
    registry: &mut Registry,
    kind: &str,
    obj: Py<PyAny>,
) -> PyResult<()> {
    let operational: Vec<String> = py
        .import("distill._steps")?
        .call_method1("operational", (obj.bind(py),))?
        .extract()?;
    let refs: Vec<&str> = operational.iter().map(String::as_str).collect();
    registry.set_operational(kind, &refs);
    registry.register(kind, move |params, _ctx| {
        Python::attach(|py| {
            let built = (|| -> PyResult<PyStep> {
                let params = json_to_py(py, params)?;
                let step = py
                    .import("distill._steps")?
                    .call_method1("instantiate", (obj.bind(py), params))?;
                PyStep::new(&step)
            })();
            built.map(PyStep::into_kind).map_err(|e| {
                let message = format_exception(py, &e);
                message.into()
            })
        })
    });
    Ok(())
}

/// The resolver of `py:MODULE:NAME` types named in YAML: imports the module and registers
/// the type (see [`distill::add_resolver`]).
pub fn resolver() -> distill::Resolver {
    Arc::new(|kind, registry| {
        let Some(target) = kind.strip_prefix(PY_PREFIX) else {
            return Ok(false);
        };
        Python::attach(|py| {
            let resolved = (|| -> PyResult<()> {
                let obj = py
                    .import("distill._steps")?
                    .call_method1("resolve", (target,))?;
                register_py_type(py, registry, kind, obj.unbind())
            })();
            resolved
                .map(|()| true)
                .map_err(|e| e.value(py).to_string().into())
        })
    })
}

struct Inner {
    spec: PipelineSpec,
    base_dir: PathBuf,
    /// Python objects given as step types, by type name.
    types: HashMap<String, Py<PyAny>>,
    /// Steps built beforehand, by step name: step objects (their own handles) and steps
    /// loaded by hand through the pipeline.
    handles: HashMap<String, Py<StepHandle>>,
    /// Step objects, by step name: kept alive as long as the pipeline.
    objects: HashMap<String, Py<PyAny>>,
}

/// The compiled side of `distill.Pipeline` (see `distill/_pipeline.py`).
#[pyclass(module = "distill._distill", frozen)]
pub struct PipelineCore {
    inner: Mutex<Inner>,
}

impl PipelineCore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the engine's pipeline: Python types registered, `py:` types of YAML resolved,
    /// steps built beforehand used as they are.
    pub fn build(&self, py: Python<'_>) -> PyResult<Pipeline> {
        let (spec, base_dir, types, prebuilt) = {
            let inner = self.lock();
            let types: Vec<(String, Py<PyAny>)> = inner
                .types
                .iter()
                .map(|(k, v)| (k.clone(), v.clone_ref(py)))
                .collect();
            let prebuilt: HashMap<String, Arc<StepSlot>> = inner
                .handles
                .iter()
                .map(|(name, handle)| (name.clone(), handle.get().slot.clone()))
                .collect();
            (inner.spec.clone(), inner.base_dir.clone(), types, prebuilt)
        };
        let mut registry = distill::registry();
        for (kind, obj) in types {
            register_py_type(py, &mut registry, &kind, obj)?;
        }
        // Without the GIL: a slot built beforehand may be in use by a run whose step waits
        // for the GIL while holding the slot (constructors of Python types take it back).
        py.detach(|| {
            distill::resolve(&spec, &mut registry)?;
            Ok(Pipeline::build_with(
                spec,
                &registry,
                &BuildContext { base_dir },
                &prebuilt,
            )?)
        })
        .map_err(to_py)
    }
}

fn on_error(policy: Option<&str>) -> PyResult<OnError> {
    match policy {
        None | Some("fail") => Ok(OnError::Fail),
        Some("mark") => Ok(OnError::Mark),
        Some(other) => Err(PipelineError::new_err(format!(
            "on_error is 'fail' or 'mark', not '{other}'"
        ))),
    }
}

#[pymethods]
impl PipelineCore {
    #[new]
    #[pyo3(signature = (name, description = None))]
    fn new(name: String, description: Option<String>) -> Self {
        let mut spec = PipelineSpec::new(name);
        spec.description = description;
        Self {
            inner: Mutex::new(Inner {
                spec,
                base_dir: std::env::current_dir().unwrap_or_default(),
                types: HashMap::new(),
                handles: HashMap::new(),
                objects: HashMap::new(),
            }),
        }
    }

    /// A pipeline read from a YAML file (relative paths in it resolved against its folder).
    #[staticmethod]
    fn from_yaml(path: PathBuf) -> PyResult<Self> {
        let spec = PipelineSpec::load(&path).map_err(crate::errors::engine)?;
        let base_dir = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_default();
        Ok(Self {
            inner: Mutex::new(Inner {
                spec,
                base_dir,
                types: HashMap::new(),
                handles: HashMap::new(),
                objects: HashMap::new(),
            }),
        })
    }

    /// Adds a step; `obj` is the Python object of a `py:` type, or with `handle` (its own
    /// handle) a step object, built beforehand.
    #[pyo3(signature = (name, kind, after, batch_size, input_batch_size, params, input_mappings, output_mappings, on_error_policy, obj = None, handle = None))]
    #[allow(clippy::too_many_arguments)]
    fn add_step(
        &self,
        py: Python<'_>,
        name: String,
        kind: String,
        after: Vec<String>,
        batch_size: Option<usize>,
        input_batch_size: Option<usize>,
        params: Option<&Bound<'_, PyAny>>,
        input_mappings: Option<BTreeMap<String, String>>,
        output_mappings: Option<BTreeMap<String, String>>,
        on_error_policy: Option<&str>,
        obj: Option<&Bound<'_, PyAny>>,
        handle: Option<Py<StepHandle>>,
    ) -> PyResult<()> {
        let params = match params {
            Some(p) if !p.is_none() => py_to_json(p)?,
            _ => serde_json::Value::Object(Default::default()),
        };
        if !params.is_object() {
            return Err(PipelineError::new_err(format!(
                "step '{name}': params must be a dict"
            )));
        }
        let mut step = StepSpec::new(&name, &kind);
        step.after = after;
        step.batch_size = batch_size;
        step.input_batch_size = input_batch_size;
        step.params = params;
        step.input_mappings = input_mappings.unwrap_or_default();
        step.output_mappings = output_mappings.unwrap_or_default();
        step.on_error = on_error(on_error_policy)?;
        let mut inner = self.lock();
        if inner.spec.steps.iter().any(|s| s.name == name) {
            return Err(PipelineError::new_err(format!(
                "step name '{name}' is used twice"
            )));
        }
        if let Some(handle) = handle {
            // A step object: its handle holds it weakly, the pipeline strongly.
            inner.handles.insert(name.clone(), handle);
            if let Some(obj) = obj {
                inner.objects.insert(name.clone(), obj.clone().unbind());
            }
        } else if let Some(obj) = obj {
            match inner.types.get(&kind) {
                Some(known) if !known.bind(py).is(obj) => {
                    return Err(PipelineError::new_err(format!(
                        "step '{name}': two different Python objects have the type name '{kind}' (give them distinct names)"
                    )));
                }
                _ => {
                    inner.types.insert(kind.clone(), obj.clone().unbind());
                }
            }
        }
        inner.spec.steps.push(step);
        Ok(())
    }

    /// Makes `step` come after `pred` (the `>>` operator).
    fn connect(&self, pred: &str, step: &str) -> PyResult<()> {
        let mut inner = self.lock();
        let names: Vec<String> = inner.spec.steps.iter().map(|s| s.name.clone()).collect();
        for n in [pred, step] {
            if !names.iter().any(|s| s == n) {
                return Err(PipelineError::new_err(format!("no step named '{n}'")));
            }
        }
        let Some(spec) = inner.spec.steps.iter_mut().find(|s| s.name == step) else {
            return Ok(());
        };
        if !spec.after.iter().any(|a| a == pred) {
            spec.after.push(pred.to_owned());
        }
        Ok(())
    }

    /// The steps' names, in the order added.
    fn step_names(&self) -> Vec<String> {
        self.lock()
            .spec
            .steps
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// The pipeline's name.
    #[getter]
    fn name(&self) -> String {
        self.lock().spec.name.clone()
    }

    /// Sets the spending budget in dollars (None: no budget).
    fn set_budget(&self, usd: Option<f64>) {
        self.lock().spec.budget_usd = usd;
    }

    /// The canonical YAML (what the run database stores, and `distill run` reads).
    fn to_yaml(&self) -> String {
        self.lock().spec.to_yaml()
    }

    /// The validated pipeline's steps, stages, columns and signatures, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pipeline = self.build(py)?;
        let nodes = pipeline.nodes();
        let out = PyDict::new(py);
        out.set_item("name", &pipeline.spec().name)?;
        out.set_item("signature", pipeline.signature())?;
        let stages = PyList::empty(py);
        for members in pipeline.stages() {
            let stage = PyList::empty(py);
            for &i in members {
                let node = &nodes[i];
                let d = PyDict::new(py);
                d.set_item("name", node.name())?;
                d.set_item("kind", node.kind.as_str())?;
                d.set_item("type", &node.spec.kind)?;
                d.set_item("batch_size", node.batch_size)?;
                let after: Vec<&str> = node.preds.iter().map(|&p| nodes[p].name()).collect();
                d.set_item("after", after)?;
                d.set_item("inputs", &node.received)?;
                d.set_item("columns", &node.columns)?;
                d.set_item(
                    "signature",
                    pipeline
                        .step_signatures()
                        .get(node.name())
                        .cloned()
                        .unwrap_or_default(),
                )?;
                stage.append(d)?;
            }
            stages.append(stage)?;
        }
        out.set_item("stages", stages)?;
        let leaves: Vec<&str> = pipeline.leaves().iter().map(|&i| nodes[i].name()).collect();
        out.set_item("leaves", leaves)?;
        Ok(out)
    }

    /// The handle of step `name` for loading it by hand: its object's own for a step
    /// object; else the step is built now, and a run of this pipeline uses that build.
    fn handle(&self, py: Python<'_>, name: &str) -> PyResult<Py<StepHandle>> {
        if let Some(handle) = self.lock().handles.get(name) {
            return Ok(handle.clone_ref(py));
        }
        let pipeline = self.build(py)?;
        let node = pipeline
            .nodes()
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| PipelineError::new_err(format!("no step named '{name}'")))?;
        let handle = Py::new(py, StepHandle::new(node.slot.clone()))?;
        self.lock()
            .handles
            .insert(name.to_owned(), handle.clone_ref(py));
        Ok(handle)
    }

    /// Runs the pipeline on `db` with the GIL released; see `distill.Pipeline.run`.
    #[pyo3(signature = (db, new = false, workers = 0, allow_changed_inputs = false, progress = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        db: PathBuf,
        new: bool,
        workers: usize,
        allow_changed_inputs: bool,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let pipeline = self.build(py)?;
        let mut options = distill::RunOptions::new(db);
        options.new_run = new;
        options.workers = workers;
        options.allow_changed_inputs = allow_changed_inputs;
        crate::run::run(py, &pipeline, options, progress)
    }
}
