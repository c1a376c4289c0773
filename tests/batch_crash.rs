//! Batch jobs survive kill -9 (exactly once): the real binary is killed at each point of the
//! job protocol (the batch double holds its answer there, so the kill lands exactly), then run
//! again to the end. The double's log shows every request in exactly one created job (none
//! paid twice), nothing asked online, and the export equals an online run's. The run log
//! shows where each kill landed (the job's recorded phase).

mod common;

use common::batch::{ROWS, export, online_rows, write_pipeline};
use common::distill::{distill, run, stderr};
use common::seed;
use distill_testkit::mock_batch::{BatchBehaviour, BatchLog, Hold};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

fn start(d: &Path) -> Child {
    distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The batch jobs `distill status --json` shows.
fn jobs(d: &Path) -> Vec<serde_json::Value> {
    let out = run(d, &["status", "--db", "r.redb", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["batch_jobs"].as_array().unwrap().clone()
}

/// Runs to the end and checks the invariant: every request in exactly one created job, none
/// asked online, the rows of an online run.
fn finish_and_check(server: &MockLlm, d: &Path) -> BatchLog {
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = server.batch_log();
    let submissions = log.submissions();
    assert_eq!(submissions.len(), ROWS, "{submissions:?}");
    assert!(
        submissions.values().all(|n| *n == 1),
        "a request went into two jobs: {submissions:?}"
    );
    assert_eq!(server.chats_answered(), 0, "nothing is asked online");
    assert_eq!(export(d, "out"), online_rows());
    log
}

fn holding(hold: Option<Hold>, processing: Option<Duration>) -> MockLlm {
    let server = MockLlm::start(Behaviour::default());
    server.set_batch_behaviour(BatchBehaviour {
        processing,
        hold,
        ..BatchBehaviour::default()
    });
    server
}

#[test]
fn killed_after_the_upload_the_job_is_planned_again_and_created_once() {
    let server = holding(Some(Hold::Upload), Some(Duration::from_millis(200)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let child = start(d);
    assert!(server.wait_held(Hold::Upload, PATIENCE), "no upload");
    kill(child);
    // The request set is recorded, the file id is not: nothing was created.
    let recorded = jobs(d);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["phase"], "planned");
    assert!(server.batch_log().created.is_empty());
    server.release();
    let log = finish_and_check(&server, d);
    assert_eq!(log.created.len(), 2);
    assert_eq!(log.uploads, 3, "the first upload is an orphan file");
}

#[test]
fn killed_after_create_before_the_id_is_recorded_the_job_is_adopted_by_its_tag() {
    let server = holding(Some(Hold::Create), Some(Duration::from_millis(200)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let child = start(d);
    assert!(server.wait_held(Hold::Create, PATIENCE), "no create");
    kill(child);
    let recorded = jobs(d);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["phase"], "uploaded");
    assert!(recorded[0]["batch_id"].is_null());
    let first = server.batch_log().created[0].clone();
    assert_eq!(first.metadata["distill_job"], recorded[0]["hash"]);
    server.release();
    let log = finish_and_check(&server, d);
    assert_eq!(
        log.created.len(),
        2,
        "the job created before the kill is adopted"
    );
    assert_eq!(log.created[0], first);
    assert!(log.lists >= 1, "the resumed run looked for the job");
    let ids: Vec<String> = jobs(d)
        .iter()
        .map(|j| j["batch_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&first.id), "{ids:?}");
}

#[test]
fn killed_while_polling_the_same_jobs_are_polled_again() {
    let server = holding(None, None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let child = start(d);
    let until = Instant::now() + PATIENCE;
    while server.batch_log().created.len() < 2 {
        assert!(Instant::now() < until, "the jobs were not created");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both recorded as submitted before the kill (they stay in progress at the double).
    while jobs(d).iter().filter(|j| j["phase"] == "submitted").count() < 2 {
        assert!(Instant::now() < until, "the jobs were not recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(child);
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::ZERO),
        ..BatchBehaviour::default()
    });
    let log = finish_and_check(&server, d);
    assert_eq!(log.created.len(), 2);
}

#[test]
fn killed_while_downloading_results_they_are_read_again_and_cached_once() {
    let server = holding(Some(Hold::Content), Some(Duration::from_millis(100)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let child = start(d);
    assert!(server.wait_held(Hold::Content, PATIENCE), "no download");
    kill(child);
    let recorded = jobs(d);
    assert!(
        recorded
            .iter()
            .any(|j| j["phase"] == "submitted" && j["status"] == "completed"),
        "{recorded:?}"
    );
    server.release();
    let log = finish_and_check(&server, d);
    assert_eq!(log.created.len(), 2);
    assert!(log.downloads >= 3, "the held download is read again");
}

/// Kills at random instants, then a run to the end: still every request in exactly one job.
#[test]
fn killed_at_random_instants_every_request_is_in_exactly_one_job() {
    let mut rng = fastrand::Rng::with_seed(seed("batch_kill"));
    let server = holding(None, Some(Duration::from_millis(400)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "batch_window: 5");
    for _ in 0..6 {
        let child = start(d);
        std::thread::sleep(Duration::from_millis(rng.u64(100..900)));
        kill(child);
    }
    let log = finish_and_check(&server, d);
    assert_eq!(log.created.len(), ROWS / 5);
    eprintln!(
        "{} jobs, {} uploads, {} lists, {} downloads",
        log.created.len(),
        log.uploads,
        log.lists,
        log.downloads
    );
}
