//! Runs pipelines of test steps on real run databases: batching, stages, resume, errors.

mod support;

use distill_engine::{BuildContext, Error, Pipeline, PipelineSpec, RunOptions, StepSpec, run};
use distill_storage::{RunReader, RunStatus, StepState, Value};
use std::sync::atomic::Ordering;
use support::{Probe, registry};

fn build(spec: PipelineSpec, probe: &Probe) -> Pipeline {
    Pipeline::build(spec, &registry(probe), &BuildContext::default()).unwrap()
}

fn leaf_rows(db: &std::path::Path, step: &str) -> Vec<distill_storage::Row> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches(step, 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect()
}

fn batch_sizes(db: &std::path::Path, step: &str) -> Vec<(usize, bool)> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches(step, 0)
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            (b.rows.len(), b.last)
        })
        .collect()
}

/// A generator then `double`, keeping every batch (these tests look at `gen`'s).
fn chain(count: u64, gen_batch: usize, step_batch: usize) -> PipelineSpec {
    let mut spec = PipelineSpec::new("chain");
    spec.keep_intermediate = true;
    spec.step(
        StepSpec::new("gen", "numbers")
            .param("count", count)
            .batch_size(gen_batch),
    )
    .step(
        StepSpec::new("double", "double")
            .after("gen")
            .input_batch_size(step_batch),
    )
}

#[test]
fn windows_follow_input_batch_size_not_upstream_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Probe::default();
    let summary = run(&build(chain(23, 5, 7), &probe), &RunOptions::new(&db)).unwrap();
    assert_eq!(summary.leaves, vec![("double".to_string(), 23)]);
    assert_eq!(
        batch_sizes(&db, "gen"),
        vec![(5, false), (5, false), (5, false), (5, false), (3, true)]
    );
    assert_eq!(
        batch_sizes(&db, "double"),
        vec![(7, false), (7, false), (7, false), (2, true)]
    );
    let outs: Vec<i64> = leaf_rows(&db, "double")
        .iter()
        .map(|r| r.get("out").and_then(Value::as_int).unwrap())
        .collect();
    assert_eq!(outs, (0..23).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn exact_multiple_ends_without_an_empty_batch_and_empty_input_ends_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    run(
        &build(chain(10, 5, 5), &Probe::default()),
        &RunOptions::new(&db),
    )
    .unwrap();
    assert_eq!(batch_sizes(&db, "double"), vec![(5, false), (5, true)]);
    let db = dir.path().join("empty.redb");
    run(
        &build(chain(0, 5, 5), &Probe::default()),
        &RunOptions::new(&db),
    )
    .unwrap();
    assert_eq!(batch_sizes(&db, "gen"), vec![(0, true)]);
    assert_eq!(batch_sizes(&db, "double"), vec![(0, true)]);
}

#[test]
fn converging_branches_receive_aligned_windows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Probe::default();
    let spec = PipelineSpec::new("converge")
        .step(
            StepSpec::new("a", "numbers")
                .param("count", 10)
                .batch_size(3),
        )
        .step(
            StepSpec::new("b", "numbers")
                .param("count", 6)
                .batch_size(4),
        )
        .step(
            StepSpec::new("both", "double")
                .after("a")
                .after("b")
                .input_batch_size(4),
        );
    run(&build(spec, &probe), &RunOptions::new(&db)).unwrap();
    // Windows of 4 rows from each predecessor, aligned by row index: a gives 4,4,2 and b 4,2,0.
    let mut sizes = probe.sizes.lock().unwrap().clone();
    sizes.retain(|s| *s >= 1000);
    // Windows run concurrently, so calls arrive in any order; the batches below are ordered.
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1000, 1002, 1002, 1004, 1004, 1004]);
    assert_eq!(
        batch_sizes(&db, "both"),
        vec![(8, false), (6, false), (2, true)]
    );
    let ns: Vec<i64> = leaf_rows(&db, "both")
        .iter()
        .map(|r| r.get("n").and_then(Value::as_int).unwrap())
        .collect();
    assert_eq!(ns, vec![0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 8, 9]);
}

