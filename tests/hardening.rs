//! Regressions of the hardening pass (164 bad inputs against the CLI), through the real binary:
//! pipelines that must be refused before anything runs, inputs read as documented, and what a
//! resumed run reports. Each test is named after what it guards.

mod common;

use common::distill::{distill, read_jsonl, run, stderr, stdout};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;
use std::process::Output;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `distill run` of `yaml` must exit 3 naming every needle, and create no database.
fn refused(dir: &Path, yaml: &str, needles: &[&str]) {
    let file = write(dir, "p.yaml", yaml);
    let out = run(dir, &["run", &file, "--db", "x.redb"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{yaml}\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !dir.join("x.redb").exists(),
        "a refused pipeline made a run"
    );
}

fn inline(name: &str, rows: &str) -> String {
    format!("  - {{name: {name}, type: inline, params: {{rows: {rows}}}}}\n")
}

#[test]
fn step_names_are_a_closed_alphabet_unique_ignoring_case() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in [
        "'../../escaped_leaf'",
        "/tmp/x",
        "'a/train'",
        "'-dash'",
        "'sp ace'",
        "''",
        &"n".repeat(65),
    ] {
        refused(
            d,
            &format!("name: p\nsteps:\n{}", inline(name, "[{x: 1}]")),
            &["a step name is 1 to 64 letters, digits"],
        );
        assert!(!Path::new("/tmp/x").join("train").exists());
    }
    refused(
        d,
        &format!(
            "name: p\nsteps:\n{}{}",
            inline("leaf", "[{x: 1}]"),
            inline("Leaf", "[{x: 2}]")
        ),
        &["'Leaf'", "differs from step 'leaf' only in case"],
    );
    let ok = write(
        d,
        "ok.yaml",
        &format!("name: p\nsteps:\n{}", inline("A-z_0-9", "[{x: 1}]")),
    );
    assert!(run(d, &["run", &ok, "--db", "ok.redb"]).status.success());
}

#[test]
fn sizes_beyond_their_bounds_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for size in ["18446744073709551615", "1000000000000", "100001", "0"] {
        refused(
            d,
            &format!(
                "name: p\nsteps:\n  - {{name: a, type: inline, batch_size: {size}, params: {{rows: [{{x: 1}}]}}}}\n"
            ),
            &["'a'", "batch size must be from 1 to 100000"],
        );
        refused(
            d,
            &format!(
                "name: p\nsteps:\n{}  - {{name: b, type: keep_columns, after: [a], input_batch_size: {size}, params: {{columns: [x]}}}}\n",
                inline("a", "[{x: 1}]")
            ),
            &["'b'", "batch size must be from 1 to 100000"],
        );
    }
}

#[test]
fn a_batch_size_where_it_means_nothing_and_an_empty_pipeline_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        d,
        &format!(
            "name: p\nsteps:\n{}  - {{name: b, type: keep_columns, after: [a], batch_size: 5, params: {{columns: [x]}}}}\n",
            inline("a", "[{x: 1}]")
        ),
        &["'b'", "only generators take `batch_size`"],
    );
    refused(
        d,
        "name: p\nsteps:\n  - {name: a, type: inline, input_batch_size: 5, params: {rows: [{x: 1}]}}\n",
        &["'a'", "a generator has no input"],
    );
    refused(d, "name: p\nsteps: []\n", &["at least one step"]);
}

#[test]
fn a_parameter_written_twice_or_params_that_are_not_a_mapping_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        d,
        "name: p\nsteps:\n  - name: a\n    type: inline\n    params:\n      rows: [{x: 1}]\n      rows: [{x: 2}]\n",
        &["p.yaml", "`rows` is written twice"],
    );
    refused(
        d,
        "name: p\nsteps:\n  - name: a\n    type: inline\n    params: [rows, 1]\n",
        &["`params` must be a mapping", "not a list"],
    );
}

#[test]
fn a_csv_header_with_a_column_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("dup.csv"), "a,a,b\n1,2,3\n").unwrap();
    refused(
        d,
        "name: p\nsteps:\n  - {name: a, type: load_csv, params: {path: dup.csv}}\n",
        &["dup.csv", "'a' twice"],
    );
}

#[test]
fn jsonl_with_a_byte_order_mark_and_columns_after_the_first_row_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("d.jsonl"),
        "\u{feff}{\"id\": 1}\n{\"id\": 2, \"late\": \"x\"}\n",
    )
    .unwrap();
    let p = write(
        d,
        "p.yaml",
        "name: p\nsteps:\n  - {name: load, type: load_jsonl, params: {path: d.jsonl}}\n  - {name: keep, type: keep_columns, after: [load], params: {columns: [id, late]}}\n",
    );
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read_jsonl(&d.join("o/keep/train/data-00000.jsonl")),
        vec![
            serde_json::json!({"id": 1, "late": null}),
            serde_json::json!({"id": 2, "late": "x"})
        ]
    );
}

