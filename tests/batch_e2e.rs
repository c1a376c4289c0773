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
    const KEY: &str = "sk-batch-e2e-4c1d9a7f";
    let server = MockLlm::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    });
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::from_millis(300)),
        ..BatchBehaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(
        d,
        &server.base_url(),
        "batch",
        "api_key_env: DISTILL_TEST_BATCH_KEY",
    );
    let out = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb", "--log-level", "debug"])
        .env("DISTILL_TEST_BATCH_KEY", KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The key went to the provider and nowhere else.
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(printed.contains("batch job created") && !printed.contains(KEY));
    let db = std::fs::read(d.join("r.redb")).unwrap();
    assert!(!db.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
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

/// A job that takes a day must not hold a worker: with one worker, an online branch runs to
/// its end while the batch branch's jobs wait at the provider.
#[test]
fn waiting_jobs_hold_no_worker() {
    let server = server(None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    let online = format!(
        "  - name: online\n    type: text_generation\n    after: [load]\n    input_batch_size: 5\n    params: {{base_url: {}, model: mock-model}}\n",
        server.base_url()
    );
    std::fs::write(d.join("p.yaml"), format!("{yaml}{online}")).unwrap();
    let mut child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb", "--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        assert!(
            std::time::Instant::now() < until,
            "the online branch did not finish"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        let out = run(d, &["status", "--db", "r.redb", "--json"]);
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if json["steps"][2]["done"] == true {
                break json;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["steps"][1]["step"], "generate");
    assert_eq!(status["steps"][1]["rows"], 0);
    let jobs = status["batch_jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    // Both open at the provider (a job not looked at since its creation is still
    // `validating`): waiting there, not in a worker.
    assert!(
        jobs.iter()
            .all(|j| j["open"] == true
                && (j["status"] == "in_progress" || j["status"] == "validating")),
        "{jobs:?}"
    );
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::ZERO),
        ..BatchBehaviour::default()
    });
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(export(d, "out"), online_rows());
}

/// `on_batch_wait: exit`: the run ends with exit code 75 once only jobs are left, `status`
/// says so, and a later run collects the same jobs (none created again).
#[test]
fn on_batch_wait_exit_ends_the_run_and_a_later_run_collects() {
    let server = server(None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "on_batch_wait: exit");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for provider batch jobs (generate: 2 jobs open"),
        "{}",
        stderr(&out)
    );
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(status.contains("waiting"), "{status}");
    assert!(
        status.contains("run the same command again later to collect"),
        "{status}"
    );
    let job_lines: Vec<&str> = status
        .lines()
        .filter(|l| l.trim_start().starts_with("generate") && l.contains("batch_"))
        .collect();
    assert_eq!(job_lines.len(), 2, "{status}");
    assert!(
        job_lines
            .iter()
            .all(|l| l.contains("generate") && l.contains("in_progress"))
    );
    // Still waiting: the next run ends the same way, creating nothing.
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::ZERO),
        ..BatchBehaviour::default()
    });
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.batch_log().created.len(), 2);
    assert_eq!(server.chats_answered(), 0);
    assert_eq!(export(d, "out"), online_rows());
}

/// `distill cancel` cancels the open jobs; the next run handles their requests as
/// `on_batch_failure` says (here: marked).
#[test]
fn cancel_then_mark() {
    let server = server(None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "on_batch_wait: exit");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let out = run(d, &["cancel", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.contains("is cancelling"))
            .count(),
        2,
        "{printed}"
    );
    assert_eq!(server.batch_log().cancels.len(), 2);
    write_pipeline(
        d,
        &server.base_url(),
        "batch",
        "on_batch_wait: exit\non_batch_failure: mark",
    );
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = export(d, "out");
    assert_eq!(rows.len(), ROWS);
    for row in &rows {
        assert!(row["generation"].is_null(), "{row}");
        let error = row["generation_error"].as_str().unwrap();
        assert!(error.contains("cancelled"), "{error}");
    }
    assert_eq!(server.chats_answered(), 0);
    assert_eq!(server.batch_log().created.len(), 2);
    // Nothing is open any more: a second cancel has nothing to do.
    let out = run(d, &["cancel", "--db", "r.redb"]);
    assert!(
        stdout(&out).contains("no open batch jobs"),
        "{}",
        stdout(&out)
    );
}

/// The custom ids of the lines the double failed (every 4th line it ran).
fn failing(every: u64, expire: bool) -> MockLlm {
    let server = MockLlm::start(Behaviour::default());
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::from_millis(100)),
        fail_line_every: (!expire).then_some(every),
        expire,
        ..BatchBehaviour::default()
    });
    server
}