#[test]
fn stages_load_late_and_unload_before_the_next_stage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Probe::default();
    let spec = PipelineSpec::new("stages")
        .step(
            StepSpec::new("gen", "numbers")
                .param("count", 30)
                .batch_size(4),
        )
        .step(
            StepSpec::new("first", "double")
                .after("gen")
                .param("label", "first")
                .input_batch_size(5),
        )
        .step(StepSpec::new("rev", "reverse").after("first"))
        .step(
            StepSpec::new("second", "double")
                .after("rev")
                .param("label", "second")
                .input_batch_size(10)
                .output_mapping("out", "out2"),
        );
    let pipeline = build(spec, &probe);
    let stage_of: Vec<usize> = pipeline.nodes().iter().map(|n| n.stage).collect();
    assert_eq!(stage_of, vec![0, 0, 1, 2]);
    run(&pipeline, &RunOptions::new(&db)).unwrap();
    let j = &probe.journal;
    let entries = j.entries();
    // Stage 1 and 2 steps are loaded only after every stage 0 step is unloaded.
    assert!(j.position("unload numbers") < j.position("load reverse"));
    assert!(j.position("unload first") < j.position("load reverse"));
    assert!(j.position("unload reverse") < j.position("load second"));
    let first_second = entries.iter().position(|e| e == "process second").unwrap();
    assert!(j.position("process reverse") < first_second);
    assert!(j.position("load first") < j.position("process first"));
    // Every step ends unloaded (the log says so) and its record says it finished.
    let reader = RunReader::open(&db).unwrap();
    let snap = reader.snapshot().unwrap();
    let unloads: Vec<String> = snap
        .log_from(0)
        .unwrap()
        .filter_map(|e| match e.unwrap().event {
            distill_storage::Event::Step {
                step,
                state: StepState::Unloaded,
                ..
            } => Some(step),
            _ => None,
        })
        .collect();
    for (name, record) in snap.steps().unwrap() {
        assert_eq!(record.state, StepState::Finished, "{name}");
        assert!(record.done, "{name}");
        assert!(unloads.contains(&name), "{name} was never unloaded");
    }
    assert_eq!(snap.run_state().unwrap().status, RunStatus::Finished);
    let outs: Vec<i64> = leaf_rows(&db, "second")
        .iter()
        .map(|r| r.get("out2").and_then(Value::as_int).unwrap())
        .collect();
    assert_eq!(outs, (0..30).rev().map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn resume_never_processes_a_committed_batch_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    // Reference: an uninterrupted run.
    let clean_db = dir.path().join("clean.redb");
    run(
        &build(chain(100, 10, 10), &Probe::default()),
        &RunOptions::new(&clean_db),
    )
    .unwrap();

    let failing = Probe::default();
    *failing.fail_on_call.lock().unwrap() = Some(6);
    let err = run(&build(chain(100, 10, 10), &failing), &RunOptions::new(&db)).unwrap_err();
    assert!(
        matches!(err, Error::StepFailed { ref step, .. } if step == "double"),
        "{err}"
    );
    let reader = RunReader::open(&db).unwrap();
    let snap = reader.snapshot().unwrap();
    let record = snap.step("double").unwrap().unwrap();
    assert_eq!(record.state, StepState::Failed);
    assert!(record.error.unwrap().contains("planned failure"));
    assert_eq!(snap.run_state().unwrap().status, RunStatus::Failed);
    let committed = record.batches as usize;
    assert!(committed < 10, "some batches must remain: {committed}");
    drop(snap);
    drop(reader);

    let counting = Probe::default();
    let summary = run(&build(chain(100, 10, 10), &counting), &RunOptions::new(&db)).unwrap();
    assert!(summary.resumed);
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        10 - committed,
        "only the batches not committed are processed again"
    );
    assert_eq!(leaf_rows(&db, "double"), leaf_rows(&clean_db, "double"));
    // A third run on a finished database computes nothing.
    let idle = Probe::default();
    run(&build(chain(100, 10, 10), &idle), &RunOptions::new(&db)).unwrap();
    assert_eq!(idle.calls.load(Ordering::SeqCst), 0);
    assert!(
        idle.journal.entries().is_empty(),
        "nothing loaded: {:?}",
        idle.journal.entries()
    );
}

