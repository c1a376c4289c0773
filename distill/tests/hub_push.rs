//! Pushing runs to a loopback Hub double that speaks the Hub's HTTP protocol: every row lands
//! once, across many commits, retries, lost answers and new runs; bad tokens are clear errors
//! that never stop the run; the token is written nowhere.

use arrow_array::{Array, Int64Array};
use distill::hub::{HubAccess, PushOptions, PushStatus, Pusher, Round, run_tag};
use distill::{BuildContext, Pipeline, PipelineSpec, PushSpec, RunOptions, RunSummary, StepSpec};
use distill_storage::{RunLog, RunReader};
use distill_testkit::mock_hub::{Faults, HubBehaviour, MockHub};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const TOKEN: &str = "hf_test_SECRET_0123456789abcdef";
const REPO: &str = "acme/numbers";

fn rows(count: usize) -> serde_json::Value {
    (0..count)
        .map(|i| serde_json::json!({"id": i, "text": format!("row {i}")}))
        .collect()
}

/// A generator feeding two leaves (two configs).
fn spec(count: usize, push: Option<PushSpec>) -> PipelineSpec {
    let mut spec = PipelineSpec::new("numbers")
        .step(
            StepSpec::new("gen", "inline")
                .param("rows", rows(count))
                .batch_size(7),
        )
        .step(
            StepSpec::new("shout", "format_text")
                .after("gen")
                .param("template", "{{ text | upper }}")
                .param("output", "loud")
                .input_batch_size(5),
        )
        .step(
            StepSpec::new("quote", "format_text")
                .after("gen")
                .param("template", "\"{{ text }}\"")
                .param("output", "quoted")
                .input_batch_size(11),
        );
    spec.push = push;
    spec
}

/// As [`spec`], with the `shout` leaf an LLM task on a server answering in `latency`: a run
/// that takes long enough to push while it goes.
fn slow_spec(count: usize, llm: &MockLlm, push: PushSpec) -> PipelineSpec {
    let mut spec = spec(count, Some(push));
    spec.steps[1] = StepSpec::new("shout", "text_generation")
        .after("gen")
        .input_batch_size(5)
        .input_mapping("instruction", "text")
        .param("base_url", llm.base_url())
        .param("model", "mock-model")
        .param("concurrency", 4);
    spec
}

fn build(spec: PipelineSpec) -> Pipeline {
    Pipeline::build(spec, &distill::registry(), &BuildContext::default()).unwrap()
}

fn push_spec(every_rows: Option<u64>) -> PushSpec {
    let mut push = PushSpec::new(REPO);
    push.every_rows = every_rows;
    push.timeout_secs = 5;
    push.final_wait_secs = 60;
    push
}

fn access(hub: &MockHub, token: &str) -> HubAccess {
    HubAccess {
        endpoint: hub.endpoint(),
        token: Some(token.to_owned()),
    }
}

/// A pusher to `REPO` at the end of runs, with the write token.
fn new_pusher(hub: &MockHub, snapshot: &distill_storage::Snapshot) -> Pusher {
    let client = access(hub, TOKEN).client(&push_spec(None)).unwrap();
    Pusher::new(push_spec(None), client, snapshot).unwrap()
}

/// `distill push` of `db` to `REPO` with the write token.
fn push_options(db: &Path, hub: &MockHub) -> PushOptions {
    PushOptions {
        db: db.to_path_buf(),
        spec: push_spec(None),
        access: access(hub, TOKEN),
        stop: Arc::new(AtomicBool::new(false)),
        poll: Duration::from_millis(50),
    }
}

fn hub() -> MockHub {
    MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        read_only_token: Some("hf_read_only".into()),
        ..HubBehaviour::default()
    })
}

/// The batch range of a shard named as documented, `LEAF/train/RUNTAG-FROM-TO.parquet`.
fn parse_shard_path(path: &str, leaf: &str, tag: &str) -> Option<(u64, u64)> {
    let name = path
        .strip_prefix(&format!("{leaf}/train/{tag}-"))?
        .strip_suffix(".parquet")?;
    let (from, to) = name.split_once('-')?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

/// How a test runs a pipeline: the run's options and the Hub's address and token.
struct Opts {
    run: RunOptions,
    hub: HubAccess,
}

impl Opts {
    /// A run on `db` with no Hub.
    fn plain(db: &Path) -> Self {
        Self {
            run: RunOptions::new(db),
            hub: HubAccess::default(),
        }
    }
}

fn options(db: &Path, hub: &MockHub, token: &str) -> Opts {
    Opts {
        run: RunOptions::new(db),
        hub: access(hub, token),
    }
}

fn run(pipeline: &Pipeline, opts: &Opts) -> distill::Result<RunSummary> {
    distill::run_with_hub(pipeline, &opts.run, &opts.hub)
}

/// The `id`s in every Parquet file of `config` on the Hub, in file order.
fn ids_on_hub(hub: &MockHub, config: &str) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for (path, bytes) in hub.files(REPO) {
        if !(path.starts_with(&format!("{config}/train/")) && path.ends_with(".parquet")) {
            continue;
        }
        let file = dir.path().join("shard.parquet");
        std::fs::write(&file, &bytes).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("id").expect("an id column");
            let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
            ids.extend((0..column.len()).map(|i| column.value(i)));
        }
    }
    ids
}

