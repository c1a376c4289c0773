//! The distiset: Parquet read back by pyarrow and `datasets`, exports of a live run, a failed
//! leaf, and `status` while a run goes on.

mod common;

use common::distill::{distill, read_jsonl, run, stderr, stdout};
use common::python::python;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// Rows whose columns exercise every inference rule: ints, floats, int+float, nulls, mixed
/// kinds, nested lists and maps, unicode.
fn write_typed_fixture(dir: &Path) {
    let mut lines = Vec::new();
    for i in 0..300i64 {
        let mixed = if i % 3 == 0 {
            serde_json::json!(i)
        } else {
            serde_json::json!(format!("m{i}"))
        };
        let score = if i % 2 == 0 {
            serde_json::json!(i)
        } else {
            serde_json::json!(i as f64 + 0.5)
        };
        let maybe = if i % 4 == 0 {
            serde_json::Value::Null
        } else {
            serde_json::json!(format!("é{i}"))
        };
        lines.push(serde_json::json!({
            "id": i,
            "score": score,
            "mixed": mixed,
            "maybe": maybe,
            "tags": [format!("t{}", i % 3), "x"],
            "meta": {"rank": i % 7, "note": if i % 5 == 0 { serde_json::Value::Null } else { serde_json::json!("ok") }},
            "flag": i % 2 == 0,
            "empty": serde_json::Value::Null,
        }).to_string());
    }
    std::fs::write(dir.join("typed.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("typed.yaml"),
        "name: typed\ndescription: Every column type.\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 40\n    params: {path: typed.jsonl}\n  - name: prompt\n    type: format_text\n    after: [load]\n    input_batch_size: 25\n    params: {template: \"{{ id }} {{ tags | join('/') }}\", output: prompt}\n  - name: unique\n    type: dedup\n    after: [load]\n    params: {columns: [mixed]}\n",
    )
    .unwrap();
}

#[test]
fn parquet_export_is_read_by_pyarrow_and_datasets_with_the_jsonl_values() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_typed_fixture(d);
    let out = run(d, &["run", "typed.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(d, &["export", "--db", "r.redb", "--out", "pq"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "js", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // JSONL export equals the source data for the leaf that keeps rows as loaded + prompt.
    let source = read_jsonl(&d.join("typed.jsonl"));
    let prompt = read_jsonl(&d.join("js/prompt/train/data-00000.jsonl"));
    assert_eq!(prompt.len(), source.len());
    for (p, s) in prompt.iter().zip(&source) {
        for (k, v) in s.as_object().unwrap() {
            assert_eq!(&p[k], v, "column {k}");
        }
    }
    let check = Command::new(&py)
        .arg(common::distill::root().join("tests/python/check_distiset.py"))
        .arg(d.join("pq"))
        .arg(d.join("js"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", d.join("hf-cache"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let configs: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let prompt = configs.iter().find(|c| c["config"] == "prompt").unwrap();
    assert_eq!(prompt["rows"], 300);
    let cols = &prompt["columns"];
    assert_eq!(cols["id"], "int64");
    assert_eq!(cols["score"], "double");
    assert_eq!(cols["mixed"], "string");
    assert_eq!(cols["tags"], "list<item: string>");
    assert_eq!(cols["meta"], "struct<rank: int64, note: string>");
    assert_eq!(cols["flag"], "bool");
    let unique = configs.iter().find(|c| c["config"] == "unique").unwrap();
    assert_eq!(unique["rows"], 300, "mixed values are all distinct");
    // The card lists the configs for `datasets`, with each leaf's status.
    let card = std::fs::read_to_string(d.join("pq/README.md")).unwrap();
    assert!(card.contains("config_name: prompt") && card.contains("path: prompt/train/*.parquet"));
    assert!(card.contains("| prompt | finished | 300 |"), "{card}");
}

/// The live pipeline: 30,000 rows through two leaves (`fmt`, `odd`), and a third leaf (`ask`)
/// that sends 40 prompts to `llm`. Started with [`held_llm`], the mock answers the first 10
/// and holds the rest until the test opens its gate: the run stays in progress (the fast leaves
/// done, `ask` part-way) for as long as the test needs, however fast the engine gets.
fn live_pipeline(dir: &Path, llm: &MockLlm) {
    let data: String = (0..30000)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    let prompts: String = (0..40)
        .map(|i| format!("{{\"instruction\": \"prompt {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "name: live\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 9\n    params: {{path: data.jsonl}}\n  - name: fmt\n    type: format_text\n    after: [load]\n    input_batch_size: 7\n    params: {{template: \"{{{{ text }}}}!\", output: t}}\n  - name: odd\n    type: filter\n    after: [load]\n    input_batch_size: 11\n    params: {{column: id, op: ge, value: 0}}\n  - name: prompts\n    type: load_jsonl\n    batch_size: 2\n    params: {{path: prompts.jsonl}}\n  - name: ask\n    type: text_generation\n    after: [prompts]\n    input_batch_size: 2\n    params: {{base_url: '{}', model: m, concurrency: 2}}\n",
            llm.base_url()
        ),
    )
    .unwrap();
}

/// A mock LLM that answers 10 requests and holds the rest until `open_gate`.
fn held_llm() -> MockLlm {
    MockLlm::start(Behaviour {
        hold_after: Some(10),
        ..Behaviour::default()
    })
}

#[test]
fn exports_of_a_live_run_are_consistent_prefixes_and_the_last_equals_the_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let llm = held_llm();
    live_pipeline(d, &llm);
    let mut child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut snapshots = Vec::new();
    let mut live_status_seen = false;
    let mut n = 0;
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no live export and status in progress after 2 minutes"
        );
        n += 1;
        let out = run(
            d,
            &[
                "export",
                "--db",
                "r.redb",
                "--out",
                &format!("live-{n}"),
                "--format",
                "jsonl",
            ],
        );
        if !out.status.success() {
            // Only acceptable before anything is committed.
            let err = stderr(&out);
            assert!(
                err.contains("nothing to export") || err.contains("does not exist"),
                "{err}"
            );
            continue;
        }
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.join(format!("live-{n}/distiset.json"))).unwrap(),
        )
        .unwrap();
        snapshots.push((n, meta));
        if !live_status_seen {
            let st = run(d, &["status", "--db", "r.redb", "--json"]);
            let s: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
            if s["status"] == "running" {
                let text = stdout(&run(d, &["status", "--db", "r.redb"]));
                assert!(text.contains("running") && text.contains("fmt"), "{text}");
                live_status_seen = s["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["rows"].as_u64() > Some(0));
            }
        }
        let caught_live = snapshots.last().is_some_and(|(_, meta)| {
            meta["leaves"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["status"] == "running" && l["rows"].as_u64() > Some(0))
        });
        if live_status_seen && caught_live {
            llm.open_gate();
        }
    }
    assert!(child.wait().unwrap().success());
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "final", "--format", "jsonl",
        ],
    );
    assert!(out.status.success());
    let final_fmt = std::fs::read_to_string(d.join("final/fmt/train/data-00000.jsonl")).unwrap();
    let final_odd = std::fs::read_to_string(d.join("final/odd/train/data-00000.jsonl")).unwrap();
    let final_ask = std::fs::read_to_string(d.join("final/ask/train/data-00000.jsonl")).unwrap();
    let mut running_seen = 0;
    for (n, meta) in &snapshots {
        for (leaf, full) in [
            ("fmt", &final_fmt),
            ("odd", &final_odd),
            ("ask", &final_ask),
        ] {
            let text =
                std::fs::read_to_string(d.join(format!("live-{n}/{leaf}/train/data-00000.jsonl")))
                    .unwrap();
            let entry = meta["leaves"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == leaf)
                .unwrap();
            assert_eq!(
                entry["rows"].as_u64().unwrap() as usize,
                text.lines().count()
            );
            // Whole batches, in order: every live export is a prefix of the final output.
            assert!(
                full.starts_with(&text),
                "export {n} of {leaf} is not a prefix of the final output"
            );
            running_seen += usize::from(entry["status"] == "running");
        }
    }
    assert!(
        running_seen > 0,
        "no export caught the run in progress ({} exports)",
        snapshots.len()
    );
    assert!(live_status_seen, "status never saw the run in progress");
    let last_live = snapshots.last().unwrap();
    eprintln!(
        "{} live exports; last at log position {}",
        snapshots.len(),
        last_live.1["snapshot_log"]
    );
    assert_eq!(final_fmt.lines().count(), 30000);
    assert_eq!(final_ask.lines().count(), 40);
}