#[test]
fn failed_lines_are_asked_online_by_default() {
    let server = failing(4, false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // 30 lines, every 4th failed: 7 asked online, each once.
    assert_eq!(server.chats_answered(), 7);
    assert_eq!(server.batch_log().created.len(), 2);
    assert_eq!(export(d, "out"), online_rows());
}

#[test]
fn failed_lines_are_resubmitted_in_new_jobs() {
    let server = failing(4, false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "on_batch_failure: resubmit");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.chats_answered(), 0);
    let log = server.batch_log();
    assert!(log.created.len() > 2, "{} jobs", log.created.len());
    let submissions = log.submissions();
    // 7 of the first 30 lines failed and went into a new job; of those 7 lines, 2 failed
    // again and went into a third.
    assert_eq!(submissions.values().sum::<usize>(), 30 + 7 + 2);
    assert!(submissions.values().all(|n| *n <= 3));
    assert_eq!(export(d, "out"), online_rows());
}

#[test]
fn failed_lines_are_marked() {
    let server = failing(4, false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "on_batch_failure: mark");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.chats_answered(), 0);
    let rows = export(d, "out");
    let marked: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["generation"].is_null()).collect();
    assert_eq!(marked.len(), 7);
    for row in marked {
        let error = row["generation_error"].as_str().unwrap();
        assert!(
            error.contains("HTTP 500") && error.contains("server had an error"),
            "{error}"
        );
    }
    let online = online_rows();
    for (row, expected) in rows.iter().zip(&online) {
        if !row["generation"].is_null() {
            assert_eq!(row, expected);
        }
    }
}

#[test]
fn expired_lines_are_asked_online() {
    let server = failing(0, true);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Two jobs (20 and 10 lines) each expired with their second half undone.
    assert_eq!(server.chats_answered(), 10 + 5);
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let jobs = json["batch_jobs"].as_array().unwrap();
    assert!(jobs.iter().all(|j| j["status"] == "expired"), "{jobs:?}");
    assert_eq!(export(d, "out"), online_rows());
}

/// SIGTERM stops the run without cancelling its jobs (exit 143); the next run collects them.
/// `--new` keeps the records of open jobs: a new run collects them instead of paying again.
#[test]
fn sigterm_leaves_jobs_running_and_a_new_run_collects_them() {
    let server = server(None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while server.batch_log().created.len() < 2 {
        assert!(
            std::time::Instant::now() < until,
            "the jobs were not created"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(server.batch_log().cancels.is_empty(), "no job is cancelled");
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["status"], "stopped");
    assert_eq!(json["batch_jobs"].as_array().unwrap().len(), 2);
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::ZERO),
        ..BatchBehaviour::default()
    });
    let out = run(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        server.batch_log().created.len(),
        2,
        "no job is created again"
    );
    assert_eq!(server.chats_answered(), 0);
    assert_eq!(export(d, "out"), online_rows());
}

/// Switching a step from online to batch mode changes no row: its committed batches are kept
/// and its cached answers are not asked again (here: a killed online run, resumed in batch
/// mode).
#[test]
fn switching_a_step_to_batch_mode_keeps_its_batches_and_answers() {
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(40),
        ..Behaviour::default()
    });
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::from_millis(100)),
        ..BatchBehaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "online", "concurrency: 1");
    let mut child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while server.chats_answered() < 12 {
        assert!(
            std::time::Instant::now() < until,
            "the online run did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A request in flight at the kill is still answered by the server (40 ms later).
    std::thread::sleep(Duration::from_millis(300));
    // The answers the killed run committed (one in flight at the kill may be lost).
    let reader = distill_storage::RunReader::open(d.join("r.redb")).unwrap();
    let snapshot = reader.snapshot().unwrap();
    let cached: std::collections::HashSet<String> = server
        .received()
        .iter()
        .filter(|r| r.status == 200 && r.path.ends_with("/chat/completions"))
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap())
        .filter(|b| {
            let key = distill_llm::cache_key(b, 0);
            snapshot.cached(&key).unwrap().is_some()
        })
        .map(|b| b.to_string())
        .collect();
    drop((snapshot, reader));
    assert!(cached.len() >= 10, "{} answers cached", cached.len());
    let asked_online = server.chats_answered();
    write_pipeline(d, &server.base_url(), "batch", "concurrency: 1");
    let plan = stdout(&run(d, &["run", "p.yaml", "--db", "r.redb", "--dry-run"]));
    assert!(plan.contains("change no row"), "{plan}");
    assert!(!plan.contains("dropped"), "{plan}");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = server.batch_log();
    let in_jobs: Vec<String> = log
        .created
        .iter()
        .flat_map(|j| j.bodies.iter().map(|b| b.to_string()))
        .collect();
    // No cached answer is asked again; every other row goes into a job, once.
    assert!(in_jobs.iter().all(|b| !cached.contains(b)), "{in_jobs:?}");
    assert_eq!(in_jobs.len() + cached.len(), ROWS, "{in_jobs:?}");
    assert_eq!(
        server.chats_answered(),
        asked_online,
        "nothing more is asked online"
    );
    assert_eq!(export(d, "out"), online_rows());
}

