//! The real `distill` binary on fixtures/: the quickstart end to end, `info`, `status`, and
//! the errors a user meets (bad YAML, unknown step, missing column, cycle, another pipeline).

mod common;

use common::distill::{read_jsonl, root, run, stderr, stdout};
use std::collections::HashSet;
use std::path::Path;

fn quickstart() -> std::path::PathBuf {
    root().join("fixtures/pipelines/quickstart.yaml")
}

/// The quickstart pipeline written into `dir`, pointed at the local LLM server the tests use
/// (started if needed) and at the fixture data by absolute path.
fn quickstart_in(dir: &Path) -> String {
    let url = common::llm::smollm2_url();
    let text = std::fs::read_to_string(quickstart())
        .unwrap()
        .replace("http://127.0.0.1:18082/v1", url)
        .replace(
            "../data/stdlib_docs.jsonl",
            root()
                .join("fixtures/data/stdlib_docs.jsonl")
                .to_str()
                .unwrap(),
        );
    write(dir, "quickstart.yaml", &text)
}

/// What the quickstart must produce, computed here from the fixture without distill.
fn expected_pairs() -> Vec<serde_json::Value> {
    let rows = read_jsonl(&root().join("fixtures/data/stdlib_docs.jsonl"));
    let mut seen = HashSet::new();
    rows.into_iter()
        .filter(|r| r["kind"] != "class")
        .filter(|r| seen.insert(r["summary"].as_str().unwrap().to_owned()))
        .map(|r| {
            serde_json::json!({
                "instruction": format!(
                    "Explain in one sentence what `{}.{}` does in Python.",
                    r["module"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                ),
                "summary": r["summary"],
                "module": r["module"],
            })
        })
        .collect()
}

#[test]
fn quickstart_runs_end_to_end_and_exports_what_the_data_says() {
    let dir = tempfile::tempdir().unwrap();
    let q = quickstart_in(dir.path());
    let out = run(dir.path(), &["run", &q, "--db", "run.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("run finished"), "{}", stdout(&out));
    let out = run(
        dir.path(),
        &[
            "export", "--db", "run.redb", "--out", "ds", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pairs = read_jsonl(&dir.path().join("ds/pairs/train/data-00000.jsonl"));
    let expected = expected_pairs();
    assert!(
        expected.len() > 1000,
        "fixture too small: {}",
        expected.len()
    );
    assert_eq!(pairs.len(), expected.len());
    assert_eq!(pairs, expected);
    // The judged sample: 10 deduplicated pairs, each answered and rated by the local model.
    let judged = read_jsonl(&dir.path().join("ds/judged/train/data-00000.jsonl"));
    assert_eq!(judged.len(), 10);
    for row in &judged {
        assert!(expected.iter().any(|e| e["summary"] == row["summary"]));
        let answer = row["generations"][0].as_str().unwrap_or_default();
        assert!(!answer.trim().is_empty(), "{row}");
        assert_eq!(row["judge_model"], common::llm::SMOLLM2_MODEL, "{row}");
        let rating = row["ratings"][0].as_i64();
        assert!(rating.is_some_and(|r| (1..=5).contains(&r)), "{row}");
    }

    // A second run on the finished database does nothing and changes nothing.
    let out = run(dir.path(), &["run", &q, "--db", "run.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        dir.path(),
        &[
            "export", "--db", "run.redb", "--out", "ds2", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read_jsonl(&dir.path().join("ds2/pairs/train/data-00000.jsonl")),
        pairs
    );

    let out = run(dir.path(), &["status", "--db", "run.redb", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "finished");
    let steps = status["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 9);
    let pairs_step = steps.iter().find(|s| s["step"] == "pairs").unwrap();
    assert_eq!(pairs_step["rows"], expected.len() as u64);
    assert_eq!(pairs_step["state"], "finished");
    let out = run(dir.path(), &["status", "--db", "run.redb"]);
    assert!(stdout(&out).contains("finished"), "{}", stdout(&out));
}

#[test]
fn info_shows_stages_columns_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["info", quickstart().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "stage 0:",
        "stage 1:",
        "stage 2:",
        "dedup_references (global 'dedup'",
        "out: instruction, summary, module",
        "stage 3:",
        "judged (task 'judge'",
        "leaves: pairs, judged",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn refused(dir: &Path, yaml: &str, code: i32, needles: &[&str]) {
    let file = write(dir, "p.yaml", yaml);
    let out = run(dir, &["run", &file, "--db", "x.redb"]);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in needles {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
    assert!(
        !dir.join("x.redb").exists(),
        "an invalid pipeline must not create a run"
    );
}

#[test]
fn invalid_pipelines_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        d,
        "name: p\nsteps:\n  - name: [oops\n",
        3,
        &["p.yaml", "line"],
    );
    refused(
        d,
        "name: p\nsteps:\n  - name: a\n    type: teleport\n",
        3,
        &["'a'", "teleport", "load_jsonl"],
    );
    let rows = "params: {rows: [{text: hi}]}";
    refused(
        d,
        &format!(
            "name: p\nsteps:\n  - name: a\n    type: inline\n    {rows}\n  - name: b\n    type: keep_columns\n    after: [a]\n    params: {{columns: [missing]}}\n"
        ),
        3,
        &["'b'", "'missing'", "text"],
    );
    refused(
        d,
        "name: p\nsteps:\n  - name: a\n    type: keep_columns\n    after: [b]\n    params: {columns: [x]}\n  - name: b\n    type: keep_columns\n    after: [a]\n    params: {columns: [x]}\n",
        3,
        &["cycle", "a", "b"],
    );
    refused(
        d,
        "name: p\nsteps:\n  - name: a\n    type: load_jsonl\n    params: {path: nowhere.jsonl}\n",
        3,
        &["'a'", "nowhere.jsonl"],
    );
}

#[test]
fn another_pipeline_on_an_existing_run_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let one = write(
        d,
        "one.yaml",
        "name: one\nsteps:\n  - name: a\n    type: inline\n    params: {rows: [{x: 1}]}\n",
    );
    let two = write(
        d,
        "two.yaml",
        "name: two\nsteps:\n  - name: a\n    type: inline\n    params: {rows: [{x: 2}]}\n",
    );
    assert!(run(d, &["run", &one, "--db", "r.redb"]).status.success());
    let out = run(d, &["run", &two, "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another pipeline") && stderr(&out).contains("--db"));
}

#[test]
fn a_damaged_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "junk.redb", &"not a database ".repeat(500));
    let out = run(d, &["status", "--db", "junk.redb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("junk.redb") && stderr(&out).contains("not a distill run database"),
        "{}",
        stderr(&out)
    );
    let out = run(d, &["export", "--db", "missing.redb", "--out", "o"]);
    assert!(
        stderr(&out).contains("missing.redb") && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ctrl_c_stops_cleanly_and_the_same_command_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = (0..20000)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
        .collect();
    std::fs::write(d.join("data.jsonl"), data).unwrap();
    let yaml = "name: slow\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 7\n    params: {path: data.jsonl}\n  - name: fmt\n    type: format_text\n    after: [load]\n    input_batch_size: 5\n    params: {template: \"{{ text }}!\", output: t}\n";
    let p = write(d, "p.yaml", yaml);
    let child = common::distill::distill(d)
        .args(["run", &p, "--db", "r.redb"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run has committed something, then interrupt it like Ctrl-C does.
    let started = std::time::Instant::now();
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
            started.elapsed().as_secs() < 30,
            "the run never committed anything"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        // The run finished before the signal arrived; nothing to check about stopping.
        eprintln!("run finished before SIGINT");
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopping"), "{}", stderr(&out));
    let status = run(d, &["status", "--db", "r.redb", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["status"], "stopped");
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success());
    let rows = read_jsonl(&d.join("o/fmt/train/data-00000.jsonl"));
    assert_eq!(rows.len(), 20000);
    assert!(rows.iter().enumerate().all(|(i, r)| r["id"] == i as u64));
}
