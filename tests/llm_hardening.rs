//! LLM and Hub answers, bounds and waits, through the real binary (issue 13): unusable 200
//! answers are failures that are not cached, parameters are bounded at build, a long
//! `Retry-After` and a silent endpoint check end on time, an oversized answer is refused, and
//! a Hub commit answer without a commit id is not a push.

mod common;

use common::distill::{distill, read_jsonl, run, stderr, stdout};
use distill_llm::cache_key;
use distill_storage::RunReader;
use distill_testkit::mock_hub::{Faults, HubBehaviour, MockHub};
use distill_testkit::mock_llm::{AnswerKind, Behaviour, MockLlm};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ROWS: usize = 3;

/// Writes `data.jsonl` (ROWS rows, once) and a pipeline `p.yaml` whose `generate` step asks
/// `base_url` with the extra parameters `extra` (YAML flow entries, may be empty).
fn write_pipeline(d: &Path, base_url: &str, input_batch_size: usize, extra: &str) {
    let data: String = (0..ROWS)
        .map(|i| format!("{{\"id\": {i}, \"instruction\": \"row {i}\"}}\n"))
        .collect();
    if !d.join("data.jsonl").exists() {
        std::fs::write(d.join("data.jsonl"), data).unwrap();
    }
    std::fs::write(
        d.join("p.yaml"),
        format!(
            "name: llm-hardening\nsteps:\n  - name: load\n    type: load_jsonl\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    input_batch_size: {input_batch_size}\n    params: {{base_url: '{base_url}', model: mock-model, max_attempts: 2{extra}}}\n"
        ),
    )
    .unwrap();
}