#[test]
fn a_failed_leaf_is_exported_with_its_rows_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut data = String::new();
    for i in 0..200 {
        // Row 150 has a string where the list should be: expand_list fails on that batch.
        let xs = if i == 150 {
            "\"oops\"".to_string()
        } else {
            format!("[{i}]")
        };
        data.push_str(&format!("{{\"id\": {i}, \"xs\": {xs}}}\n"));
    }
    std::fs::write(d.join("d.jsonl"), data).unwrap();
    std::fs::write(
        d.join("p.yaml"),
        "name: failing\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 10\n    params: {path: d.jsonl}\n  - name: items\n    type: expand_list\n    after: [load]\n    input_batch_size: 10\n    params: {column: xs, output: x}\n  - name: copy\n    type: keep_columns\n    after: [load]\n    input_batch_size: 10\n    params: {columns: [id]}\n",
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("'items'") && stderr(&out).contains("row 0"),
        "{}",
        stderr(&out)
    );
    let out = run(d, &["export", "--db", "r.redb", "--out", "o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("o/distiset.json")).unwrap()).unwrap();
    assert_eq!(meta["run_status"], "failed");
    let items = meta["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "items")
        .unwrap();
    assert_eq!(items["status"], "failed");
    assert!(
        items["error"].as_str().unwrap().contains("not a list"),
        "{items}"
    );
    let rows = items["rows"].as_u64().unwrap();
    assert!(
        rows <= 150 && rows % 10 == 0,
        "only whole committed batches before row 150: {rows}"
    );
    let card = std::fs::read_to_string(d.join("o/README.md")).unwrap();
    assert!(card.contains("| items | failed |"), "{card}");
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(
        status.contains("failed") && status.contains("not a list"),
        "{status}"
    );
    // An export never replaces a directory that is not a distill export.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), "keep me").unwrap();
    let out = run(d, &["export", "--db", "r.redb", "--out", "mine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a distill export"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("mine/notes.txt")).unwrap(),
        "keep me"
    );
    // Re-exporting over an earlier export replaces it.
    assert!(
        run(
            d,
            &[
                "export", "--db", "r.redb", "--out", "o", "--format", "jsonl"
            ]
        )
        .status
        .success()
    );
    assert!(d.join("o/copy/train/data-00000.jsonl").exists());
    assert!(!d.join("o/copy/train/data-00000.parquet").exists());
}

#[test]
fn nothing_to_export_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("d.jsonl"), "{\"xs\": 1}\n").unwrap();
    std::fs::write(
        d.join("p.yaml"),
        "name: n\nsteps:\n  - name: load\n    type: load_jsonl\n    params: {path: d.jsonl}\n  - name: items\n    type: expand_list\n    after: [load]\n    params: {column: xs}\n",
    )
    .unwrap();
    assert_eq!(
        run(d, &["run", "p.yaml", "--db", "r.redb"]).status.code(),
        Some(4)
    );
    let out = run(d, &["export", "--db", "r.redb", "--out", "o"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing to export") && stderr(&out).contains("failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_watch_follows_a_live_run_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let llm = held_llm();
    live_pipeline(d, &llm);
    let mut child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !d.join("r.redb").exists() {
        assert!(
            started.elapsed().as_secs() < 30,
            "the run never created its database"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut watch = distill(d)
        .args(["status", "--db", "r.redb", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The held LLM answers go out once watch has shown the run in progress.
    let mut text = String::new();
    for line in BufReader::new(watch.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // After a minute without it, they go anyway and the asserts below fail.
        if line.starts_with("run ") && line.contains("running") || started.elapsed().as_secs() > 60
        {
            llm.open_gate();
        }
        text.push_str(&line);
        text.push('\n');
    }
    let watch = watch.wait_with_output().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(watch.status.success(), "{}", stderr(&watch));
    let reports: Vec<&str> = text.lines().filter(|l| l.starts_with("run ")).collect();
    assert!(reports.len() >= 2, "watch printed one report only:\n{text}");
    assert!(
        reports.iter().any(|r| r.contains("running")),
        "watch never saw the run in progress:\n{text}"
    );
    assert!(reports.last().unwrap().contains("finished"), "{text}");
    assert!(text.contains("rows/s"), "{text}");
}
