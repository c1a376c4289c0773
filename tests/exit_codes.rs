//! The exit-code table of the README, case by case through the real binary (built with the
//! `fault-injection` feature, so that an engine bug and a failing cache read can be staged),
//! plus what the codes promise: a stopped or crashed run resumes exactly, a closed pipe is not
//! an error, and a cache that cannot be read is never taken for a miss.

mod common;

use common::distill::{distill, read_jsonl, run, stderr, stdout};
use distill_testkit::mock_hub::{Faults, HubBehaviour, MockHub};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A pipeline of `rows` rows through a generator and a template, long enough to be signalled.
fn slow_pipeline(dir: &Path, rows: usize) -> String {
    let data: String = (0..rows)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    write(
        dir,
        "slow.yaml",
        "name: slow\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 7\n    params: {path: data.jsonl}\n  - name: fmt\n    type: format_text\n    after: [load]\n    input_batch_size: 5\n    params: {template: \"{{ text }}!\", output: t}\n",
    )
}

/// The leaf `fmt` of `db`, exported as JSON Lines into `dir/name`.
fn exported(dir: &Path, db: &str, name: &str) -> Vec<serde_json::Value> {
    let out = run(
        dir,
        &["export", "--db", db, "--out", name, "--format", "jsonl"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    read_jsonl(&dir.join(name).join("fmt/train/data-00000.jsonl"))
}

#[test]
fn exit_0_ok_1_error_2_usage_3_invalid_4_step_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write(
        d,
        "ok.yaml",
        "name: ok\nsteps:\n  - {name: a, type: inline, params: {rows: [{x: 1}]}}\n",
    );
    assert_eq!(code(&run(d, &["run", &ok, "--db", "ok.redb"])), Some(0));
    assert_eq!(code(&run(d, &["info", &ok])), Some(0));

    let out = run(d, &["status", "--db", "missing.redb"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    let out = run(d, &["run", "--bogus-flag"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    // A bad repository on the command line is a usage error, not an invalid pipeline.
    let out = run(d, &["push", "--db", "ok.redb", "--repo", "not a repo"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("NAMESPACE/NAME"), "{}", stderr(&out));
    // So is a wait beyond any sensible bound (it would overflow a clock).
    let out = run(
        d,
        &[
            "push",
            "--db",
            "ok.redb",
            "--repo",
            "a/b",
            "--wait",
            "18446744073709551615",
        ],
    );
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--wait"), "{}", stderr(&out));

    let bad = write(
        d,
        "bad.yaml",
        "name: bad\nsteps:\n  - {name: a, type: teleport}\n",
    );
    let out = run(d, &["run", &bad, "--db", "bad.redb"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let push = write(
        d,
        "push.yaml",
        "name: p\nsteps:\n  - {name: a, type: inline, params: {rows: [{x: 1}]}}\npush: {repo: nope}\n",
    );
    let out = run(d, &["run", &push, "--db", "push.redb"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`push:` section") && !stderr(&out).contains("(push)"),
        "{}",
        stderr(&out)
    );

    // A malformed line past the rows read to learn the columns: found when the run reaches it.
    let good: String = (0..1500).map(|i| format!("{{\"x\": {i}}}\n")).collect();
    std::fs::write(d.join("broken.jsonl"), format!("{good}{{\"x\": \n")).unwrap();
    let failing = write(
        d,
        "failing.yaml",
        "name: f\nsteps:\n  - {name: a, type: load_jsonl, params: {path: broken.jsonl}}\n",
    );
    let out = run(d, &["run", &failing, "--db", "f.redb"]);
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("broken.jsonl line 1501"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exit_5_the_run_finished_but_its_push_is_behind() {
    let hub = MockHub::start(HubBehaviour {
        token: Some("hf_write".into()),
        ..HubBehaviour::default()
    });
    hub.set_faults(Faults {
        fail_commits: u32::MAX,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write(
        d,
        "p.yaml",
        "name: p\nsteps:\n  - {name: a, type: inline, params: {rows: [{x: 1}, {x: 2}]}}\npush: {repo: acme/data, final_wait_secs: 1, timeout_secs: 5}\n",
    );
    let out = distill(d)
        .args(["run", &p, "--db", "r.redb"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", "hf_write")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("distill push"), "{}", stderr(&out));
}

#[test]
fn exit_70_an_engine_bug_keeps_what_was_committed_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = slow_pipeline(d, 300);
    let out = distill(d)
        .args(["run", &p, "--db", "r.redb"])
        .env("DISTILL_FAULT", "engine-panic")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(70), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("injected engine fault") && err.contains("a bug in distill"),
        "{err}"
    );
    // Not taken for an invalid pipeline or a failed step.
    assert!(!err.contains("invalid"), "{err}");
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let rows = exported(d, "r.redb", "o");
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().enumerate().all(|(i, r)| r["id"] == i as u64));
}

/// Starts a slow run, waits until it has committed something, sends `signal`, and returns its
/// output (or `None` when it finished before the signal).
fn signalled_run(d: &Path, p: &str, signal: &str) -> Option<Output> {
    let child = distill(d)
        .args(["run", p, "--db", "r.redb"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let out = run(d, &["status", "--db", "r.redb", "--json"]);
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rows: u64 = s["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["rows"].as_u64().unwrap())
                .sum();
            if rows > 0 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run never committed anything"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        eprintln!("run finished before SIG{signal}");
        return None;
    }
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        signalled.elapsed()
    );
    Some(out)
}

fn stops_cleanly_and_resumes_exactly(signal: &str, expected: i32) {
    // A machine fast enough to finish the run before the signal gets a longer run; the test
    // fails rather than pass without a signal having stopped anything.
    for rows in [60_000, 240_000, 960_000] {
        let dir = tempfile::tempdir().unwrap();
        let p = slow_pipeline(dir.path(), rows);
        if let Some(out) = signalled_run(dir.path(), &p, signal) {
            return check_stopped_then_resumed(dir.path(), &p, rows, out, expected);
        }
    }
    panic!("every run finished before SIG{signal}");
}

fn check_stopped_then_resumed(d: &Path, p: &str, rows: usize, out: Output, expected: i32) {
    assert_eq!(code(&out), Some(expected), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopping"), "{}", stderr(&out));
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["status"], "stopped");
    let out = run(d, &["run", p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let resumed = exported(d, "r.redb", "o");
    assert_eq!(resumed.len(), rows);
    assert!(
        resumed
            .iter()
            .enumerate()
            .all(|(i, r)| r["id"] == i as u64 && r["t"] == format!("row {i}!"))
    );
}

#[test]
fn exit_130_ctrl_c_stops_cleanly_and_the_run_resumes_exactly() {
    stops_cleanly_and_resumes_exactly("INT", 130);
}

#[test]
fn exit_143_sigterm_stops_cleanly_and_the_run_resumes_exactly() {
    stops_cleanly_and_resumes_exactly("TERM", 143);
}

#[test]
fn sigterm_stops_a_run_waiting_on_a_slow_llm_within_seconds() {
    // Every request takes 12 s: a batch in flight when the signal comes cannot finish within
    // the 10 s allowed, so the run must give it up (its answers are asked again on resume).
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_secs(12),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<String> = (0..8)
        .map(|i| format!("{{id: {i}, instruction: q{i}}}"))
        .collect();
    let p = write(
        d,
        "llm.yaml",
        &format!(
            "name: llm\nsteps:\n  - {{name: load, type: inline, batch_size: 4, params: {{rows: [{}]}}}}\n  - {{name: gen, type: text_generation, after: [load], input_batch_size: 4, params: {{base_url: '{}', model: m, concurrency: 2, timeout_secs: 60}}}}\n",
            rows.join(", "),
            server.base_url()
        ),
    );
    let child = distill(d)
        .args(["run", &p, "--db", "r.redb"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // The endpoint check at load is request 1 (answered at once); then the chats go out.
    while server.count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no chat request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert_eq!(code(&out), Some(143), "{}", stderr(&out));
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["status"], "stopped", "{s}");
    let task = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["step"] == "gen")
        .unwrap();
    assert_eq!(task["rows"], 0, "no batch of gen was committed: {s}");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = slow_pipeline(d, 50);
    assert!(run(d, &["run", &p, "--db", "r.redb"]).status.success());
    for args in [
        vec!["status", "--db", "r.redb", "--json"],
        vec!["status", "--db", "r.redb"],
        vec!["info", p.as_str()],
    ] {
        // The reader is gone before distill writes its first byte.
        let mut child = distill(d)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // As a user types it: the shell's pipeline, distill's own exit status.
    let exe = env!("CARGO_BIN_EXE_distill");
    for cmd in [
        format!("'{exe}' status --db r.redb --json | head -c 10; echo \" ${{PIPESTATUS[0]}}\""),
        format!("'{exe}' info '{p}' | head -1; echo \" ${{PIPESTATUS[0]}}\""),
    ] {
        let out = Command::new("bash")
            .args(["-c", &cmd])
            .current_dir(d)
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(text.trim_end().ends_with(" 0"), "{cmd}: {text}");
        assert!(
            !stderr(&out).contains("panicked"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_failing_read_of_the_request_cache_stops_the_task_and_sends_no_request() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write(
        d,
        "llm.yaml",
        &format!(
            "name: llm\nsteps:\n  - {{name: load, type: inline, params: {{rows: [{{instruction: a}}, {{instruction: b}}]}}}}\n  - {{name: gen, type: text_generation, after: [load], params: {{base_url: '{}', model: m}}}}\n",
            server.base_url()
        ),
    );
    let out = distill(d)
        .args(["run", &p, "--db", "r.redb"])
        .env("DISTILL_FAULT", "cache-read")
        .output()
        .unwrap();
    let err = stderr(&out);
    // The database failed, not the step: exit 1, with the cause.
    assert_eq!(code(&out), Some(1), "{err}");
    assert!(
        err.contains("request cache") && err.contains("injected failure"),
        "{err}"
    );
    let chats = server
        .received()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count();
    assert_eq!(chats, 0, "a cache that cannot be read is not a miss");
    // With the cache readable again, the run resumes and answers every row.
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