#[test]
fn mark_policy_keeps_going_with_the_error_in_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Probe::default();
    *probe.fail_on_call.lock().unwrap() = Some(2);
    let mut spec = chain(9, 3, 3);
    spec.steps[1].on_error = distill_engine::OnError::Mark;
    run(&build(spec, &probe), &RunOptions::new(&db)).unwrap();
    let rows = leaf_rows(&db, "double");
    assert_eq!(rows.len(), 9);
    let marked: Vec<_> = rows
        .iter()
        .filter(|r| r.contains("distill_error"))
        .collect();
    assert_eq!(marked.len(), 3);
    assert!(marked.iter().all(|r| r.get("out") == Some(&Value::Null)));
}

#[test]
fn a_pipeline_of_another_name_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    run(
        &build(chain(5, 5, 5), &Probe::default()),
        &RunOptions::new(&db),
    )
    .unwrap();
    let mut other = chain(6, 5, 5);
    other.name = "other".into();
    let err = run(&build(other, &Probe::default()), &RunOptions::new(&db)).unwrap_err();
    assert!(matches!(err, Error::PipelineMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("new --db"), "{err}");
}

/// `chain` with a template step after `double`.
/// (`chain` keeps every batch, so the steps before an edited one are kept: see
/// `consumed_batches_are_reclaimed_and_a_changed_step_restarts_from_a_stage_boundary` for
/// the default.)
fn chain_with_template(template: &str) -> PipelineSpec {
    chain(40, 5, 5).step(
        StepSpec::new("fmt", "format_text")
            .after("double")
            .input_batch_size(5)
            .param("template", template)
            .param("output", "t"),
    )
}

/// Batch events in the log of `db`, per step.
fn batch_events(db: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
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

#[test]
fn an_edited_step_is_recomputed_and_the_steps_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Probe::default();
    run(
        &build(chain_with_template("a{{ out }}"), &probe),
        &RunOptions::new(&db),
    )
    .unwrap();
    let calls = probe.calls.load(Ordering::SeqCst);
    let before = batch_events(&db);
    assert_eq!(before.get("double"), Some(&8));

    let edited = build(chain_with_template("b{{ out }}"), &probe);
    let plan = distill_engine::plan(&edited, &RunOptions::new(&db)).unwrap();
    let actions: Vec<(&str, &distill_engine::StepAction)> = plan
        .steps
        .iter()
        .map(|s| (s.step.as_str(), &s.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("gen", &distill_engine::StepAction::Keep),
            ("double", &distill_engine::StepAction::Keep),
            ("fmt", &distill_engine::StepAction::DropChanged),
        ]
    );
    // The plan changed nothing.
    assert_eq!(batch_events(&db), before);

    run(&edited, &RunOptions::new(&db)).unwrap();
    // Kept steps were not processed again: no new batches in the log, no calls.
    let after = batch_events(&db);
    assert_eq!(after.get("gen"), before.get("gen"));
    assert_eq!(after.get("double"), before.get("double"));
    assert_eq!(after.get("fmt"), Some(&(2 * before["fmt"])));
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        calls,
        "double ran again"
    );
    // The output is a fresh run's of the edited pipeline.
    let fresh = dir.path().join("fresh.redb");
    run(
        &build(chain_with_template("b{{ out }}"), &Probe::default()),
        &RunOptions::new(&fresh),
    )
    .unwrap();
    assert_eq!(leaf_rows(&db, "fmt"), leaf_rows(&fresh, "fmt"));
    assert!(
        leaf_rows(&db, "fmt")
            .iter()
            .all(|r| r.get("t").unwrap().to_string().starts_with('b'))
    );

    // An upstream change drops everything after it.
    let mut upstream = chain_with_template("b{{ out }}");
    upstream.steps[0] = upstream.steps[0].clone().param("count", 41);
    let plan = distill_engine::plan(&build(upstream, &probe), &RunOptions::new(&db)).unwrap();
    let actions: Vec<&distill_engine::StepAction> = plan.steps.iter().map(|s| &s.action).collect();
    assert_eq!(
        actions,
        vec![
            &distill_engine::StepAction::DropChanged,
            &distill_engine::StepAction::DropUpstream("gen".into()),
            &distill_engine::StepAction::DropUpstream("double".into()),
        ]
    );
}

