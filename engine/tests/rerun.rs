//! A changed step re-runs only what it needs (issue 18): a predecessor run again because its
//! consumed batches were reclaimed (`StepAction::DropReclaimed`) gives its rows again at the
//! same offsets, so its other consumers, unchanged, keep their batches and their cursors on
//! it. Before, they were dropped and recomputed with it (a finished sibling leaf too).

mod support;

use distill_engine::step::{Generator, Lifecycle, StepKind, StepResult};
use distill_engine::{
    BuildContext, Error, ErrorKind, Pipeline, PipelineSpec, Registry, RunOptions, StepAction,
    StepSpec, run,
};
use distill_storage::{Row, RunReader, RunStatus, StepState, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use support::{Probe, registry};

/// Rows `{n: i}` for i below a count shared with the test, which may change it between runs
/// (a step whose output is not the same from run to run: its signature does not change).
struct Varying {
    count: Arc<AtomicU64>,
}

impl Lifecycle for Varying {}

impl Generator for Varying {
    fn outputs(&self) -> Vec<String> {
        vec!["n".into()]
    }
    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let total = self.count.load(Ordering::SeqCst);
        let end = (offset + count as u64).min(total);
        let rows = (offset..end)
            .map(|i| Row::new().with("n", i as i64))
            .collect();
        Ok((rows, end >= total))
    }
}

fn registry_with(probe: &Probe, varying: &Arc<AtomicU64>) -> Registry {
    let mut registry = registry(probe);
    let count = varying.clone();
    registry.register("varying", move |_params, _ctx: &BuildContext| {
        Ok(StepKind::Generator(Box::new(Varying {
            count: count.clone(),
        })))
    });
    registry
}

fn build(spec: PipelineSpec, probe: &Probe) -> Pipeline {
    Pipeline::build(spec, &registry(probe), &BuildContext::default()).unwrap()
}

fn rows(db: &Path, step: &str) -> Vec<Row> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches(step, 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect()
}

/// Batch entries in the log of `db`, per step: a batch committed twice counts twice.
fn batch_events(db: &Path) -> BTreeMap<String, usize> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    let mut counts = BTreeMap::new();
    for entry in snap.log_from(0).unwrap() {
        if let distill_storage::Event::Batch { step, .. } = entry.unwrap().event {
            *counts.entry(step).or_default() += 1;
        }
    }
    counts
}

fn cursor(db: &Path, name: &str) -> u64 {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.cursor(name).unwrap().unwrap_or(0)
}

fn reclaimed(db: &Path, step: &str) -> (u64, u64) {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.reclaimed(step).unwrap()
}

fn processed(probe: &Probe, label: &str) -> usize {
    let entry = format!("process {label}");
    probe
        .journal
        .entries()
        .iter()
        .filter(|e| **e == entry)
        .count()
}

fn actions(plan: &distill_engine::ResumePlan) -> Vec<(String, StepAction)> {
    plan.steps
        .iter()
        .map(|s| (s.step.clone(), s.action.clone()))
        .collect()
}

/// One stage: `load` (a generator, `ROWS` rows in batches of 5) -> `a` (`double`, windows of
/// 4), `load` -> `b` (`format_text` with `template`, windows of 3). `load` is consumed within
/// its stage, so its batches are reclaimed.
const ROWS: u64 = 60;

fn siblings(load: &str, template: &str) -> PipelineSpec {
    PipelineSpec::new("siblings")
        .step(
            StepSpec::new("load", load)
                .param("count", ROWS)
                .batch_size(5),
        )
        .step(
            StepSpec::new("a", "double")
                .after("load")
                .param("label", "a")
                .input_batch_size(4),
        )
        .step(
            StepSpec::new("b", "format_text")
                .after("load")
                .input_batch_size(3)
                .param("template", template)
                .param("output", "t"),
        )
}

/// A fresh run of `spec` in a directory of its own: each leaf's rows.
fn fresh(spec: PipelineSpec, leaves: &[&str]) -> Vec<Vec<Row>> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.redb");
    run(&build(spec, &Probe::default()), &RunOptions::new(&db)).unwrap();
    leaves.iter().map(|leaf| rows(&db, leaf)).collect()
}

