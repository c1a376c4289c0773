//! The batch double (`distill_testkit::mock_batch`, served by `MockLlm`) speaks the real
//! protocol: the official `openai` Python client (pinned in scripts/python-env.sh) uploads,
//! creates, polls, lists with pagination, downloads output and error files and cancels
//! against it (tests/python/openai_batch.py).

mod common;

use distill_testkit::mock_batch::BatchBehaviour;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::process::Command;
use std::time::Duration;

const KEY: &str = "sk-batch-double-key";

#[test]
fn the_official_openai_client_runs_batches_against_the_double() {
    let server = MockLlm::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    });
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::from_millis(100)),
        fail_line_every: Some(3),
        ..BatchBehaviour::default()
    });
    let script = common::distill::root().join("tests/python/openai_batch.py");
    let out = Command::new(common::python::python())
        .arg(script)
        .args([server.base_url().as_str(), KEY])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // Lines 1 and 2 answered as the chat endpoint answers; line 3 failed (every 3rd).
    assert_eq!(seen["answers"]["a"], "echo: say a");
    assert_eq!(seen["answers"]["b"], "echo: say b");
    assert_eq!(seen["failed"]["c"], 500);
    // Listed newest first, one per page, through `after`.
    let listed: Vec<&str> = seen["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            seen["second"].as_str().unwrap(),
            seen["first"].as_str().unwrap()
        ]
    );
    assert_eq!(seen["cancelling"], "cancelling");
    assert_eq!(seen["cancelled"], "cancelled");
    assert_eq!(
        seen["bad_errors"],
        serde_json::json!(["duplicate_custom_id"])
    );
    assert_eq!(seen["missing"], 404);
    let log = server.batch_log();
    assert_eq!(log.uploads, 2);
    assert_eq!(log.created.len(), 3);
    assert_eq!(log.created[0].custom_ids, ["a", "b", "c"]);
    assert_eq!(log.created[0].metadata["distill_job"], "tag-1");
    assert_eq!(log.cancels.len(), 1);
}

#[test]
fn the_double_refuses_a_wrong_key() {
    let server = MockLlm::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    });
    let client = reqwest::blocking::Client::new();
    let status = client
        .get(format!("{}/batches", server.base_url()))
        .bearer_auth("sk-wrong")
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
}
