//! Reclaiming consumed batches never changes a pipeline's output: random DAG shapes (one or
//! two generators, steps with one or two predecessors, global steps cutting stages) and batch
//! sizes, run with reclamation (stopped part way and resumed) and with `keep_intermediate`,
//! give the same leaves; and every batch a consumer still needs is in the log at each stop.
//! A leaf changed between sessions is recomputed from what is still kept (steps whose
//! consumed batches were reclaimed run again) and gives a fresh run's rows, while the
//! unchanged leaves keep their batches and are never recomputed.

use distill_engine::{
    BuildContext, Observer, Pipeline, PipelineSpec, Registry, RunEvent, RunOptions, StepAction,
    StepSpec, run,
};
use distill_storage::{Row, RunReader};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One step of a random pipeline, after the generators.
#[derive(Debug, Clone)]
enum Shape {
    /// `format_text` after one or two earlier steps (indices modulo the steps before it).
    Format { preds: Vec<usize>, batch: usize },
    /// `dedup` (global: a new stage) after an earlier step.
    Dedup { pred: usize },
}

#[derive(Debug, Clone)]
struct Dag {
    /// Rows and batch size of each generator.
    generators: Vec<(usize, usize)>,
    steps: Vec<Shape>,
}

fn dag() -> impl Strategy<Value = Dag> {
    let generator = (1usize..40, 1usize..9);
    let shape = prop_oneof![
        4 => (proptest::collection::vec(0usize..100, 1..3), 1usize..9)
            .prop_map(|(preds, batch)| Shape::Format { preds, batch }),
        1 => (0usize..100).prop_map(|pred| Shape::Dedup { pred }),
    ];
    (
        proptest::collection::vec(generator, 1..3),
        proptest::collection::vec(shape, 1..6),
    )
        .prop_map(|(generators, steps)| Dag { generators, steps })
}

fn spec(dag: &Dag, keep: bool) -> PipelineSpec {
    spec_changed(dag, keep, None)
}

/// The pipeline of `dag`, with the template of step `s{changed}` (a `format_text`) edited.
fn spec_changed(dag: &Dag, keep: bool, changed: Option<usize>) -> PipelineSpec {
    let mut spec = PipelineSpec::new("random");
    spec.keep_intermediate = keep;
    let mut names = Vec::new();
    for (g, &(rows, batch)) in dag.generators.iter().enumerate() {
        let rows: Vec<serde_json::Value> = (0..rows)
            .map(|i| serde_json::json!({"id": i, "text": format!("g{g}r{}", i % 7)}))
            .collect();
        let name = format!("gen{g}");
        spec = spec.step(
            StepSpec::new(&name, "inline")
                .param("rows", rows)
                .batch_size(batch),
        );
        names.push(name);
    }
    for (i, shape) in dag.steps.iter().enumerate() {
        let name = format!("s{i}");
        let step = match shape {
            Shape::Format { preds, batch } => {
                let edit = if changed == Some(i) { "!" } else { "" };
                let mut step = StepSpec::new(&name, "format_text")
                    .input_batch_size(*batch)
                    .param("template", format!("{{{{ text }}}}.{i}{edit}"))
                    .param("output", "text");
                let mut seen = Vec::new();
                for p in preds {
                    let pred = names[p % names.len()].clone();
                    if !seen.contains(&pred) {
                        step = step.after(&pred);
                        seen.push(pred);
                    }
                }
                step
            }
            Shape::Dedup { pred } => StepSpec::new(&name, "dedup")
                .after(&names[pred % names.len()])
                .param("columns", ["text"]),
        };
        spec = spec.step(step);
        names.push(name);
    }
    spec
}

fn build(spec: PipelineSpec) -> Pipeline {
    Pipeline::build(spec, &Registry::default(), &BuildContext::default()).unwrap()
}

fn leaves_of(db: &std::path::Path, pipeline: &Pipeline) -> Vec<(String, Vec<Row>)> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    pipeline
        .leaves()
        .iter()
        .map(|&i| {
            let name = pipeline.nodes()[i].name().to_owned();
            let rows = snap
                .batches(&name, 0)
                .unwrap()
                .flat_map(|b| b.unwrap().rows)
                .collect();
            (name, rows)
        })
        .collect()
}

/// Every step's batches from the first not reclaimed to the last committed are in the log,
/// and no consumer's cursor is behind what was reclaimed.
fn check_log(db: &std::path::Path, pipeline: &Pipeline) -> Result<(), TestCaseError> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    for node in pipeline.nodes() {
        let name = node.name();
        let (gone, gone_rows) = snap.reclaimed(name).unwrap();
        let committed = snap.step(name).unwrap().map_or(0, |r| r.batches);
        let seqs: Vec<u64> = snap
            .batches(name, 0)
            .unwrap()
            .map(|b| b.unwrap().seq)
            .collect();
        prop_assert_eq!(seqs, (gone..committed).collect::<Vec<_>>(), "{}", name);
        for &c in &node.succs {
            let cursor = format!("{}<-{name}", pipeline.nodes()[c].name());
            let at = snap.cursor(&cursor).unwrap().unwrap_or(0);
            prop_assert!(at >= gone_rows, "{cursor} at {at}, {gone_rows} reclaimed");
        }
    }
    Ok(())
}

/// Batch entries in the log, per step: a batch committed again (its step dropped and run
/// again) counts twice.
fn batch_events(db: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for entry in snap.log_from(0).unwrap() {
        if let distill_storage::Event::Batch { step, .. } = entry.unwrap().event {
            *counts.entry(step).or_default() += 1;
        }
    }
    counts
}