fn assert_each_once(hub: &MockHub, count: usize) {
    for config in ["shout", "quote"] {
        let mut ids = ids_on_hub(hub, config);
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..count as i64).collect::<Vec<_>>(),
            "config {config}: every row exactly once"
        );
    }
}

#[test]
fn a_run_pushes_as_it_goes_and_every_row_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    let llm = MockLlm::start(Behaviour {
        latency: Duration::from_millis(20),
        ..Behaviour::default()
    });
    let summary = run(
        &build(slow_spec(200, &llm, push_spec(Some(40)))),
        &options(&db, &hub, TOKEN),
    )
    .unwrap();
    let push = summary.push.expect("a push status");
    assert_eq!(push.last_error, None);
    assert_eq!(push.total_rows(), 400);
    assert_each_once(&hub, 200);
    let files = hub.files(REPO);
    assert!(files.contains_key("README.md") && files.contains_key("pipeline.yaml"));
    let card = String::from_utf8(files["README.md"].clone()).unwrap();
    assert!(card.contains("config_name: shout") && card.contains("shout/train/*.parquet"));
    assert!(card.contains("config_name: quote"));
    assert!(card.contains("finished"), "{card}");
    assert_eq!(hub.is_private(REPO), Some(true));
    let commits = hub.commits(REPO);
    assert!(
        commits.len() >= 2,
        "pushed as it went: {} commits",
        commits.len()
    );
    // The offsets in the database are what the Hub holds.
    let snapshot = RunReader::open(&db).unwrap().snapshot().unwrap();
    let meta = snapshot.meta().unwrap();
    for leaf in ["shout", "quote"] {
        let offset = snapshot
            .offset(&distill::hub::offset_name(REPO, leaf))
            .unwrap();
        let batches = snapshot.step(leaf).unwrap().unwrap().batches;
        assert_eq!(offset, Some(batches));
        let last = files
            .keys()
            .filter_map(|p| parse_shard_path(p, leaf, &run_tag(&meta)))
            .map(|(_, to)| to)
            .max();
        assert_eq!(last, Some(batches));
    }
    let report = distill::status(&db).unwrap();
    assert_eq!(report.pushes.len(), 1);
    assert_eq!(report.pushes[0].behind_rows, 0);
}

#[test]
fn a_lost_answer_after_the_hub_committed_is_found_again_not_pushed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    run(&build(spec(60, None)), &Opts::plain(&db)).unwrap();
    let log = RunLog::open(&db).unwrap();
    let mut pusher = new_pusher(&hub, &log.snapshot().unwrap());
    // The Hub commits, then the process "dies" before recording the offsets.
    let lost = |_unit| {
        Err(distill_storage::Error::Io {
            path: "run.redb".into(),
            source: std::io::Error::other("the process died"),
        })
    };
    let failure = pusher
        .round(&log.snapshot().unwrap(), true, Some(&lost))
        .unwrap_err();
    assert!(
        failure.to_string().contains("the process died"),
        "{failure}"
    );
    assert_eq!(hub.commits(REPO).len(), 1);
    let snapshot = log.snapshot().unwrap();
    assert_eq!(
        snapshot
            .offset(&distill::hub::offset_name(REPO, "shout"))
            .unwrap(),
        None
    );
    // A new pusher (a restarted process) finds the shards by name and pushes nothing again.
    let mut again = new_pusher(&hub, &snapshot);
    let sink = |unit| log.commit(unit).map(|_| ());
    again.round(&snapshot, true, Some(&sink)).unwrap();
    assert_each_once(&hub, 60);
    let added: Vec<String> = hub.commits(REPO).last().unwrap().added.clone();
    assert!(
        added.iter().all(|p| !p.ends_with(".parquet")),
        "no shard uploaded again: {added:?}"
    );
    let status: PushStatus = again.status().clone();
    assert_eq!(status.total_rows(), 120);
}

