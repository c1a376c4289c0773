//! Test steps that record what the engine does to them.
#![allow(dead_code)]

use distill_engine::step::{Generator, GlobalStep, Lifecycle, Step, StepKind, StepResult};
use distill_engine::{BuildContext, Registry};
use distill_storage::{Row, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A shared journal of lifecycle and processing events, in order.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn position(&self, entry: &str) -> usize {
        self.entries()
            .iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("'{entry}' not in journal {:?}", self.entries()))
    }
}

/// Generates rows {n: i} for i in 0..count.
pub struct Numbers {
    pub name: String,
    pub count: u64,
    pub journal: Journal,
}

impl Lifecycle for Numbers {
    fn load(&mut self) -> StepResult<()> {
        self.journal.push(format!("load {}", self.name));
        Ok(())
    }
    fn unload(&mut self) {
        self.journal.push(format!("unload {}", self.name));
    }
}

impl Generator for Numbers {
    fn outputs(&self) -> Vec<String> {
        vec!["n".into()]
    }
    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let end = (offset + count as u64).min(self.count);
        let rows = (offset..end)
            .map(|i| Row::new().with("n", i as i64))
            .collect();
        Ok((rows, end >= self.count))
    }
}

/// Adds `out = n * 2`; counts calls; can fail on a given call number; records its batches.
pub struct Double {
    pub name: String,
    pub journal: Journal,
    pub calls: Arc<AtomicUsize>,
    /// Fail when the call counter reaches this value (1-based).
    pub fail_on_call: Option<usize>,
    pub sizes: Arc<Mutex<Vec<usize>>>,
}

impl Lifecycle for Double {
    fn load(&mut self) -> StepResult<()> {
        self.journal.push(format!("load {}", self.name));
        Ok(())
    }
    fn unload(&mut self) {
        self.journal.push(format!("unload {}", self.name));
    }
}

impl Step for Double {
    fn inputs(&self) -> Vec<String> {
        vec!["n".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec!["out".into()]
    }
    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.journal.push(format!("process {}", self.name));
        self.sizes.lock().unwrap().push(rows.len());
        if self.fail_on_call == Some(call) {
            return Err(format!("planned failure on call {call}").into());
        }
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let n = r.get("n").and_then(Value::as_int).unwrap_or(-1);
                r.insert("out", n * 2);
                r
            })
            .collect())
    }
    fn process_parts(&self, parts: Vec<Vec<Row>>) -> StepResult<Vec<Row>> {
        self.sizes
            .lock()
            .unwrap()
            .extend(parts.iter().map(|p| 1000 + p.len()));
        self.process(parts.into_iter().flatten().collect())
    }
}

/// Global: reverses the order of all rows.
pub struct Reverse {
    pub journal: Journal,
}

impl Lifecycle for Reverse {
    fn load(&mut self) -> StepResult<()> {
        self.journal.push("load reverse".into());
        Ok(())
    }
    fn unload(&mut self) {
        self.journal.push("unload reverse".into());
    }
}

impl GlobalStep for Reverse {
    fn inputs(&self) -> Vec<String> {
        vec!["n".into()]
    }
    fn process_all(&self, mut rows: Vec<Row>) -> StepResult<Vec<Row>> {
        self.journal.push("process reverse".into());
        rows.reverse();
        Ok(rows)
    }
}

/// Shared handles the test steps report to.
#[derive(Clone, Default)]
pub struct Probe {
    pub journal: Journal,
    pub calls: Arc<AtomicUsize>,
    pub sizes: Arc<Mutex<Vec<usize>>>,
    pub fail_on_call: Arc<Mutex<Option<usize>>>,
}

/// A registry with the built-ins plus `numbers` (param count), `double` and `reverse`.
pub fn registry(probe: &Probe) -> Registry {
    let mut registry = Registry::default();
    let p = probe.clone();
    registry.register("numbers", move |params, _ctx: &BuildContext| {
        let count = params
            .get("count")
            .and_then(|c| c.as_u64())
            .ok_or("missing field `count`")?;
        let name = params
            .get("label")
            .and_then(|c| c.as_str())
            .unwrap_or("numbers")
            .to_owned();
        Ok(StepKind::Generator(Box::new(Numbers {
            name,
            count,
            journal: p.journal.clone(),
        })))
    });
    let p = probe.clone();
    registry.register("double", move |params, _ctx: &BuildContext| {
        let name = params
            .get("label")
            .and_then(|c| c.as_str())
            .unwrap_or("double")
            .to_owned();
        Ok(StepKind::Step(Box::new(Double {
            name,
            journal: p.journal.clone(),
            calls: p.calls.clone(),
            fail_on_call: *p.fail_on_call.lock().unwrap(),
            sizes: p.sizes.clone(),
        })))
    });
    let p = probe.clone();
    registry.register("reverse", move |_params, _ctx: &BuildContext| {
        Ok(StepKind::Global(Box::new(Reverse {
            journal: p.journal.clone(),
        })))
    });
    registry
}