/// structured_generation in batch mode: an answer that does not match the schema is asked
/// again in a later job (not online), as `process` would ask it again.
#[test]
fn structured_generation_asks_invalid_answers_again_in_later_jobs() {
    let server = server(Some(Duration::from_millis(100)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let pipeline = |mode: &str, url: &str| {
        format!(
            "name: structured\nsteps:\n  - name: load\n    type: load_jsonl\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: structured_generation\n    after: [load]\n    input_batch_size: 5\n    params:\n      base_url: {url}\n      model: mock-model\n      mode: {mode}\n      poll_secs: 1\n      max_invalid_retries: 1\n      schema: {{type: object, properties: {{score: {{type: integer, maximum: 2}}}}, required: [score]}}\n"
        )
    };
    std::fs::write(d.join("p.yaml"), pipeline("batch", &server.base_url())).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.chats_answered(), 0);
    // The double answers score 3: every first answer is invalid and asked once more.
    let log = server.batch_log();
    assert_eq!(log.submissions().len(), 2 * ROWS);
    assert!(log.created.len() >= 2);
    let rows = export(d, "out");
    assert_eq!(rows.len(), ROWS);
    assert!(rows.iter().all(|r| {
        r["structured"].is_null()
            && r["structured_error"]
                .as_str()
                .unwrap()
                .contains("does not match the schema")
    }));
    // The same rows as online.
    let online_server = MockLlm::start(Behaviour::default());
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(d.join("data.jsonl"), other.path().join("data.jsonl")).unwrap();
    std::fs::write(
        other.path().join("p.yaml"),
        pipeline("online", &online_server.base_url()),
    )
    .unwrap();
    let out = run(other.path(), &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(online_server.chats_answered(), 2 * ROWS);
    assert_eq!(export(other.path(), "out"), rows);
}

/// A provider that refuses batch jobs fails the step (exit 4) with its message; bad batch
/// settings are refused before anything runs (exit 3), naming the parameter.
#[test]
fn refusals_and_bad_settings_are_clear_errors() {
    let server = MockLlm::start(Behaviour::default());
    server.set_batch_behaviour(BatchBehaviour {
        refuse_uploads: true,
        ..BatchBehaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &server.base_url(), "batch", "");
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("step 'generate'")
            && message.contains("batch mode")
            && message.contains("/files: HTTP 400")
            && message.contains("does not take batch files"),
        "{message}"
    );
    assert!(server.batch_log().created.is_empty());
    // With `on_error: mark` the step goes on: its rows are marked with the refusal.
    let yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    let marked = yaml.replace(
        "    input_batch_size: 5\n",
        "    input_batch_size: 5\n    on_error: mark\n",
    );
    std::fs::write(d.join("p.yaml"), marked).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "marked.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export",
            "--db",
            "marked.redb",
            "--out",
            "m",
            "--format",
            "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = common::distill::read_jsonl(&d.join("m/generate/train/data-00000.jsonl"));
    assert_eq!(rows.len(), ROWS);
    assert!(rows.iter().all(|r| {
        r["generation"].is_null()
            && r["distill_error"]
                .as_str()
                .is_some_and(|e| e.contains("does not take batch files"))
    }));
    for (setting, expected) in [
        ("poll_secs: 0", "`poll_secs` must be from 1 to 86400, not 0"),
        ("poll_secs: 1.5", "poll_secs"),
        (
            "batch_window: 50001",
            "`batch_window` must be from 1 to 50000",
        ),
        (
            "batch_window: 30000\nnum_generations: 2",
            "times `num_generations` (2) must be at most 50000",
        ),
        ("on_batch_failure: retry", "on_batch_failure"),
        ("mode: later", "mode"),
    ] {
        let other = tempfile::tempdir().unwrap();
        write_pipeline(other.path(), &server.base_url(), "batch", setting);
        let out = run(other.path(), &["run", "p.yaml", "--db", "r.redb"]);
        assert_eq!(out.status.code(), Some(3), "{setting}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("step 'generate'") && stderr(&out).contains(expected),
            "{setting}: {}",
            stderr(&out)
        );
    }
}

/// A budget holds in batch mode too: a job is created only when its worst case fits in what
/// is left (jobs shrink to fit), a resumed run counts jobs still open against it, and when not
/// one more request fits the run stops with exit 6; a higher budget finishes it, with every
/// request in exactly one job.
#[test]
fn batch_jobs_stay_within_the_budget_and_a_higher_one_finishes_the_run() {
    let server = server(Some(Duration::from_millis(100)));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let price = "price: {input_per_mtok: 1000, output_per_mtok: 1000}";
    let budgeted = |budget: f64| {
        write_pipeline(d, &server.base_url(), "batch", price);
        let yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
        std::fs::write(d.join("p.yaml"), format!("{yaml}budget_usd: {budget}\n")).unwrap();
    };
    // A line's worst case at batch prices (half of 1000 $/Mtok): "write line N" (12 or 13
    // bytes) + 16 per message + 16, and max_tokens 32: about $0.0385. Its real cost: 7 tokens.
    let worst_line = (13.0 + 16.0 + 16.0 + 32.0) * 500.0 / 1e6;
    let budget = 0.05;
    budgeted(budget);
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("budget"), "{}", stderr(&out));
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let spent = json["spent_usd"].as_f64().unwrap();
    assert!(spent <= budget, "spent {spent} of {budget}");
    assert!(
        budget - spent < worst_line,
        "stopped early: {spent} of {budget}"
    );
    let log = server.batch_log();
    assert!(!log.created.is_empty());
    assert!(
        log.created.iter().all(|j| j.custom_ids.len() == 1),
        "a job's worst case must fit what is left: {:?}",
        log.created
    );
    assert!(log.submissions().len() < ROWS);

    budgeted(10.0);
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let submissions = server.batch_log().submissions();
    assert_eq!(submissions.len(), ROWS);
    assert!(submissions.values().all(|n| *n == 1), "{submissions:?}");
    assert_eq!(server.chats_answered(), 0, "nothing is asked online");
    assert_eq!(export(d, "budgeted"), online_rows());
}

/// `text_completion` and `embeddings` in batch mode: their jobs go to their own endpoints,
/// each request in one job, nothing asked online, and the rows equal an online run's (an
/// embedding cached per input, as online mode keeps it).
#[test]
fn completions_and_embeddings_run_in_batch_mode_as_online() {
    let run_mode = |mode: &str| {
        let server = server(Some(Duration::from_millis(50)));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rows: Vec<String> = (0..12)
            .map(|i| format!("{{text: item {}}}", i % 9))
            .collect();
        let yaml = format!(
            "name: modes\nsteps:\n  - name: load\n    type: inline\n    batch_size: 5\n    params: {{rows: [{rows}]}}\n  - name: complete\n    type: text_completion\n    after: [load]\n    input_batch_size: 4\n    params: {{base_url: {url}, model: m, template: 'Say {{{{ text }}}}', mode: {mode}, batch_window: 5, poll_secs: 1}}\n  - name: embed\n    type: embeddings\n    after: [complete]\n    input_batch_size: 4\n    params: {{base_url: {url}, model: e, template: '{{{{ text }}}}', dimensions: 3, mode: {mode}, batch_window: 5, poll_secs: 1}}\n",
            rows = rows.join(", "),
            url = server.base_url()
        );
        std::fs::write(d.join("p.yaml"), yaml).unwrap();
        let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let exported = run(
            d,
            &[
                "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
            ],
        );
        assert!(exported.status.success(), "{}", stderr(&exported));
        let rows = common::distill::read_jsonl(&d.join("o/embed/train/data-00000.jsonl"));
        (rows, server)
    };
    let (online, _) = run_mode("online");
    let (batch, server) = run_mode("batch");
    assert_eq!(batch, online);
    assert_eq!(batch.len(), 12);
    assert!(
        batch
            .iter()
            .all(|r| r["embedding"].as_array().is_some_and(|v| v.len() == 3))
    );
    let log = server.batch_log();
    let endpoints: std::collections::BTreeSet<&str> =
        log.created.iter().map(|j| j.endpoint.as_str()).collect();
    assert_eq!(
        endpoints,
        ["/v1/completions", "/v1/embeddings"].into_iter().collect()
    );
    // 12 prompts (9 distinct texts, but each row's prompt is its own request) and 9 distinct
    // inputs to embed: each in exactly one job.
    let submissions = log.submissions();
    assert!(submissions.values().all(|n| *n == 1), "{submissions:?}");
    let online_requests = server
        .received()
        .iter()
        .filter(|r| r.path.ends_with("/completions") || r.path.ends_with("/embeddings"))
        .count();
    assert_eq!(online_requests, 0, "nothing is asked online");
}