fn status_json(d: &Path) -> serde_json::Value {
    let out = run(d, &["status", "--db", "r.redb", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counter(status: &serde_json::Value, step: &str, name: &str) -> u64 {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .and_then(|s| s["counters"][name].as_u64())
        .unwrap_or(0)
}

fn export(d: &Path, out: &str) -> Vec<serde_json::Value> {
    let o = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", out, "--format", "jsonl",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    read_jsonl(&d.join(out).join("generate/train/data-00000.jsonl"))
}

fn chat_requests(server: &MockLlm) -> Vec<serde_json::Value> {
    server
        .received()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[test]
fn unusable_200_answers_are_failures_with_their_reason_and_asked_again_later() {
    for (kind, reason) in [
        (AnswerKind::NoChoices, "no choices"),
        (AnswerKind::ErrorBody, "model overloaded"),
        (AnswerKind::NullContent, "no text"),
        (AnswerKind::EmptyContent, "no text"),
    ] {
        let server = MockLlm::start(Behaviour {
            answer: kind.clone(),
            ..Behaviour::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_pipeline(d, &server.base_url(), 1, "");
        let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
        assert!(out.status.success(), "{kind:?}: {}", stderr(&out));
        let rows = export(d, "first");
        assert_eq!(rows.len(), ROWS);
        for row in &rows {
            assert!(row["generation"].is_null(), "{kind:?}: {row}");
            let error = row["generation_error"].as_str().unwrap_or_default();
            assert!(error.contains(reason), "{kind:?}: {row}");
        }
        let status = status_json(d);
        assert_eq!(
            counter(&status, "generate", "failures"),
            ROWS as u64,
            "{kind:?}: {status}"
        );
        // Nothing unusable is cached.
        let reader = RunReader::open(d.join("r.redb")).unwrap();
        let snap = reader.snapshot().unwrap();
        for body in chat_requests(&server) {
            assert!(
                snap.cached(&cache_key(&body, 0)).unwrap().is_none(),
                "{kind:?}"
            );
        }
        drop((snap, reader));
        // The endpoint is fixed; the step is recomputed (another batch size): each row is
        // asked again, and filled.
        server.set_behaviour(Behaviour::default());
        let asked = chat_requests(&server).len();
        write_pipeline(d, &server.base_url(), 2, "");
        let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
        assert!(out.status.success(), "{kind:?}: {}", stderr(&out));
        assert_eq!(chat_requests(&server).len(), asked + ROWS, "{kind:?}");
        let rows = export(d, "second");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["generation"], format!("echo: row {i}"), "{kind:?}");
            assert!(row["generation_error"].is_null(), "{kind:?}: {row}");
        }
    }
}

#[test]
fn llm_parameters_out_of_bounds_are_refused_at_build_with_exit_3() {
    let url = "http://127.0.0.1:9/v1";
    for (extra, base_url, names) in [
        (", num_generations: 1025", url, "num_generations"),
        (", num_generations: 0", url, "num_generations"),
        (", concurrency: 1025", url, "concurrency"),
        (", concurrency: 0", url, "concurrency"),
        (", max_attempts: 101", url, "max_attempts"),
        (", timeout_secs: 0", url, "timeout_secs"),
        (", timeout_secs: -1", url, "timeout_secs"),
        (", timeout_secs: 86401", url, "timeout_secs"),
        (", requests_per_minute: 0", url, "requests_per_minute"),
        (", tokens_per_minute: 0", url, "tokens_per_minute"),
        (", generation: {max_tokens: 0}", url, "max_tokens"),
        (
            ", generation: {max_tokens: 100000000000}",
            url,
            "max_tokens",
        ),
        ("", "not a url", "base_url"),
        ("", "ftp://127.0.0.1/v1", "base_url"),
        (
            ", base_urls: ['http://127.0.0.1:9/v1', 'nope']",
            url,
            "base_urls[1]",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_pipeline(d, base_url, 1, extra);
        let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{extra} {base_url}: {err}");
        assert!(err.contains(names), "{extra} {base_url}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = format!(
        "name: s\nsteps:\n  - name: load\n    type: load_jsonl\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: structured_generation\n    after: [load]\n    params: {{base_url: '{url}', model: m, schema: {{type: object}}, max_invalid_retries: 101}}\n"
    );
    write_pipeline(d, url, 1, "");
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("max_invalid_retries"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ctrl_c_during_a_long_retry_after_stops_the_run_with_exit_130() {
    let server = MockLlm::start(Behaviour {
        rate_limit_every: Some(1),
        retry_after_secs: 3600,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), 1, "");
    let child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while chat_requests(&server).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no chat request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The 429 is answered; distill now waits for its Retry-After.
    std::thread::sleep(Duration::from_millis(300));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopped_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "the wait was not cut short: {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(status_json(d)["status"], "stopped");
}

#[test]
fn a_silent_endpoint_check_fails_the_load_in_seconds() {
    let server = MockLlm::start(Behaviour {
        models_latency: Duration::from_secs(120),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), 1, ", check_timeout_secs: 2");
    let started = Instant::now();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    let err = stderr(&out);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("did not answer GET /models within 2 s"),
        "{err}"
    );
    assert!(chat_requests(&server).is_empty());
}

#[test]
fn an_answer_larger_than_the_cap_fails_its_row_and_is_not_stored() {
    let server = MockLlm::start(Behaviour {
        answer: AnswerKind::Huge(distill_llm::MAX_ANSWER_BYTES + 1024),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), 1, "");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = export(d, "o");
    for row in &rows {
        assert!(row["generation"].is_null(), "{row}");
        let error = row["generation_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "larger than the {} bytes allowed",
                distill_llm::MAX_ANSWER_BYTES
            )),
            "{row}"
        );
    }
    let status = status_json(d);
    assert_eq!(counter(&status, "generate", "failures"), ROWS as u64);
    // Not retried (the answer would be as large again), and nothing of it kept.
    assert_eq!(chat_requests(&server).len(), ROWS);
    let size = std::fs::metadata(d.join("r.redb")).unwrap().len();
    assert!(size < 4 << 20, "the run database holds {size} bytes");
}

#[test]
fn a_commit_answer_without_a_commit_id_is_not_recorded_as_pushed() {
    const TOKEN: &str = "hf_hardening_token_0123456789";
    const REPO: &str = "acme/hardening";
    let llm = MockLlm::start(Behaviour::default());
    let hub = MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        ..HubBehaviour::default()
    });
    hub.set_faults(Faults {
        commits_without_oid: 10_000,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &llm.base_url(), 1, "");
    let mut yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    yaml.push_str(&format!(
        "push:\n  repo: {REPO}\n  timeout_secs: 2\n  final_wait_secs: 1\n"
    ));
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no commit id"), "{err}");
    assert!(hub.commits(REPO).is_empty());
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(status.contains(&format!("{ROWS} rows to push")), "{status}");
    // A Hub that answers properly: `distill push` pushes what was never confirmed.
    hub.set_faults(Faults::default());
    let out = distill(d)
        .args(["push", "--db", "r.redb", "--repo", REPO])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!hub.commits(REPO).is_empty());
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(status.contains("up to date"), "{status}");
}

#[test]
fn log_lines_show_retries_stages_and_cache_hits_and_never_the_key() {
    const KEY: &str = "sk-logging-secret-4242";
    let server = MockLlm::start(Behaviour {
        fail_every: Some(3),
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One batch, one request at the server at a time (the endpoint check is the first): the
    // third request answers 500, whichever row it carries, and its retry gets through.
    write_pipeline(
        d,
        &server.base_url(),
        ROWS,
        ", api_key_env: LOG_TEST_KEY, concurrency: 1",
    );
    let logged = |args: &[&str], rust_log: Option<&str>| {
        let mut command = distill(d);
        command
            .args(args)
            .env("LOG_TEST_KEY", KEY)
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    // --log-level info: the stages and every retry, one line each.
    let err = logged(
        &["run", "p.yaml", "--db", "r.redb", "--log-level", "info"],
        None,
    );
    assert!(err.lines().any(|l| l.contains("stage starting")), "{err}");
    assert!(err.lines().any(|l| l.contains("stage finished")), "{err}");
    let retries = err.lines().filter(|l| l.contains("retrying")).count();
    assert!(retries >= 1, "{err}");
    assert!(!err.contains(KEY), "{err}");
    // RUST_LOG names a crate: the LLM tasks' cache hits per batch, and nothing else at debug.
    let err = logged(
        &["run", "p.yaml", "--db", "r.redb", "--new"],
        Some("warn,distill_llm=debug"),
    );
    let answered: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("batch answered"))
        .collect();
    assert_eq!(answered.len(), 1, "{err}");
    assert!(
        answered[0].contains(&format!("requests={ROWS} cache_hits={ROWS}")),
        "{err}"
    );
    assert!(!err.contains("stage starting"), "{err}");
    assert!(!err.contains(KEY), "{err}");
    // The default is warn: a run without retries says nothing.
    let err = logged(&["run", "p.yaml", "--db", "r.redb", "--new"], None);
    assert!(
        !err.contains("batch answered") && !err.contains("stage starting"),
        "{err}"
    );
}
