//! The scheduler's prefetch hook (batch mode): windows of a task with a prefetcher wait on it
//! outside the worker pool, bounded by its `max_waiting_rows`; they are processed in order
//! whatever order they are reported ready in; when only they wait, the prefetcher is flushed,
//! and a prefetcher that says so ends the run with `Error::Waiting`, which a later run resumes.

use distill_engine::step::{Lifecycle, StepKind, StepResult};
use distill_engine::task::{Prefetch, Ready, Task, TaskContext};
use distill_engine::{BuildContext, Error, Pipeline, PipelineSpec, Registry, RunOptions, StepSpec};
use distill_storage::{Row, RunReader, RunStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the test prefetcher saw and does.
#[derive(Default)]
struct Probe {
    /// Never report windows ready, and say to end the run when only they wait.
    park: AtomicBool,
    /// Most rows handed over and not yet reported ready, at any time.
    peak_waiting: AtomicU64,
    flushes: AtomicU64,
    processed: Mutex<Vec<usize>>,
}

const MAX_WAITING: u64 = 12;

/// Holds windows until flushed (or the last one comes), then reports them ready in reverse.
struct Holding {
    probe: Arc<Probe>,
    ready: Ready,
    held: Mutex<Vec<(u64, u64)>>,
}

impl Holding {
    fn release(&self) {
        if self.probe.park.load(Ordering::SeqCst) {
            return;
        }
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        for (window, _) in held.into_iter().rev() {
            (self.ready)(window, Ok(()));
        }
    }
}

impl Prefetch for Holding {
    fn window(&self, window: u64, rows: Vec<Row>, last: bool) {
        let mut held = self.held.lock().unwrap();
        held.push((window, rows.len() as u64));
        let waiting: u64 = held.iter().map(|(_, n)| n).sum();
        self.probe.peak_waiting.fetch_max(waiting, Ordering::SeqCst);
        drop(held);
        if last {
            self.release();
        }
    }
    fn flush(&self) {
        self.probe.flushes.fetch_add(1, Ordering::SeqCst);
        self.release();
    }
    fn parked(&self) -> bool {
        self.probe.park.load(Ordering::SeqCst)
    }
    fn exit_when_parked(&self) -> bool {
        true
    }
    fn max_waiting_rows(&self) -> u64 {
        MAX_WAITING
    }
    fn describe(&self) -> String {
        format!("{} windows held", self.held.lock().unwrap().len())
    }
    fn close(&self) {}
}

/// Adds `echo = n`, recording the first `n` of each batch it processes.
struct Echo {
    probe: Arc<Probe>,
}

impl Lifecycle for Echo {}

impl Task for Echo {
    fn inputs(&self) -> Vec<String> {
        vec!["n".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec!["echo".into()]
    }
    fn process(&self, rows: Vec<Row>, _ctx: &Arc<dyn TaskContext>) -> StepResult<Vec<Row>> {
        let first = rows.first().and_then(|r| r.get("n")).map(|v| v.to_string());
        self.probe
            .processed
            .lock()
            .unwrap()
            .push(first.and_then(|f| f.parse().ok()).unwrap_or(usize::MAX));
        Ok(rows
            .into_iter()
            .map(|r| {
                let n = r.get("n").cloned().unwrap_or_default();
                r.with("echo", n)
            })
            .collect())
    }
    fn prefetch(
        &self,
        _step: &str,
        _ctx: &Arc<dyn TaskContext>,
        ready: Ready,
    ) -> StepResult<Option<Box<dyn Prefetch>>> {
        Ok(Some(Box::new(Holding {
            probe: self.probe.clone(),
            ready,
            held: Mutex::new(Vec::new()),
        })))
    }
}

fn pipeline(probe: &Arc<Probe>) -> Pipeline {
    let mut registry = Registry::default();
    let p = probe.clone();
    registry.register("echo", move |_params, _ctx: &BuildContext| {
        Ok(StepKind::Task(Box::new(Echo { probe: p.clone() })))
    });
    let rows: Vec<serde_json::Value> = (0..40).map(|n| serde_json::json!({"n": n})).collect();
    let spec = PipelineSpec::new("prefetch")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", rows)
                .batch_size(4),
        )
        .step(
            StepSpec::new("echo", "echo")
                .after("load")
                .input_batch_size(5),
        );
    Pipeline::build(spec, &registry, &BuildContext::default()).unwrap()
}

fn leaf(db: &std::path::Path) -> Vec<i64> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches("echo", 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .map(|r| match r.get("echo") {
            Some(distill_storage::Value::Int(n)) => *n,
            other => panic!("echo is {other:?}"),
        })
        .collect()
}

#[test]
fn windows_reported_out_of_order_are_processed_in_order_within_the_waiting_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Arc::new(Probe::default());
    let summary = distill_engine::run(&pipeline(&probe), &RunOptions::new(&db)).unwrap();
    assert_eq!(summary.leaves, vec![("echo".to_string(), 40)]);
    assert_eq!(leaf(&db), (0..40).collect::<Vec<i64>>());
    let peak = probe.peak_waiting.load(Ordering::SeqCst);
    assert!((10..MAX_WAITING + 5).contains(&peak), "peak {peak}");
    // Held windows went out only when nothing else could move.
    assert!(probe.flushes.load(Ordering::SeqCst) >= 1);
    assert_eq!(probe.processed.lock().unwrap().len(), 8);
}

#[test]
fn a_parked_prefetcher_ends_the_run_waiting_and_a_later_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Arc::new(Probe::default());
    probe.park.store(true, Ordering::SeqCst);
    let err = distill_engine::run(&pipeline(&probe), &RunOptions::new(&db)).unwrap_err();
    assert!(matches!(err, Error::Waiting { .. }), "{err}");
    assert_eq!(err.kind(), distill_engine::ErrorKind::Waiting);
    assert!(err.to_string().contains("echo: 3 windows held"), "{err}");
    let reader = RunReader::open(&db).unwrap();
    let state = reader.snapshot().unwrap().run_state().unwrap();
    assert_eq!(state.status, RunStatus::Waiting);
    drop(reader);
    assert!(probe.processed.lock().unwrap().is_empty());
    probe.park.store(false, Ordering::SeqCst);
    let summary = distill_engine::run(&pipeline(&probe), &RunOptions::new(&db)).unwrap();
    assert!(summary.resumed);
    assert_eq!(leaf(&db), (0..40).collect::<Vec<i64>>());
}
