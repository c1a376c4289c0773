//! A run database written by an older build is read and resumed by this one, so an upgrade
//! never strands a half-done run. `fixtures/runs/v2-stopped.redb` was written by the last build
//! of format version 2 (batches and cached answers stored uncompressed), killed (SIGKILL) half
//! way through `fixtures/runs/v2-stopped.yaml` (an LLM task against the mock server): `status`
//! reads it, and `run` finishes it without asking again for an answer it holds, to the rows a
//! fresh run of this build exports.

mod common;

use common::distill::{read_jsonl, root, run, stderr, stdout};
use distill_llm::cache_key;
use distill_storage::RunReader;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;

/// Rows of the fixture's pipeline.
const ROWS: usize = 40;

/// Writes the fixture's pipeline into `dir` with the mock server's address.
fn write_pipeline(dir: &Path, base_url: &str) {
    let yaml = std::fs::read_to_string(root().join("fixtures/runs/v2-stopped.yaml")).unwrap();
    std::fs::write(dir.join("p.yaml"), yaml.replace("BASE_URL", base_url)).unwrap();
}

fn export(dir: &Path, db: &str, out: &str) -> Vec<serde_json::Value> {
    let result = run(
        dir,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    read_jsonl(&dir.join(out).join("keep/train/data-00000.jsonl"))
}

#[test]
fn a_format_2_run_is_read_and_resumed_without_paying_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixture = root().join("fixtures/runs/v2-stopped.redb");
    std::fs::copy(&fixture, d.join("old.redb")).unwrap();
    std::fs::copy(&fixture, d.join("run.redb")).unwrap();
    let server = MockLlm::start(Behaviour::default());
    write_pipeline(d, &server.base_url());

    // The fixture is what it says: format 2, killed with part of the answers committed.
    let old = RunReader::open(d.join("old.redb")).unwrap();
    let old_snap = old.snapshot().unwrap();
    assert_eq!(old_snap.meta().unwrap().format_version, 2);
    let cached = old_snap.cache_len().unwrap() as usize;
    let answer = old_snap
        .step("answer")
        .unwrap()
        .expect("the task has a record");
    assert!(
        cached > 0 && cached < ROWS,
        "{cached} answers in the fixture"
    );
    assert!(answer.rows > 0 && !answer.done, "{answer:?}");
    let old_first = old_snap.batch("answer", 0).unwrap().expect("a first batch");

    let status = run(d, &["status", "--db", "run.redb"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("interrupted") && stdout(&status).contains("format 2"),
        "{}",
        stdout(&status)
    );

    let resumed = run(d, &["run", "p.yaml", "--db", "run.redb"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    // No answer the old file holds was asked again; every other row was asked once.
    let mut sent = 0;
    for r in server.received() {
        if r.path.ends_with("/chat/completions") {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert!(
                old_snap.cached(&cache_key(&body, 0)).unwrap().is_none(),
                "asked again: {}",
                r.body
            );
            sent += 1;
        }
    }
    assert_eq!(sent + cached, ROWS, "{sent} sent, {cached} cached before");
    // The old batches were kept as they were, not computed again, and the file kept its
    // format (a format 2 file is never reclaimed from).
    let now = RunReader::open(d.join("run.redb")).unwrap();
    let now_snap = now.snapshot().unwrap();
    assert_eq!(now_snap.batch("answer", 0).unwrap(), Some(old_first));
    assert_eq!(now_snap.format_version().unwrap(), 2);
    drop(now_snap);
    drop(now);

    // The same rows as a fresh run of this build.
    let resumed_rows = export(d, "run.redb", "resumed");
    let fresh = run(d, &["run", "p.yaml", "--db", "fresh.redb"]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let fresh_rows = export(d, "fresh.redb", "fresh");
    assert_eq!(resumed_rows.len(), ROWS);
    assert_eq!(resumed_rows, fresh_rows);
}