#[test]
fn stop_flag_stops_cleanly_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let options = RunOptions::new(&db);
    options.stop.store(true, Ordering::SeqCst);
    let err = run(&build(chain(50, 5, 5), &Probe::default()), &options).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err:?}");
    let reader = RunReader::open(&db).unwrap();
    assert_eq!(
        reader.snapshot().unwrap().run_state().unwrap().status,
        RunStatus::Stopped
    );
    drop(reader);
    run(
        &build(chain(50, 5, 5), &Probe::default()),
        &RunOptions::new(&db),
    )
    .unwrap();
    assert_eq!(leaf_rows(&db, "double").len(), 50);
}

/// A generator over a dataset with versions, like a Hub repository: it reads the newest version
/// unless pinned to the one a run recorded.
struct Versioned {
    versions: std::sync::Arc<std::sync::Mutex<Vec<Vec<i64>>>>,
    current: usize,
    fail_from: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl distill_engine::step::Lifecycle for Versioned {}

impl distill_engine::step::Generator for Versioned {
    fn outputs(&self) -> Vec<String> {
        vec!["n".into()]
    }

    fn fingerprint(&self) -> distill_engine::step::StepResult<Option<String>> {
        Ok(Some(format!("version {}", self.current)))
    }

    fn pin(&mut self, recorded: &str) -> distill_engine::step::StepResult<()> {
        self.current = recorded
            .strip_prefix("version ")
            .and_then(|v| v.parse().ok())
            .ok_or("not a version")?;
        Ok(())
    }

    fn generate(
        &mut self,
        offset: u64,
        count: usize,
    ) -> distill_engine::step::StepResult<(Vec<distill_storage::Row>, bool)> {
        if offset >= self.fail_from.load(Ordering::SeqCst) {
            return Err("cut off".into());
        }
        let data = self.versions.lock().unwrap()[self.current].clone();
        let start = (offset as usize).min(data.len());
        let end = (start + count).min(data.len());
        let rows = data[start..end]
            .iter()
            .map(|n| distill_storage::Row::new().with("n", *n))
            .collect();
        Ok((rows, end == data.len()))
    }
}

#[test]
fn a_resumed_generator_is_pinned_to_the_input_its_run_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let versions = std::sync::Arc::new(std::sync::Mutex::new(vec![(0..6).collect::<Vec<i64>>()]));
    let fail_from = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(2));
    let mut registry = distill_engine::Registry::default();
    let (v, f) = (versions.clone(), fail_from.clone());
    registry.register("versioned", move |_p, _c: &BuildContext| {
        let current = v.lock().unwrap().len() - 1;
        Ok(distill_engine::StepKind::Generator(Box::new(Versioned {
            versions: v.clone(),
            current,
            fail_from: f.clone(),
        })))
    });
    let spec = || PipelineSpec::new("pinned").step(StepSpec::new("gen", "versioned").batch_size(2));
    let pipeline = || Pipeline::build(spec(), &registry, &BuildContext::default()).unwrap();
    // The first session commits one batch of version 0, then fails.
    let err = run(&pipeline(), &RunOptions::new(&db)).unwrap_err();
    assert!(matches!(err, Error::StepFailed { .. }), "{err}");
    // The source moves on; the resumed run still reads version 0, so no input changed.
    versions.lock().unwrap().push((100..106).collect());
    fail_from.store(u64::MAX, Ordering::SeqCst);
    let summary = run(&pipeline(), &RunOptions::new(&db)).unwrap();
    assert!(summary.resumed);
    let got: Vec<i64> = leaf_rows(&db, "gen")
        .iter()
        .map(|r| r.get("n").and_then(Value::as_int).unwrap())
        .collect();
    assert_eq!(got, (0..6).collect::<Vec<_>>());
    // A new run reads the newest version.
    let mut fresh = RunOptions::new(&db);
    fresh.new_run = true;
    run(&pipeline(), &fresh).unwrap();
    let got: Vec<i64> = leaf_rows(&db, "gen")
        .iter()
        .map(|r| r.get("n").and_then(Value::as_int).unwrap())
        .collect();
    assert_eq!(got, (100..106).collect::<Vec<_>>());
}