#[test]
fn a_finished_sibling_leaf_keeps_its_batches_when_its_loader_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    run(
        &build(siblings("numbers", "x{{ n }}"), &Probe::default()),
        &RunOptions::new(&db),
    )
    .unwrap();
    assert_eq!(
        reclaimed(&db, "load"),
        (12, ROWS),
        "load's batches are gone"
    );
    let a_before = rows(&db, "a");
    let events_before = batch_events(&db);

    let probe = Probe::default();
    let edited = build(siblings("numbers", "y{{ n }}"), &probe);
    let plan = distill_engine::plan(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("load".into(), StepAction::DropReclaimed("b".into())),
            ("a".into(), StepAction::Keep),
            ("b".into(), StepAction::DropChanged),
        ]
    );
    assert_eq!(
        plan.steps[0].to_string(),
        "load: 'b' reads it again and its consumed batches were reclaimed, 12 batches dropped \
         and made again (same rows); its other consumers keep theirs"
    );
    assert_eq!(plan.steps[1].to_string(), "a: kept (15 batches)");
    let summary = run(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        summary.leaves,
        vec![("a".into(), ROWS), ("b".into(), ROWS)],
        "{summary:?}"
    );

    // `a` was not processed again: no call, no new batch, the same rows.
    assert_eq!(processed(&probe, "a"), 0, "{:?}", probe.journal.entries());
    let events = batch_events(&db);
    assert_eq!(events["a"], events_before["a"]);
    assert_eq!(events["load"], 2 * events_before["load"], "load ran again");
    assert_eq!(rows(&db, "a"), a_before);
    assert_eq!(cursor(&db, "a<-load"), ROWS);
    let reader = RunReader::open(&db).unwrap();
    let snap = reader.snapshot().unwrap();
    let a = snap.step("a").unwrap().unwrap();
    assert!(a.done && a.state == StepState::Finished, "{a:?}");
    drop((snap, reader));
    // The regenerated batches are reclaimed once `b` is past them (`a` was already).
    assert_eq!(reclaimed(&db, "load"), (12, ROWS));

    let expected = fresh(siblings("numbers", "y{{ n }}"), &["a", "b"]);
    assert_eq!(vec![rows(&db, "a"), rows(&db, "b")], expected);

    // A new leaf after `load`: `load` runs again for it, both siblings are kept.
    let with_c = || {
        siblings("numbers", "y{{ n }}").step(
            StepSpec::new("c", "format_text")
                .after("load")
                .input_batch_size(9)
                .param("template", "c{{ n }}")
                .param("output", "t"),
        )
    };
    let b_events = batch_events(&db)["b"];
    let probe = Probe::default();
    let added = build(with_c(), &probe);
    let plan = distill_engine::plan(&added, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("load".into(), StepAction::DropReclaimed("c".into())),
            ("a".into(), StepAction::Keep),
            ("b".into(), StepAction::Keep),
            ("c".into(), StepAction::New),
        ]
    );
    run(&added, &RunOptions::new(&db)).unwrap();
    assert_eq!(processed(&probe, "a"), 0);
    assert_eq!(batch_events(&db)["b"], b_events);
    let expected = fresh(with_c(), &["a", "b", "c"]);
    assert_eq!(
        vec![rows(&db, "a"), rows(&db, "b"), rows(&db, "c")],
        expected
    );
}

#[test]
fn a_sibling_stopped_half_way_reads_on_from_its_cursor_when_its_loader_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    // `a` fails on its 7th window: 6 windows (24 rows) committed, `b` and `load` go on
    // as far as the stage lets them before the run ends.
    let failing = Probe::default();
    *failing.fail_on_call.lock().unwrap() = Some(7);
    let err = run(
        &build(siblings("numbers", "x{{ n }}"), &failing),
        &RunOptions::new(&db),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::StepFailed { ref step, .. } if step == "a"),
        "{err}"
    );
    let a_cursor = cursor(&db, "a<-load");
    assert_eq!(a_cursor, 24);
    let (gone_batches, gone_rows) = reclaimed(&db, "load");
    assert!(
        gone_batches > 0 && gone_rows <= a_cursor,
        "load reclaimed up to where both consumers were: {gone_rows}"
    );
    let a_before = rows(&db, "a");
    assert_eq!(a_before.len(), 24);

    let probe = Probe::default();
    let edited = build(siblings("numbers", "y{{ n }}"), &probe);
    let plan = distill_engine::plan(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("load".into(), StepAction::DropReclaimed("b".into())),
            ("a".into(), StepAction::Keep),
            ("b".into(), StepAction::DropChanged),
        ]
    );
    run(&edited, &RunOptions::new(&db)).unwrap();
    // `a` processed only the windows after its cursor: rows below 24 came again from `load`
    // and were skipped, none twice, none left out.
    assert_eq!(
        processed(&probe, "a"),
        15 - 6,
        "{:?}",
        probe.journal.entries()
    );
    let a = rows(&db, "a");
    assert_eq!(a[..24], a_before[..]);
    let expected = fresh(siblings("numbers", "y{{ n }}"), &["a", "b"]);
    assert_eq!(vec![a, rows(&db, "b")], expected);
    assert_eq!(reclaimed(&db, "load"), (12, ROWS));
    assert_eq!(
        RunReader::open(&db)
            .unwrap()
            .snapshot()
            .unwrap()
            .run_state()
            .unwrap()
            .status,
        RunStatus::Finished
    );
}