#[test]
fn combine_columns_refuses_branches_that_cannot_pair_by_position_and_pairs_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<String> = (0..6).map(|i| format!("{{id: {i}, x: {i}}}")).collect();
    let source = format!(
        "name: p\nsteps:\n{}  - {{name: a, type: format_text, after: [src], params: {{template: 'A{{{{ id }}}}', output: v}}}}\n  - {{name: odd, type: filter, after: [src], params: {{column: x, op: ne, value: 3}}}}\n  - {{name: b, type: format_text, after: [odd], params: {{template: 'B{{{{ id }}}}', output: v}}}}\n",
        inline("src", &format!("[{}]", rows.join(", ")))
    );
    refused(
        d,
        &format!(
            "{source}  - {{name: both, type: combine_columns, after: [a, b], params: {{columns: [v]}}}}\n"
        ),
        &["'both'", "by position", "'odd'", "on: [COLUMNS]"],
    );
    let p = write(
        d,
        "keyed.yaml",
        &format!(
            "{source}  - {{name: both, type: combine_columns, after: [a, b], params: {{columns: [v], on: [id]}}}}\n"
        ),
    );
    let out = run(d, &["run", &p, "--db", "k.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "k.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let joined = read_jsonl(&d.join("o/both/train/data-00000.jsonl"));
    let pairs: Vec<(u64, serde_json::Value)> = joined
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["merged_v"].clone()))
        .collect();
    let expected: Vec<(u64, serde_json::Value)> = [0, 1, 2, 4, 5]
        .iter()
        .map(|&i| (i, serde_json::json!([format!("A{i}"), format!("B{i}")])))
        .collect();
    assert_eq!(pairs, expected, "row 3 is filtered on one side: no pair");
    // Two branches of one source through row-keeping steps still pair by position.
    let p = write(
        d,
        "aligned.yaml",
        &format!(
            "name: p\nsteps:\n{}  - {{name: a, type: format_text, after: [src], params: {{template: 'A{{{{ id }}}}', output: v}}}}\n  - {{name: b, type: format_text, after: [src], params: {{template: 'B{{{{ id }}}}', output: v}}}}\n  - {{name: both, type: combine_columns, after: [a, b], params: {{columns: [v]}}}}\n",
            inline("src", &format!("[{}]", rows.join(", ")))
        ),
    );
    let out = run(d, &["run", &p, "--db", "a.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn failing_llm_pipeline(d: &Path, port: u16) -> String {
    let rows: Vec<String> = (0..12).map(|i| format!("{{instruction: q{i}}}")).collect();
    write(
        d,
        "llm.yaml",
        &format!(
            "name: llm\nsteps:\n{}  - {{name: answer, type: text_generation, after: [load], input_batch_size: 4, params: {{base_url: 'http://127.0.0.1:{port}/v1', model: m, max_attempts: 1, on_failure: fail}}}}\n",
            inline("load", &format!("[{}]", rows.join(", ")))
        ),
    )
}

fn status_json(d: &Path, db: &str) -> serde_json::Value {
    let out = run(d, &["status", "--db", db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_failed_leaf_fixed_and_resumed_is_finished_without_its_old_error() {
    // The endpoint answers 4 chats (batch 0), then fails: the run fails on batch 1.
    let flaky = MockLlm::start(Behaviour {
        fail_chats_after: Some(4),
        ..Behaviour::default()
    });
    let port = flaky.port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = failing_llm_pipeline(d, port);
    // One worker: batches in order, so the failing one is known.
    let first = run(d, &["run", &p, "--db", "r.redb", "--workers", "1"]);
    assert_eq!(first.status.code(), Some(4), "{}", stderr(&first));
    let failed = status_json(d, "r.redb");
    let step = &failed["steps"][1];
    assert_eq!(step["state"], "failed", "{failed}");
    assert!(
        step["error"].as_str().unwrap().contains("HTTP 500"),
        "{failed}"
    );
    // Resumed unfixed, the same batch fails, and the message names the same number.
    drop(flaky);
    let down = MockLlm::start_on(
        port,
        Behaviour {
            fail_chats_after: Some(0),
            ..Behaviour::default()
        },
    );
    let again = run(d, &["run", &p, "--db", "r.redb", "--workers", "1"]);
    assert_eq!(again.status.code(), Some(4), "{}", stderr(&again));
    let batch = |out: &Output| {
        stderr(out)
            .split("failed on batch ")
            .nth(1)
            .and_then(|t| t.split(':').next())
            .map(str::to_owned)
    };
    assert_eq!(batch(&first).as_deref(), Some("1"), "{}", stderr(&first));
    assert_eq!(batch(&again), batch(&first), "{}", stderr(&again));
    // Fixed: the endpoint answers again. The resumed run finishes the leaf, and nothing says
    // it failed any more.
    drop(down);
    let _healthy = MockLlm::start_on(port, Behaviour::default());
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fixed = status_json(d, "r.redb");
    let step = &fixed["steps"][1];
    assert_eq!(
        (
            step["state"].as_str(),
            step["error"].is_null(),
            fixed["status"].as_str()
        ),
        (Some("finished"), true, Some("finished")),
        "{fixed}"
    );
    let out = run(d, &["export", "--db", "r.redb", "--out", "o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("o/distiset.json")).unwrap()).unwrap();
    assert_eq!(meta["leaves"][0]["status"], "finished", "{meta}");
    assert_eq!(meta["leaves"][0]["rows"], 12, "{meta}");
    assert!(meta["leaves"][0]["error"].is_null(), "{meta}");
    let card = std::fs::read_to_string(d.join("o/README.md")).unwrap();
    assert!(
        !card.contains("failed") && !card.contains("HTTP 500"),
        "{card}"
    );
}

#[test]
fn a_missing_pipeline_file_is_named_once_and_workers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(d, &["info", "nope.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("nope.yaml"), "{err}");
    let ok = write(
        d,
        "ok.yaml",
        &format!("name: p\nsteps:\n{}", inline("a", "[{x: 1}]")),
    );
    let out = run(d, &["run", &ok, "--db", "r.redb", "--workers", "100000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!d.join("r.redb").exists());
}

#[test]
fn status_watch_json_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write(
        d,
        "ok.yaml",
        &format!("name: p\nsteps:\n{}", inline("a", "[{x: 1}]")),
    );
    assert!(run(d, &["run", &ok, "--db", "r.redb"]).status.success());
    let out = distill(d)
        .args(["status", "--db", "r.redb", "--json", "--watch"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one object per line: {text}");
    let s: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(s["status"], "finished");
}

/// Batch events per step in the log of `db` (read with the storage crate).
fn batch_events(db: &Path) -> std::collections::BTreeMap<String, usize> {
    let reader = distill_storage::RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for entry in snap.log_from(0).unwrap() {
        if let distill_storage::Event::Batch { step, .. } = entry.unwrap().event {
            *counts.entry(step).or_default() += 1;
        }
    }
    counts
}

fn three_steps(d: &Path, second: &str) -> String {
    three_steps_with(d, "Q: {{ text }}", second)
}

/// Three steps in one stage, keeping their intermediate batches (by default a step's consumed
/// batches are reclaimed, and an edit within the stage runs the stage again: tested in
/// `engine/tests/run.rs`).
fn three_steps_with(d: &Path, first: &str, second: &str) -> String {
    write(
        d,
        "p.yaml",
        &format!(
            "name: edit\nkeep_intermediate: true\nsteps:\n  - {{name: load, type: load_jsonl, batch_size: 10, params: {{path: data.jsonl}}}}\n  - {{name: first, type: format_text, after: [load], input_batch_size: 10, params: {{template: '{first}', output: q}}}}\n  - {{name: second, type: format_text, after: [first], input_batch_size: 10, params: {{template: '{second}', output: a}}}}\n"
        ),
    )
}

fn leaf(d: &Path, db: &str, out: &str) -> Vec<serde_json::Value> {
    let o = run(
        d,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    read_jsonl(&d.join(out).join("second/train/data-00000.jsonl"))
}

#[test]
fn a_fixed_pipeline_keeps_the_steps_before_the_edit_and_recomputes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = (0..95)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
        .collect();
    std::fs::write(d.join("data.jsonl"), data).unwrap();
    let p = three_steps(d, "A: {{ q }}");
    assert!(run(d, &["run", &p, "--db", "r.redb"]).status.success());
    let before = batch_events(&d.join("r.redb"));

    // The user fixes the template of the last step.
    let p = three_steps(d, "Answer: {{ q }}");
    let dry = run(d, &["run", &p, "--db", "r.redb", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stdout(&dry);
    for needle in [
        "load: kept (10 batches)",
        "first: kept (10 batches)",
        "second: changed, 10 batches dropped",
        "nothing changed",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    assert_eq!(
        batch_events(&d.join("r.redb")),
        before,
        "the dry run changed the log"
    );

    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("load: kept") && err.contains("second: changed"),
        "{err}"
    );
    let after = batch_events(&d.join("r.redb"));
    assert_eq!(after["load"], before["load"], "load was recomputed");
    assert_eq!(after["first"], before["first"], "first was recomputed");
    assert_eq!(after["second"], 2 * before["second"]);
    // The output is exactly a fresh run's of the fixed pipeline.
    assert!(run(d, &["run", &p, "--db", "fresh.redb"]).status.success());
    let fixed = leaf(d, "r.redb", "o1");
    assert_eq!(fixed, leaf(d, "fresh.redb", "o2"));
    assert_eq!(fixed.len(), 95);
    assert_eq!(fixed[3]["a"], "Answer: Q: row 3");
}

#[test]
fn a_step_edited_in_the_middle_is_recomputed_with_everything_after_it_and_nothing_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = (0..95)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
        .collect();
    std::fs::write(d.join("data.jsonl"), data).unwrap();
    let p = three_steps(d, "A: {{ q }}");
    assert!(run(d, &["run", &p, "--db", "r.redb"]).status.success());
    let before = batch_events(&d.join("r.redb"));

    // The user fixes the template of the middle step: the last step depends on it.
    let p = three_steps_with(d, "Question: {{ text }}", "A: {{ q }}");
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "load: kept (10 batches)",
        "first: changed, 10 batches dropped",
        "second: after changed step 'first', 10 batches dropped",
    ] {
        assert!(err.contains(needle), "missing '{needle}' in:\n{err}");
    }
    let after = batch_events(&d.join("r.redb"));
    assert_eq!(after["load"], before["load"], "load was recomputed");
    assert_eq!(after["first"], 2 * before["first"]);
    assert_eq!(after["second"], 2 * before["second"]);
    assert!(run(d, &["run", &p, "--db", "fresh.redb"]).status.success());
    let fixed = leaf(d, "r.redb", "o1");
    assert_eq!(fixed, leaf(d, "fresh.redb", "o2"));
    assert_eq!(fixed.len(), 95);
    assert_eq!(fixed[3]["a"], "A: Question: row 3");
}

#[test]
fn an_input_file_changed_under_a_run_is_refused_or_recomputed_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = |first: usize| -> String {
        (first..first + 40)
            .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
            .collect()
    };
    std::fs::write(d.join("data.jsonl"), rows(1)).unwrap();
    let p = three_steps(d, "A: {{ q }}");
    assert!(run(d, &["run", &p, "--db", "r.redb"]).status.success());
    // A row inserted at the top: resuming at the old offsets would duplicate a row.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(d.join("data.jsonl"), rows(0)).unwrap();
    let out = run(d, &["run", &p, "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in ["'load'", "input changed", "--new", "--allow-changed-inputs"] {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
    let out = run(d, &["run", &p, "--db", "r.redb", "--allow-changed-inputs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("load: its input changed"),
        "{}",
        stderr(&out)
    );
    let ids: Vec<u64> = leaf(d, "r.redb", "o")
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..40).collect::<Vec<u64>>(),
        "every row once, none twice"
    );
    // And then the same input resumes as before.
    assert!(run(d, &["run", &p, "--db", "r.redb"]).status.success());
}

#[test]
fn a_change_of_operational_settings_resumes_as_if_nothing_changed() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let llm = |concurrency: u32, timeout: u32| {
        write(
            d,
            "llm.yaml",
            &format!(
                "name: llm\nsteps:\n{}  - {{name: answer, type: text_generation, after: [load], params: {{base_url: '{}', model: m, concurrency: {concurrency}, timeout_secs: {timeout}, max_attempts: 3}}}}\n",
                inline(
                    "load",
                    "[{instruction: a}, {instruction: b}, {instruction: c}]"
                ),
                server.base_url()
            ),
        )
    };
    assert!(
        run(d, &["run", &llm(4, 30), "--db", "r.redb"])
            .status
            .success()
    );
    let asked = server.count();
    let before = batch_events(&d.join("r.redb"));
    let out = run(d, &["run", &llm(1, 60), "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed only in settings that change no row"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        batch_events(&d.join("r.redb")),
        before,
        "nothing recomputed"
    );
    // The finished task is not even loaded again: no request at all.
    assert_eq!(server.count(), asked);
}

#[test]
fn integers_beyond_i64_stay_exact_and_beyond_u64_are_refused_with_column_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines = [
        r#"{"id": 1, "hash": 18446744073709551615}"#,
        r#"{"id": 2, "hash": 7}"#,
        r#"{"id": 3, "hash": 9223372036854775808}"#,
    ];
    write(d, "big.jsonl", &(lines.join("\n") + "\n"));
    let yaml = "name: big\nsteps:\n  - {name: load, type: load_jsonl, params: {path: big.jsonl}}\n";
    write(d, "p.yaml", yaml);
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "js", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(d.join("js/load/train/data-00000.jsonl")).unwrap();
    assert!(text.contains("18446744073709551615") && text.contains("9223372036854775808"));
    let out = run(d, &["export", "--db", "r.redb", "--out", "pq"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let check = std::process::Command::new(common::python::python())
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); \
             print(t.schema.field('hash').type, t.column('hash').to_pylist())",
        ])
        .arg(d.join("pq/load/train/data-00000.parquet"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "uint64 [18446744073709551615, 7, 9223372036854775808]",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // One digit more is beyond every 64-bit type: refused, naming the column and the line.
    write(
        d,
        "big.jsonl",
        &(lines.join("\n") + "\n{\"id\": 4, \"hash\": 184467440737095516150}\n"),
    );
    let out = run(d, &["run", "p.yaml", "--db", "new.redb"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    for needle in ["line 4", "'hash'", "184467440737095516150", "64-bit"] {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
}

#[test]
fn a_run_whose_process_died_is_interrupted_and_status_watch_ends() {
    let server = MockLlm::start(Behaviour {
        latency: std::time::Duration::from_millis(200),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = (0..40)
        .map(|i| format!("{{\"instruction\": \"row {i}\"}}\n"))
        .collect();
    write(d, "data.jsonl", &data);
    write(
        d,
        "p.yaml",
        &format!(
            "name: slow\nsteps:\n  - {{name: load, type: load_jsonl, params: {{path: data.jsonl}}}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    input_batch_size: 2\n    params: {{base_url: '{}', model: m, concurrency: 1}}\n",
            server.base_url()
        ),
    );
    let mut child = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while server.count() < 4 {
        assert!(started.elapsed().as_secs() < 30, "the run asked nothing");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let out = run(d, &["status", "--db", "r.redb", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "interrupted", "{status}");
    // --watch ends on it instead of printing `running` forever.
    let mut watch = distill(d)
        .args(["status", "--db", "r.redb", "--watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(code) = watch.try_wait().unwrap() {
            break code;
        }
        if started.elapsed().as_secs() > 20 {
            watch.kill().unwrap();
            panic!("status --watch did not end on an interrupted run");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(code.success());
    // The same command resumes it to the end.
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(d, &["status", "--db", "r.redb", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "finished", "{status}");
}

#[test]
fn a_damaged_or_truncated_database_is_one_clear_error_for_export_run_and_status_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"text\": \"{}\"}}\n",
                format!("row {i} ").repeat(20)
            )
        })
        .collect();
    write(d, "d.jsonl", &data);
    write(
        d,
        "p.yaml",
        "name: d\nsteps:\n  - {name: load, type: load_jsonl, batch_size: 100, params: {path: d.jsonl}}\n  - {name: fmt, type: format_text, after: [load], params: {template: '{{ text }}!', output: t}}\n",
    );
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Overwrite 3000 bytes every 20 kB past the header, as a failing disk would (the file is
    // small: its batches are compressed).
    let mut bytes = std::fs::read(d.join("r.redb")).unwrap();
    let len = bytes.len();
    for start in (65536..len).step_by(20_000) {
        let end = (start + 3000).min(len);
        bytes[start..end].fill(0xff);
    }
    let intact = std::fs::read(d.join("r.redb")).unwrap();
    std::fs::write(d.join("r.redb"), &bytes).unwrap();
    // And a copy cut 100 bytes short: export, run and status agree that it is damaged (the
    // pages status reads are intact, but the file is shorter than its header says).
    std::fs::write(d.join("cut.redb"), &intact[..intact.len() - 100]).unwrap();
    for db in ["r.redb", "cut.redb"] {
        let mut commands = vec![
            vec!["export", "--db", db, "--out", "out"],
            vec!["run", "p.yaml", "--db", db],
        ];
        if db == "cut.redb" {
            commands.push(vec!["status", "--db", db]);
        }
        for args in &commands {
            let out = run(d, args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(&format!("{db} is damaged")), "{args:?}: {err}");
            assert!(err.contains("restore a copy"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    assert!(!d.join("out").exists(), "a failed export leaves nothing");
}
