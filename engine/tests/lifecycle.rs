//! The step lifecycle state machine: double load, idempotent load, unload on error and panic,
//! concurrent loads from threads.

use distill_engine::step::{Lifecycle, Step, StepKind, StepResult};
use distill_engine::{Error, LoadState, StepSlot};
use distill_storage::Row;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

#[derive(Default)]
struct Counts {
    loads: AtomicUsize,
    unloads: AtomicUsize,
}

struct Probe {
    counts: Arc<Counts>,
    idempotent: bool,
    fail_load: bool,
}

impl Lifecycle for Probe {
    fn load(&mut self) -> StepResult<()> {
        self.counts.loads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(20));
        if self.fail_load {
            return Err("endpoint unreachable".into());
        }
        Ok(())
    }
    fn unload(&mut self) {
        self.counts.unloads.fetch_add(1, Ordering::SeqCst);
    }
    fn load_is_idempotent(&self) -> bool {
        self.idempotent
    }
}

impl Step for Probe {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn process(&self, _rows: Vec<Row>) -> StepResult<Vec<Row>> {
        panic!("boom")
    }
}

fn slot(idempotent: bool, fail_load: bool) -> (Arc<StepSlot>, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let probe = Probe {
        counts: counts.clone(),
        idempotent,
        fail_load,
    };
    (
        Arc::new(StepSlot::new("probe", StepKind::Step(Box::new(probe)))),
        counts,
    )
}

#[test]
fn second_load_is_a_typed_error() {
    let (slot, counts) = slot(false, false);
    let guard = slot.load().unwrap();
    assert_eq!(slot.state(), LoadState::Loaded);
    let err = slot.load().err().unwrap();
    assert!(
        matches!(err, Error::AlreadyLoaded { ref step } if step == "probe"),
        "{err:?}"
    );
    assert_eq!(counts.loads.load(Ordering::SeqCst), 1);
    drop(guard);
    assert_eq!(slot.state(), LoadState::Unloaded);
    assert_eq!(counts.unloads.load(Ordering::SeqCst), 1);
    // Loadable again after unloading.
    let _again = slot.load().unwrap();
}

#[test]
fn idempotent_second_load_is_a_no_op() {
    let (slot, counts) = slot(true, false);
    let first = slot.load().unwrap();
    let second = slot.load().unwrap();
    assert_eq!(counts.loads.load(Ordering::SeqCst), 1);
    drop(second);
    assert_eq!(
        slot.state(),
        LoadState::Loaded,
        "only the first guard unloads"
    );
    drop(first);
    assert_eq!(counts.unloads.load(Ordering::SeqCst), 1);
}

#[test]
fn failed_load_leaves_the_step_unloaded_with_a_clear_error() {
    let (slot, _) = slot(false, true);
    let err = slot.load().err().unwrap();
    assert!(err.to_string().contains("probe") && err.to_string().contains("unreachable"));
    assert_eq!(slot.state(), LoadState::Unloaded);
}

#[test]
fn guard_unloads_when_processing_panics() {
    let (slot, counts) = slot(false, false);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let guard = slot.load().unwrap();
        let step = guard.slot().read();
        if let StepKind::Step(s) = &*step {
            let _ = s.process(Vec::new());
        }
    }));
    assert!(result.is_err());
    assert_eq!(slot.state(), LoadState::Unloaded);
    assert_eq!(counts.unloads.load(Ordering::SeqCst), 1);
}

#[test]
fn concurrent_loads_load_once() {
    for idempotent in [false, true] {
        let (slot, counts) = slot(idempotent, false);
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let slot = slot.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    slot.load().map(std::mem::forget).map_err(|e| e.to_string())
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            counts.loads.load(Ordering::SeqCst),
            1,
            "idempotent={idempotent}"
        );
        if idempotent {
            assert_eq!(ok, 8, "every caller sees the step loaded: {results:?}");
        } else {
            assert_eq!(ok, 1, "one load wins, the others are told: {results:?}");
            assert!(results.iter().flatten().count() == 1);
            assert!(
                results
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .all(|e| e.contains("already loaded"))
            );
        }
        assert_eq!(slot.state(), LoadState::Loaded);
    }
}