/// `load` -> `m` (`double`, label m) -> `a` (`double`, label a) and `m` -> `b`
/// (`format_text`): `load` and `m` are both consumed within the stage.
fn chain(template: &str) -> PipelineSpec {
    PipelineSpec::new("chain")
        .step(
            StepSpec::new("load", "numbers")
                .param("count", ROWS)
                .batch_size(6),
        )
        .step(
            StepSpec::new("m", "double")
                .after("load")
                .param("label", "m")
                .input_batch_size(5),
        )
        .step(
            StepSpec::new("a", "double")
                .after("m")
                .param("label", "a")
                .input_batch_size(4)
                .output_mapping("out", "out2"),
        )
        .step(
            StepSpec::new("b", "format_text")
                .after("m")
                .input_batch_size(7)
                .param("template", template)
                .param("output", "t"),
        )
}

#[test]
fn in_a_chain_every_step_before_a_changed_leaf_runs_again_and_the_sibling_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    run(
        &build(chain("x{{ out }}"), &Probe::default()),
        &RunOptions::new(&db),
    )
    .unwrap();
    assert_eq!(reclaimed(&db, "load"), (10, ROWS));
    assert_eq!(reclaimed(&db, "m"), (12, ROWS));
    let a_before = rows(&db, "a");
    let events_before = batch_events(&db);

    let probe = Probe::default();
    let edited = build(chain("y{{ out }}"), &probe);
    let plan = distill_engine::plan(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("load".into(), StepAction::DropReclaimed("m".into())),
            ("m".into(), StepAction::DropReclaimed("b".into())),
            ("a".into(), StepAction::Keep),
            ("b".into(), StepAction::DropChanged),
        ]
    );
    run(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(processed(&probe, "m"), 12, "m ran again");
    assert_eq!(processed(&probe, "a"), 0, "{:?}", probe.journal.entries());
    let events = batch_events(&db);
    assert_eq!(events["a"], events_before["a"]);
    assert_eq!(rows(&db, "a"), a_before);
    assert_eq!(reclaimed(&db, "load"), (10, ROWS));
    assert_eq!(reclaimed(&db, "m"), (12, ROWS));
    let expected = fresh(chain("y{{ out }}"), &["a", "b"]);
    assert_eq!(vec![rows(&db, "a"), rows(&db, "b")], expected);
}

#[test]
fn a_step_that_gives_other_rows_when_it_runs_again_is_an_error_naming_it() {
    for (second, fewer) in [(ROWS - 7, true), (ROWS + 7, false)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("run.redb");
        let count = Arc::new(AtomicU64::new(ROWS));
        let probe = Probe::default();
        let build = |template: &str| {
            Pipeline::build(
                siblings("varying", template),
                &registry_with(&probe, &count),
                &BuildContext::default(),
            )
            .unwrap()
        };
        run(&build("x{{ n }}"), &RunOptions::new(&db)).unwrap();
        count.store(second, Ordering::SeqCst);
        let err = run(&build("y{{ n }}"), &RunOptions::new(&db)).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Regenerated { step, consumer, read, rows }
                    if step == "load" && consumer == "a" && *read == ROWS && *rows == second
            ),
            "{second}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Other);
        assert!(err.to_string().contains("--new"), "{err}");
        // Running it again does not mend it (nor take it for finished): the same error.
        let again = run(&build("y{{ n }}"), &RunOptions::new(&db)).unwrap_err();
        assert_eq!(again.to_string(), err.to_string());
        let reader = RunReader::open(&db).unwrap();
        let snap = reader.snapshot().unwrap();
        assert_eq!(snap.run_state().unwrap().status, RunStatus::Failed);
        let load = snap.step("load").unwrap().unwrap();
        assert_eq!(load.state, StepState::Failed, "fewer: {fewer}");
        // `a` kept what it had: its rows are the first run's.
        drop((snap, reader));
        let a: Vec<i64> = rows(&db, "a")
            .iter()
            .map(|r| r.get("n").and_then(Value::as_int).unwrap())
            .collect();
        assert_eq!(a, (0..ROWS as i64).collect::<Vec<_>>());
    }
}