/// Runs `pipeline` on `db` once per stop (each session stopped after that many batches, or
/// finished before), checking the log after each.
fn sessions(
    db: &std::path::Path,
    pipeline: impl Fn() -> Pipeline,
    stops: &[u64],
) -> Result<(), TestCaseError> {
    for &after in stops {
        let pipeline = pipeline();
        let mut options = RunOptions::new(db);
        options.workers = 2;
        options.observer = Some(Arc::new(StopAfter {
            stop: options.stop.clone(),
            after,
            seen: AtomicU64::new(0),
        }));
        // Stopped (an error) or finished before the stop took effect.
        let _ = run(&pipeline, &options);
        check_log(db, &pipeline)?;
    }
    Ok(())
}

/// Sets the stop flag once `after` batches were committed.
struct StopAfter {
    stop: Arc<AtomicBool>,
    after: u64,
    seen: AtomicU64,
}

impl Observer for StopAfter {
    fn on_event(&self, event: &RunEvent) {
        if let RunEvent::BatchCommitted { .. } = event
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.after
        {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_give_the_same_leaves_with_and_without_reclamation(
        dag in dag(),
        stops in proptest::collection::vec(1u64..12, 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let kept_db = dir.path().join("kept.redb");
        let kept = build(spec(&dag, true));
        run(&kept, &RunOptions::new(&kept_db)).unwrap();
        let expected = leaves_of(&kept_db, &kept);

        let db = dir.path().join("reclaimed.redb");
        sessions(&db, || build(spec(&dag, false)), &stops)?;
        let pipeline = build(spec(&dag, false));
        run(&pipeline, &RunOptions::new(&db)).unwrap();
        check_log(&db, &pipeline)?;
        prop_assert_eq!(leaves_of(&db, &pipeline), expected);
        // At the end, a step consumed only within its stage has no batch left; the others
        // (leaves, stage boundaries) have them all.
        let reader = RunReader::open(&db).unwrap();
        let snap = reader.snapshot().unwrap();
        let nodes = pipeline.nodes();
        for node in nodes {
            let in_stage = !node.succs.is_empty()
                && node
                    .succs
                    .iter()
                    .all(|&c| nodes[c].stage == node.stage && !nodes[c].is_global());
            let batches = snap.step(node.name()).unwrap().unwrap().batches;
            let gone = snap.reclaimed(node.name()).unwrap().0;
            prop_assert_eq!(gone, if in_stage { batches } else { 0 }, "{}", node.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_changed_leaf_gives_a_fresh_runs_rows_and_the_other_leaves_keep_their_batches(
        dag in dag(),
        pick in 0usize..100,
        before in proptest::collection::vec(1u64..12, 1..3),
        finish_first in any::<bool>(),
        after in proptest::collection::vec(1u64..12, 0..3),
    ) {
        // The leaf to change: a `format_text` step nothing comes after.
        let original = build(spec(&dag, false));
        let leaves: Vec<usize> = original
            .leaves()
            .into_iter()
            .filter_map(|i| {
                let name = original.nodes()[i].name();
                let s: usize = name.strip_prefix('s')?.parse().ok()?;
                matches!(dag.steps[s], Shape::Format { .. }).then_some(s)
            })
            .collect();
        prop_assume!(!leaves.is_empty());
        let changed = leaves[pick % leaves.len()];
        let changed_name = format!("s{changed}");

        let dir = tempfile::tempdir().unwrap();
        let fresh_db = dir.path().join("fresh.redb");
        let fresh = build(spec_changed(&dag, false, Some(changed)));
        run(&fresh, &RunOptions::new(&fresh_db)).unwrap();
        let expected = leaves_of(&fresh_db, &fresh);

        // The original pipeline, stopped part way (or finished), then the changed one.
        let db = dir.path().join("run.redb");
        sessions(&db, || build(spec(&dag, false)), &before)?;
        if finish_first {
            run(&original, &RunOptions::new(&db)).unwrap();
        }
        let kept_rows = leaves_of(&db, &original);
        let changed_pipeline = || build(spec_changed(&dag, false, Some(changed)));
        let plan = distill_engine::plan(&changed_pipeline(), &RunOptions::new(&db)).unwrap();
        for step in &plan.steps {
            let is_leaf = kept_rows.iter().any(|(leaf, _)| *leaf == step.step);
            if step.step == changed_name {
                prop_assert_eq!(&step.action, &StepAction::DropChanged);
            } else if is_leaf {
                prop_assert_eq!(&step.action, &StepAction::Keep, "{}", step);
            } else {
                // Only steps made again (same rows) are dropped besides the changed leaf.
                prop_assert!(
                    matches!(step.action, StepAction::Keep | StepAction::DropReclaimed(_)),
                    "{}",
                    step
                );
            }
        }
        sessions(&db, changed_pipeline, &after)?;
        let pipeline = changed_pipeline();
        run(&pipeline, &RunOptions::new(&db)).unwrap();
        check_log(&db, &pipeline)?;
        prop_assert_eq!(leaves_of(&db, &pipeline), expected);
        // The unchanged leaves went on from the batches they had: those are still there, and
        // no batch of theirs was ever committed twice.
        let events = batch_events(&db);
        let reader = RunReader::open(&db).unwrap();
        let snap = reader.snapshot().unwrap();
        let now = leaves_of(&db, &pipeline);
        for ((leaf, before), (_, after)) in kept_rows.iter().zip(&now) {
            if *leaf == changed_name {
                continue;
            }
            prop_assert!(after.starts_with(before), "{} lost rows it had", leaf);
            let batches = snap.step(leaf).unwrap().map_or(0, |r| r.batches);
            prop_assert_eq!(
                events.get(leaf).copied().unwrap_or(0),
                batches,
                "{} recomputed",
                leaf
            );
        }
    }
}
