//! A run from Python: the engine runs on a thread of its own with the GIL released, while the
//! calling thread watches for Ctrl-C (`Python::check_signals`) and draws progress. The first
//! Ctrl-C stops the run cleanly (as the CLI's first SIGINT does): in-flight batches are
//! committed or given up, the steps the run loaded are unloaded, and `KeyboardInterrupt` is
//! raised once the run has stopped; running again resumes.

use crate::convert::to_py;
use distill::{Observer, Pipeline, PlanMode, RunEvent, RunOptions};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the calling thread looks for Ctrl-C and redraws progress.
const POLL: Duration = Duration::from_millis(100);

/// What the run told so far, for the progress display.
#[derive(Default)]
struct Tracker {
    steps: Mutex<BTreeMap<String, (u64, u64, bool)>>,
    messages: Mutex<Vec<String>>,
}

impl Observer for Tracker {
    fn on_event(&self, event: &RunEvent) {
        let message = match event {
            RunEvent::Planned(plan) if plan.mode == PlanMode::Changed => {
                let mut text = String::from("the pipeline changed: keeping what is still valid");
                for step in &plan.steps {
                    text.push_str(&format!("\n  {step}"));
                }
                Some(text)
            }
            RunEvent::Started { resumed: true } => Some("resuming from the run database".into()),
            RunEvent::StageStarted { stage, steps } => {
                Some(format!("stage {stage}: {}", steps.join(", ")))
            }
            RunEvent::BatchCommitted {
                step,
                rows,
                batches,
                last,
            } => {
                self.steps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(step.clone(), (*rows, *batches, *last));
                None
            }
            RunEvent::StepFailed { step, .. } => Some(format!("step '{step}' failed")),
            _ => None,
        };
        if let Some(message) = message {
            self.messages
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(message);
        }
    }
}

impl Tracker {
    /// Tells `progress` what is new: `message(text)` per message, `update(steps)` with each
    /// step's `(rows, batches, done)`.
    fn report(&self, py: Python<'_>, progress: &Bound<'_, PyAny>) -> PyResult<()> {
        let messages =
            std::mem::take(&mut *self.messages.lock().unwrap_or_else(|p| p.into_inner()));
        for message in messages {
            progress.call_method1("message", (message,))?;
        }
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let dict = PyDict::new(py);
        for (step, state) in steps {
            dict.set_item(step, state)?;
        }
        progress.call_method1("update", (dict,))?;
        Ok(())
    }
}

/// Whether the run in `db` had finished already, with this pipeline.
fn finished_before(pipeline: &Pipeline, options: &RunOptions) -> bool {
    if options.new_run || !options.db.exists() {
        return false;
    }
    distill::status(&options.db).is_ok_and(|s| {
        s.run.status == distill::RunStatus::Finished
            && distill::plan(pipeline, options).is_ok_and(|plan| plan.mode == PlanMode::Resume)
    })
}

/// Runs `pipeline`; returns the summary as a dict (see `distill.RunSummary`).
pub fn run<'py>(
    py: Python<'py>,
    pipeline: &Pipeline,
    mut options: RunOptions,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let already_finished = py.detach(|| finished_before(pipeline, &options));
    let tracker = Arc::new(Tracker::default());
    if already_finished {
        tracker
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!(
                "the run in {} finished already: nothing to do",
                options.db.display()
            ));
    }
    options.observer = Some(tracker.clone());
    let stop = options.stop.clone();
    let mut interrupted = false;
    let mut progress = progress;
    let outcome = std::thread::scope(|scope| {
        let run = std::thread::Builder::new()
            .name("distill-run".into())
            .spawn_scoped(scope, || distill::run(pipeline, &options))
            .map_err(|e| {
                crate::errors::InternalError::new_err(format!("cannot start the run: {e}"))
            })?;
        loop {
            py.detach(|| {
                let start = Instant::now();
                while !run.is_finished() && start.elapsed() < POLL {
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            if let Err(e) = py.check_signals() {
                if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    if !interrupted {
                        eprintln!(
                            "stopping: finishing in-flight batches (the run resumes where it stopped)"
                        );
                    }
                    interrupted = true;
                    stop.store(true, Ordering::SeqCst);
                } else {
                    // Another signal handler raised: stop the run, then raise it.
                    stop.store(true, Ordering::SeqCst);
                    let _ = run.join();
                    return Err(e);
                }
            }
            if let Some(p) = &progress
                && let Err(e) = tracker.report(py, p)
            {
                if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    // Ctrl-C arrived while the display's Python code ran.
                    interrupted = true;
                    stop.store(true, Ordering::SeqCst);
                } else {
                    // A broken display must not break the run.
                    eprintln!("warning: the progress display failed and is turned off: {e}");
                    progress = None;
                }
            }
            if run.is_finished() {
                break;
            }
        }
        run.join().map_err(|panic| {
            crate::errors::InternalError::new_err(format!(
                "the run panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            ))
        })
    });
    if let Some(p) = &progress {
        let _ = tracker.report(py, p);
        let _ = p.call_method0("close");
    }
    let result = outcome?;
    match result {
        Ok(summary) => {
            let out = PyDict::new(py);
            out.set_item("db", options.db.clone())?;
            out.set_item("resumed", summary.resumed)?;
            out.set_item("already_finished", already_finished)?;
            let leaves = PyDict::new(py);
            for (leaf, rows) in &summary.leaves {
                leaves.set_item(leaf, rows)?;
            }
            out.set_item("leaves", leaves)?;
            match &summary.push {
                Some(push) => out.set_item("push", to_py(py, push)?)?,
                None => out.set_item("push", py.None())?,
            }
            Ok(out.into_any())
        }
        Err(distill::Error::Engine(distill_engine::Error::Interrupted)) if interrupted => {
            Err(PyKeyboardInterrupt::new_err(format!(
                "the run stopped cleanly: everything committed is kept, and running again resumes ({})",
                options.db.display()
            )))
        }
        Err(e) => Err(crate::errors::to_py(e)),
    }
}