#[test]
fn failing_uploads_and_commits_are_retried_and_the_push_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    hub.set_faults(Faults {
        fail_uploads: 3,
        fail_commits: 6,
        hang_commits: 1,
        ..Faults::default()
    });
    let mut push = push_spec(Some(30));
    push.timeout_secs = 2;
    let summary = run(&build(spec(150, Some(push))), &options(&db, &hub, TOKEN)).unwrap();
    let push = summary.push.unwrap();
    assert_eq!(push.last_error, None, "{push:?}");
    let left = hub.faults();
    assert_eq!(
        (left.fail_uploads, left.fail_commits, left.hang_commits),
        (0, 0, 0),
        "every fault was met"
    );
    assert_each_once(&hub, 150);
}

#[test]
fn a_bad_token_stops_the_run_before_it_spends_anything() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub();
    for (token, needles) in [
        ("hf_wrong", ["401", "HF_TOKEN"]),
        ("hf_read_only", ["403", "write permission"]),
    ] {
        let db = dir.path().join(format!("{token}.redb"));
        let err = run(
            &build(spec(30, Some(push_spec(Some(10))))),
            &options(&db, &hub, token),
        )
        .unwrap_err();
        assert!(
            matches!(err, distill::Error::Hub(distill::hub::Error::Hub { .. })),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            needles.iter().all(|n| message.contains(n)) && message.contains(REPO),
            "{message}"
        );
        assert!(
            !message.contains(token),
            "the token is not echoed: {message}"
        );
        let snapshot = RunReader::open(&db).unwrap().snapshot().unwrap();
        assert!(
            snapshot
                .steps()
                .unwrap()
                .iter()
                .all(|(_, r)| r.batches == 0)
        );
    }
    assert!(hub.repos().is_empty());
}

#[test]
fn a_push_that_keeps_failing_never_stops_the_run_and_status_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    hub.set_faults(Faults {
        fail_commits: 1_000,
        ..Faults::default()
    });
    let mut push = push_spec(Some(10));
    push.final_wait_secs = 1;
    let summary = run(&build(spec(30, Some(push))), &options(&db, &hub, TOKEN)).unwrap();
    assert_eq!(
        summary.leaves,
        vec![("shout".into(), 30), ("quote".into(), 30)]
    );
    let push = summary.push.unwrap();
    let error = push.last_error.clone().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("gave up"),
        "{error}"
    );
    assert!(!push.fatal);
    assert_eq!(push.total_rows(), 0);
    let report = distill::status(&db).unwrap();
    assert_eq!(report.pushes[0].behind_rows, 60);
    assert!(report.pushes[0].status.failures >= 1);
    // Once the Hub is back, `distill push` catches up.
    hub.set_faults(Faults::default());
    let options = push_options(&db, &hub);
    distill::hub::push(&options, |_, _| {}).unwrap();
    assert_each_once(&hub, 30);
    assert_eq!(distill::status(&db).unwrap().pushes[0].behind_rows, 0);
}

#[test]
fn distill_push_on_a_finished_run_pushes_once_and_then_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    run(&build(spec(90, None)), &Opts::plain(&db)).unwrap();
    let options = push_options(&db, &hub);
    let outcome = distill::hub::push(&options, |_, _| {}).unwrap();
    assert!(!outcome.live);
    assert_eq!(outcome.status.total_rows(), 180);
    assert_each_once(&hub, 90);
    let commits = hub.commits(REPO).len();
    let again = distill::hub::push(&options, |_, _| {}).unwrap();
    assert_eq!(again.status.total_rows(), 180);
    assert_eq!(hub.commits(REPO).len(), commits, "nothing new, no commit");
    // The token is in no byte of the run database.
    let bytes = std::fs::read(&db).unwrap();
    assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
}

#[test]
fn a_new_run_replaces_the_old_runs_files_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    run(
        &build(spec(50, Some(push_spec(None)))),
        &options(&db, &hub, TOKEN),
    )
    .unwrap();
    let first: Vec<String> = hub.files(REPO).into_keys().collect();
    let mut opts = options(&db, &hub, TOKEN);
    opts.run.new_run = true;
    run(&build(spec(50, Some(push_spec(None)))), &opts).unwrap();
    assert_each_once(&hub, 50);
    let last = hub.commits(REPO).last().unwrap().clone();
    let old_shards: Vec<&String> = first.iter().filter(|p| p.ends_with(".parquet")).collect();
    assert!(!old_shards.is_empty());
    for old in old_shards {
        assert!(
            last.deleted.contains(old),
            "{old} removed with the new run's commit"
        );
    }
    let per_config: BTreeMap<String, usize> = hub
        .files(REPO)
        .keys()
        .filter(|p| p.ends_with(".parquet"))
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(p.split('/').next().unwrap().to_owned())
                .or_default() += 1;
            m
        });
    assert_eq!(per_config.len(), 2);
}