#[test]
fn a_constructor_that_cannot_reach_its_input_is_not_an_invalid_pipeline() {
    let mut registry = distill_engine::Registry::default();
    registry.register("remote", |_p, _c: &BuildContext| {
        Err(Box::new(distill_engine::step::InputUnreachable(
            "example.org: HTTP 503".into(),
        )) as distill_engine::step::StepError)
    });
    let spec = PipelineSpec::new("remote").step(StepSpec::new("gen", "remote"));
    let err = Pipeline::build(spec, &registry, &BuildContext::default())
        .err()
        .unwrap();
    assert_eq!(err.kind(), distill_engine::ErrorKind::Remote);
    assert_eq!(err.to_string(), "step 'gen': example.org: HTTP 503");
}

/// Rows of `inline` with a `text` column: `texts` in order, ids from `first`.
fn inline_texts(first: i64, texts: &[&str]) -> serde_json::Value {
    serde_json::Value::Array(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"id": first + i as i64, "text": t}))
            .collect(),
    )
}

#[test]
fn a_streaming_global_step_reads_its_predecessors_in_turn_window_by_window() {
    let probe = Probe::default();
    let a = [
        "red fox runs",
        "blue whale swims",
        "red fox runs",
        "green frog jumps",
        "tall tree grows",
    ];
    let b = [
        "blue whale swims",
        "small ant walks",
        "tall tree grows",
        "old owl hoots",
        "small ant walks",
        "new sun rises",
        "cold wind blows",
    ];
    let spec = |window: usize| {
        PipelineSpec::new("stream")
            .step(
                StepSpec::new("a", "inline")
                    .param("rows", inline_texts(0, &a))
                    .batch_size(2),
            )
            .step(
                StepSpec::new("b", "inline")
                    .param("rows", inline_texts(100, &b))
                    .batch_size(3),
            )
            .step(
                StepSpec::new("unique", "minhash_dedup")
                    .after("a")
                    .after("b")
                    .input_batch_size(window)
                    .param("column", "text")
                    .param("threshold", 0.5),
            )
    };
    let ids = |window: usize| -> (Vec<i64>, Vec<(usize, bool)>) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.redb");
        run(&build(spec(window), &probe), &RunOptions::new(&db)).unwrap();
        let rows = leaf_rows(&db, "unique");
        (
            rows.iter()
                .map(|r| r.get("id").unwrap().as_int().unwrap())
                .collect(),
            batch_sizes(&db, "unique"),
        )
    };
    // Predecessor a first, then b; duplicates of earlier kept rows dropped, order kept.
    let (kept, batches) = ids(3);
    assert_eq!(kept, vec![0, 1, 3, 4, 101, 103, 105, 106]);
    // Windows of 3 over 12 rows: 4 windows, one batch each, the last flagged.
    assert_eq!(batches.len(), 4);
    assert_eq!(batches.iter().filter(|b| b.1).count(), 1);
    assert!(batches[3].1);
    // The windows' size changes the batches, never the rows.
    for window in [1, 5, 12, 100] {
        assert_eq!(ids(window).0, kept, "window {window}");
    }
}