/// A step that passes rows on and counts its loads: a step built (and loaded) outside a run.
struct Passing {
    counts: Arc<Counts>,
}

impl Lifecycle for Passing {
    fn load(&mut self) -> StepResult<()> {
        self.counts.loads.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn unload(&mut self) {
        self.counts.unloads.fetch_add(1, Ordering::SeqCst);
    }
    fn code_version(&self) -> Option<String> {
        Some("passing:1".into())
    }
}

impl Step for Passing {
    fn inputs(&self) -> Vec<String> {
        vec!["x".into()]
    }
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        Ok(rows)
    }
}

fn prebuilt_pipeline(slot: &Arc<StepSlot>) -> distill_engine::Pipeline {
    use distill_engine::{BuildContext, Pipeline, PipelineSpec, Registry, StepSpec};
    let spec = PipelineSpec::new("prebuilt")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", serde_json::json!([{"x": 1}, {"x": 2}, {"x": 3}])),
        )
        .step(StepSpec::new("pass", "py:tests:Passing").after("load"));
    let prebuilt = std::collections::HashMap::from([("pass".to_string(), slot.clone())]);
    Pipeline::build_with(
        spec,
        &Registry::default(),
        &BuildContext::default(),
        &prebuilt,
    )
    .unwrap()
}

#[test]
fn a_run_uses_a_step_loaded_by_hand_and_leaves_it_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let counts = Arc::new(Counts::default());
    let step = Passing {
        counts: counts.clone(),
    };
    // Its own name until a pipeline names it: the run records states under the step's name.
    let slot = Arc::new(StepSlot::new("Passing", StepKind::Step(Box::new(step))));
    let pipeline = prebuilt_pipeline(&slot);
    let hand = slot.load().unwrap();
    let options = distill_engine::RunOptions::new(dir.path().join("run.redb"));
    let summary = distill_engine::run(&pipeline, &options).unwrap();
    assert_eq!(summary.leaves, vec![("pass".to_string(), 3)]);
    assert_eq!(counts.loads.load(Ordering::SeqCst), 1, "not loaded again");
    assert_eq!(counts.unloads.load(Ordering::SeqCst), 0);
    assert_eq!(slot.state(), LoadState::Loaded, "its owner unloads it");
    let status = distill_engine::status(&options.db).unwrap();
    let pass = status.steps.iter().find(|s| s.step == "pass").unwrap();
    assert!(pass.done);
    assert!(
        status.steps.iter().all(|s| s.step != "Passing"),
        "states are recorded under the pipeline's name of the step"
    );
    drop(hand);
    assert_eq!(counts.unloads.load(Ordering::SeqCst), 1);

    // Not loaded by hand: the run loads it and unloads it when its stage ends.
    let dir = tempfile::tempdir().unwrap();
    let options = distill_engine::RunOptions::new(dir.path().join("run.redb"));
    distill_engine::run(&prebuilt_pipeline(&slot), &options).unwrap();
    assert_eq!(counts.loads.load(Ordering::SeqCst), 2);
    assert_eq!(counts.unloads.load(Ordering::SeqCst), 2);
    assert_eq!(slot.state(), LoadState::Unloaded);
}

#[test]
fn a_code_version_is_part_of_the_signature() {
    let counts = Arc::new(Counts::default());
    let slot = Arc::new(StepSlot::new(
        "Passing",
        StepKind::Step(Box::new(Passing { counts })),
    ));
    let with_code = prebuilt_pipeline(&slot);
    let spec = with_code.spec().clone();
    let plain = distill_engine::step_signatures(&spec, with_code.registry());
    assert_eq!(plain["load"], with_code.step_signatures()["load"]);
    assert_ne!(plain["pass"], with_code.step_signatures()["pass"]);
}