#[test]
fn a_large_backlog_goes_in_several_bounded_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    run(&build(spec(90, None)), &Opts::plain(&db)).unwrap();
    let log = RunLog::open(&db).unwrap();
    let mut pusher = new_pusher(&hub, &log.snapshot().unwrap()).with_max_commit_rows(40);
    let sink = |unit| log.commit(unit).map(|_| ());
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 20);
        match pusher
            .round(&log.snapshot().unwrap(), true, Some(&sink))
            .unwrap()
        {
            Round::Pushed { rows, more, .. } => {
                assert!(rows <= 40 + 11, "a commit holds about 40 rows: {rows}");
                if !more {
                    break;
                }
            }
            Round::Idle => break,
        }
    }
    assert!(
        hub.commits(REPO).len() >= 4,
        "{} commits",
        hub.commits(REPO).len()
    );
    assert_each_once(&hub, 90);
    assert_eq!(pusher.status().total_rows(), 180);
}

#[test]
fn large_shards_go_up_in_parts_when_the_hub_asks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        multipart_chunk_size: Some(1_000),
        ..HubBehaviour::default()
    });
    hub.set_faults(Faults {
        fail_uploads: 2,
        ..Faults::default()
    });
    let summary = run(
        &build(spec(300, Some(push_spec(None)))),
        &options(&db, &hub, TOKEN),
    )
    .unwrap();
    assert_eq!(summary.push.unwrap().last_error, None);
    assert_each_once(&hub, 300);
    let requests = hub.requests();
    let parts = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/part/"))
        .count();
    let completions = requests
        .iter()
        .filter(|r| r.path.ends_with("/complete") && r.status == 200)
        .count();
    assert!(
        parts > 2 && completions == 2,
        "{parts} parts, {completions} completions"
    );
}

#[test]
fn shards_removed_from_the_hub_by_hand_are_pushed_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    run(
        &build(spec(80, Some(push_spec(None)))),
        &options(&db, &hub, TOKEN),
    )
    .unwrap();
    assert_each_once(&hub, 80);
    // Someone deletes the last shard of `shout` on the Hub.
    let last = hub
        .files(REPO)
        .into_keys()
        .filter(|p| p.starts_with("shout/train/"))
        .max()
        .unwrap();
    let client = access(&hub, TOKEN).client(&push_spec(None)).unwrap();
    client
        .commit(
            REPO,
            "main",
            "remove by hand",
            &[],
            std::slice::from_ref(&last),
        )
        .unwrap();
    assert!(!hub.files(REPO).contains_key(&last));
    let options = push_options(&db, &hub);
    let outcome = distill::hub::push(&options, |_, _| {}).unwrap();
    assert_eq!(outcome.status.total_rows(), 160);
    assert_each_once(&hub, 80);
}

#[test]
fn later_shards_keep_the_column_types_of_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let hub = hub();
    // Scores for the first rows, then only nulls (say, a judge that stopped answering).
    let rows: serde_json::Value = (0..60)
        .map(|i| {
            let score = if i < 20 {
                serde_json::json!(i)
            } else {
                serde_json::Value::Null
            };
            serde_json::json!({"id": i, "text": format!("row {i}"), "score": score})
        })
        .collect();
    let mut spec = spec(0, None);
    spec.steps[0] = StepSpec::new("gen", "inline")
        .param("rows", rows)
        .batch_size(7);
    run(&build(spec), &Opts::plain(&db)).unwrap();
    let log = RunLog::open(&db).unwrap();
    let mut pusher = new_pusher(&hub, &log.snapshot().unwrap()).with_max_commit_rows(15);
    let sink = |unit| log.commit(unit).map(|_| ());
    while let Round::Pushed { more: true, .. } = pusher
        .round(&log.snapshot().unwrap(), true, Some(&sink))
        .unwrap()
    {}
    let scratch = tempfile::tempdir().unwrap();
    let mut schemas = Vec::new();
    for (path, bytes) in hub.files(REPO) {
        if path.starts_with("shout/train/") {
            let file = scratch.path().join("s.parquet");
            std::fs::write(&file, bytes).unwrap();
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
                    .unwrap();
            schemas.push(builder.schema().clone());
        }
    }
    assert!(schemas.len() >= 3, "{} shards", schemas.len());
    assert!(
        schemas.iter().all(|s| s == &schemas[0]),
        "every shard of a config has the same schema: {schemas:#?}"
    );
    let score = schemas[0].field_with_name("score").unwrap();
    assert_eq!(score.data_type(), &arrow_schema::DataType::Int64);
    assert_each_once(&hub, 60);
}