fn actions(plan: &distill_engine::ResumePlan) -> Vec<(String, distill_engine::StepAction)> {
    plan.steps
        .iter()
        .map(|s| (s.step.clone(), s.action.clone()))
        .collect()
}

/// gen -> double (stage 0), reverse (global, stage 1), fmt -> tail (stage 2).
fn staged(template: &str) -> PipelineSpec {
    let mut spec = chain(40, 5, 5)
        .step(StepSpec::new("reverse", "reverse").after("double"))
        .step(
            StepSpec::new("fmt", "format_text")
                .after("reverse")
                .input_batch_size(5)
                .param("template", template)
                .param("output", "t"),
        )
        .step(
            StepSpec::new("tail", "format_text")
                .after("fmt")
                .input_batch_size(7)
                .param("template", "{{ t }}!")
                .param("output", "u"),
        );
    spec.keep_intermediate = false;
    spec
}

#[test]
fn consumed_batches_are_reclaimed_and_a_changed_step_restarts_from_a_stage_boundary() {
    use distill_engine::StepAction;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let probe = Probe::default();
    run(&build(staged("a{{ n }}"), &probe), &RunOptions::new(&db)).unwrap();
    {
        let reader = RunReader::open(&db).unwrap();
        let snap = reader.snapshot().unwrap();
        // Consumed within their stage: gone. Read by a later stage, or a leaf: kept.
        assert_eq!(snap.reclaimed("gen").unwrap(), (8, 40));
        assert_eq!(snap.batches("gen", 0).unwrap().count(), 0);
        assert_eq!(snap.reclaimed("fmt").unwrap(), (8, 40));
        for kept in ["double", "reverse", "tail"] {
            assert_eq!(snap.reclaimed(kept).unwrap(), (0, 0), "{kept}");
        }
        assert_eq!(leaf_rows(&db, "double").len(), 40);
    }
    let before = batch_events(&db);
    let tail_before = leaf_rows(&db, "tail");
    assert_eq!(
        tail_before[0].get("u").and_then(Value::as_str),
        Some("a39!")
    );

    // fmt changes: it restarts from reverse's kept output; stage 0 is not run again.
    let edited = build(staged("b{{ n }}"), &probe);
    let plan = distill_engine::plan(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("gen".into(), StepAction::Keep),
            ("double".into(), StepAction::Keep),
            ("reverse".into(), StepAction::Keep),
            ("fmt".into(), StepAction::DropChanged),
            ("tail".into(), StepAction::DropUpstream("fmt".into())),
        ]
    );
    run(&edited, &RunOptions::new(&db)).unwrap();
    let after = batch_events(&db);
    for kept in ["gen", "double", "reverse"] {
        assert_eq!(after.get(kept), before.get(kept), "{kept}");
    }
    let tail = leaf_rows(&db, "tail");
    assert_eq!(tail.len(), 40);
    assert_eq!(tail[0].get("u").and_then(Value::as_str), Some("b39!"));

    // tail changes: fmt's consumed batches are gone, so fmt runs again too (from reverse);
    // made again, not changed: tail is dropped because it changed, not because of fmt.
    let mut spec = staged("b{{ n }}");
    spec.steps[4].params["template"] = "{{ t }}?".into();
    let edited = build(spec, &probe);
    let plan = distill_engine::plan(&edited, &RunOptions::new(&db)).unwrap();
    assert_eq!(
        actions(&plan)[3..],
        [
            ("fmt".into(), StepAction::DropReclaimed("tail".into())),
            ("tail".into(), StepAction::DropChanged),
        ]
    );
    assert!(
        plan.steps[3].to_string().ends_with(
            "8 batches dropped and made again (same rows); its other consumers keep theirs"
        ),
        "{}",
        plan.steps[3]
    );
    run(&edited, &RunOptions::new(&db)).unwrap();
    let tail = leaf_rows(&db, "tail");
    assert_eq!(tail.len(), 40);
    assert_eq!(tail[39].get("u").and_then(Value::as_str), Some("b0?"));
}
