//! Batch mode through the real binary against the loopback batch double: a batch run makes
//! the rows an online run makes, with every request in exactly one job and none asked online;
//! waiting jobs hold no worker; `on_batch_wait: exit`, `distill cancel`, `status`, and
//! failed or expired lines handled as `on_batch_failure` says.

mod common;

use common::batch::{ROWS, export, online_rows, write_pipeline};
use common::distill::{distill, run, stderr, stdout};
use distill_testkit::mock_batch::BatchBehaviour;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::time::Duration;

/// A double whose jobs complete `processing` after they are created.
fn server(processing: Option<Duration>) -> MockLlm {
    let server = MockLlm::start(Behaviour::default());
    server.set_batch_behaviour(BatchBehaviour {
        processing,
        ..BatchBehaviour::default()
    });
    server
}

#[test]
fn a_batch_run_makes_the_rows_of_an_online_run_with_each_request_in_one_job() {
    let server = server(Some(Duration::from_millis(300)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = server.batch_log();
    // 30 rows in jobs of at most 20 rows (batch_window).
    assert_eq!(log.created.len(), 2, "{:?}", log.created);
    assert!(log.created.iter().all(|j| j.custom_ids.len() <= 20));
    let submissions = log.submissions();
    assert_eq!(submissions.len(), ROWS);
    assert!(submissions.values().all(|n| *n == 1), "{submissions:?}");
    for job in &log.created {
        assert_eq!(
            job.metadata.get("distill_step").map(String::as_str),
            Some("generate")
        );
        assert_eq!(job.metadata["distill_job"].len(), 64);
    }
    assert_eq!(server.chats_answered(), 0, "nothing is asked online");
    assert_eq!(export(d, "batch"), online_rows());
    // Status lists the jobs, collected, and the batch counters.
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let jobs = json["batch_jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter()
            .all(|j| j["phase"] == "collected" && j["status"] == "completed")
    );
    let generate = &json["steps"][1];
    assert_eq!(generate["counters"]["batch_answers"], ROWS);
    assert_eq!(generate["counters"]["batch_jobs"], 2);
    assert!(
        generate["counters"]["batch_output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}
