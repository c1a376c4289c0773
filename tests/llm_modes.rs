//! The completions and embeddings tasks and spend, through the real binary against the
//! loopback mock LLM: exact outputs, cache hits on a new run (`run --new`) that send nothing,
//! unusable answers kept as failures and never cached, and spend in `distill status`.

mod common;

use common::distill::{read_jsonl, run, stderr, stdout};
use distill_testkit::mock_llm::{AnswerKind, Behaviour, MockLlm, mock_embedding};
use std::path::Path;

/// `distill status --json` of `db` in `d`.
fn status_json(d: &Path, db: &str) -> serde_json::Value {
    let out = run(d, &["status", "--db", db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn step<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {status}"))
}

fn export(d: &Path, db: &str, out: &str, leaf: &str) -> Vec<serde_json::Value> {
    let o = run(
        d,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    read_jsonl(&d.join(out).join(leaf).join("train/data-00000.jsonl"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn text_completion_answers_caches_and_prices() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pipeline = |template: &str| {
        format!(
            "name: complete\nsteps:\n  - name: load\n    type: inline\n    params: {{rows: [{{prompt: once upon, topic: cats}}, {{prompt: a time, topic: dogs}}, {{prompt: there was, topic: owls}}]}}\n  - name: complete\n    type: text_completion\n    after: [load]\n    params:\n      base_url: {}\n      model: mock-model\n      generation: {{max_tokens: 8}}\n      price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}\n{template}",
            server.base_url()
        )
    };
    std::fs::write(d.join("p.yaml"), pipeline("")).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = export(d, "r.redb", "o", "complete");
    let prompts = ["once upon", "a time", "there was"];
    assert_eq!(rows.len(), 3);
    for (row, prompt) in rows.iter().zip(prompts) {
        assert_eq!(row["generation"], format!("completion: {prompt}"));
        assert_eq!(row["model_name"], "mock-model");
        assert_eq!(
            (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
            (Some(2), Some(3))
        );
        assert!(row["generation_error"].is_null(), "{row}");
    }
    let asked: Vec<serde_json::Value> = server
        .received()
        .iter()
        .filter(|r| r.path != "/v1/models")
        .map(|r| {
            assert_eq!(r.path, "/v1/completions");
            serde_json::from_str(&r.body).unwrap()
        })
        .collect();
    assert_eq!(asked.len(), 3);
    assert!(
        asked
            .iter()
            .all(|b| b["max_tokens"] == 8 && b.get("messages").is_none())
    );

    // Spend from the committed counters: 6 prompt tokens at $1/M, 9 completion tokens at $2/M.
    let status = status_json(d, "r.redb");
    let s = step(&status, "complete");
    assert_eq!(s["counters"]["requests"], 3);
    assert!(close(s["spent_usd"].as_f64().unwrap(), 24e-6), "{s}");
    assert!(
        close(status["spent_usd"].as_f64().unwrap(), 24e-6),
        "{status}"
    );
    assert!(
        close(status["saved_usd"].as_f64().unwrap(), 0.0),
        "{status}"
    );
    let text = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(text.contains("spent $0.000024"), "{text}");

    // A new run in the same database: every answer from the cache, nothing sent, nothing spent.
    let sent = server.count();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        server.count(),
        sent + 1,
        "only the endpoint check may be sent"
    );
    assert_eq!(export(d, "r.redb", "o2", "complete"), rows);
    let status = status_json(d, "r.redb");
    let s = step(&status, "complete");
    assert_eq!(s["counters"]["cache_hits"], 3);
    assert_eq!(s["counters"]["cached_input_tokens"], 6);
    assert_eq!(s["counters"]["cached_output_tokens"], 9);
    assert!(s["counters"].get("requests").is_none(), "{s}");
    assert!(
        close(status["spent_usd"].as_f64().unwrap(), 0.0),
        "{status}"
    );
    assert!(
        close(status["saved_usd"].as_f64().unwrap(), 24e-6),
        "{status}"
    );
    let text = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(text.contains("the cache saved $0.000024"), "{text}");

    // A template over the row instead of the `prompt` column.
    std::fs::write(
        d.join("t.yaml"),
        pipeline("      template: 'Write about {{ topic }}:'\n"),
    )
    .unwrap();
    let out = run(d, &["run", "t.yaml", "--db", "t.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = export(d, "t.redb", "t", "complete");
    let got: Vec<&str> = rows
        .iter()
        .map(|r| r["generation"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "completion: Write about cats:",
            "completion: Write about dogs:",
            "completion: Write about owls:"
        ]
    );
}

#[test]
fn unusable_completions_are_failures_and_never_cached() {
    let server = MockLlm::start(Behaviour {
        answer: AnswerKind::EmptyContent,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.yaml"),
        format!(
            "name: complete\nsteps:\n  - name: load\n    type: inline\n    params: {{rows: [{{prompt: one}}, {{prompt: two}}]}}\n  - name: complete\n    type: text_completion\n    after: [load]\n    params: {{base_url: {}, model: mock-model}}\n",
            server.base_url()
        ),
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for row in export(d, "r.redb", "o", "complete") {
        assert!(row["generation"].is_null(), "{row}");
        let error = row["generation_error"].as_str().unwrap();
        assert!(
            error.contains("unusable answer from POST completions: the answer has no text"),
            "{error}"
        );
    }
    assert_eq!(
        step(&status_json(d, "r.redb"), "complete")["counters"]["failures"],
        2
    );
    // Nothing was cached: a new run asks again, and gets the good answers now served.
    server.set_behaviour(Behaviour::default());
    let out = run(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let completions = server
        .received()
        .iter()
        .filter(|r| r.path == "/v1/completions")
        .count();
    assert_eq!(completions, 4);
    let rows = export(d, "r.redb", "o2", "complete");
    assert_eq!(rows[0]["generation"], "completion: one");
    assert_eq!(rows[1]["generation"], "completion: two");
}

/// The vector the mock gives `text`, as the export holds it.
fn expected(text: &str, dims: usize) -> serde_json::Value {
    mock_embedding(text, dims)
        .into_iter()
        .map(f64::from)
        .collect::<Vec<f64>>()
        .into()
}

const TEXTS: [&str; 5] = [
    "red apple",
    "green pear",
    "red apple",
    "blue plum",
    "ripe fig",
];

fn embed_pipeline(server: &MockLlm, rows_per_request: u32, answer: &str) -> String {
    let rows: Vec<String> = TEXTS
        .iter()
        .map(|t| format!("{{input: {t}, fruit: {t}}}"))
        .collect();
    format!(
        "name: embed\nsteps:\n  - name: load\n    type: inline\n    params: {{rows: [{}]}}\n  - name: plain\n    type: embeddings\n    after: [load]\n    params: {{base_url: {url}, model: mock-embed, rows_per_request: {rows_per_request}, price: {{input_per_mtok: 0.5}}}}\n  - name: packed\n    type: embeddings\n    after: [load]\n    params: {{base_url: {url}, model: mock-embed, template: 'passage: {{{{ fruit }}}}', dimensions: 3, encoding_format: base64, rows_per_request: {rows_per_request}{answer}}}\n",
        rows.join(", "),
        url = server.base_url()
    )
}

#[test]
fn embeddings_batch_rows_cache_each_input_and_decode_base64() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), embed_pipeline(&server, 2, "")).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = export(d, "r.redb", "o", "plain");
    let packed = export(d, "r.redb", "o", "packed");
    assert_eq!((plain.len(), packed.len()), (5, 5));
    for (i, text) in TEXTS.iter().enumerate() {
        assert_eq!(plain[i]["embedding"], expected(text, 4), "row {i}");
        assert_eq!(plain[i]["model_name"], "mock-embed");
        assert!(plain[i]["embedding_error"].is_null());
        assert_eq!(
            packed[i]["embedding"],
            expected(&format!("passage: {text}"), 3),
            "row {i}"
        );
    }
    // 4 distinct inputs per step (one is met twice), 2 per request.
    let asked: Vec<serde_json::Value> = server
        .received()
        .iter()
        .filter(|r| r.path == "/v1/embeddings")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(asked.len(), 4);
    for body in &asked {
        assert_eq!(body["input"].as_array().unwrap().len(), 2, "{body}");
        let packed = body["input"][0].as_str().unwrap().starts_with("passage: ");
        assert_eq!(body.get("dimensions").is_some(), packed, "{body}");
        assert_eq!(body["encoding_format"] == "base64", packed, "{body}");
    }
    // Spend: 8 words embedded at $0.5/M; the duplicate is not asked.
    let status = status_json(d, "r.redb");
    assert!(
        close(step(&status, "plain")["spent_usd"].as_f64().unwrap(), 4e-6),
        "{status}"
    );
    assert!(
        step(&status, "packed")["spent_usd"].is_null(),
        "unpriced: {status}"
    );

    // Another batching (operational: the same run) in a new run: every vector from the
    // cache, one record per input, nothing sent.
    std::fs::write(d.join("p.yaml"), embed_pipeline(&server, 3, "")).unwrap();
    let sent = server.received().len();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let embeddings_sent = server.received()[sent..]
        .iter()
        .filter(|r| r.path == "/v1/embeddings")
        .count();
    assert_eq!(embeddings_sent, 0);
    assert_eq!(export(d, "r.redb", "o2", "plain"), plain);
    assert_eq!(export(d, "r.redb", "o2", "packed"), packed);
    let status = status_json(d, "r.redb");
    assert_eq!(step(&status, "plain")["counters"]["cache_hits"], 4);
    assert_eq!(step(&status, "plain")["counters"]["cached_input_tokens"], 8);
    assert!(
        close(status["saved_usd"].as_f64().unwrap(), 4e-6),
        "{status}"
    );
}

#[test]
fn unusable_embeddings_are_failures_and_never_cached() {
    let server = MockLlm::start(Behaviour {
        answer: AnswerKind::MissingVector,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), embed_pipeline(&server, 64, "")).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for row in export(d, "r.redb", "o", "plain") {
        assert!(row["embedding"].is_null(), "{row}");
        let error = row["embedding_error"].as_str().unwrap();
        assert!(
            error.contains("the answer has 3 vectors for 4 inputs"),
            "{error}"
        );
    }
    server.set_behaviour(Behaviour::default());
    let out = run(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = export(d, "r.redb", "o2", "plain");
    assert_eq!(rows[3]["embedding"], expected("blue plum", 4));
    // Bad parameters name themselves (exit 3).
    std::fs::write(
        d.join("bad.yaml"),
        embed_pipeline(&server, 64, "").replace("encoding_format: base64", "encoding_format: hex"),
    )
    .unwrap();
    let out = run(d, &["run", "bad.yaml", "--db", "bad.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`encoding_format` must be `float` or `base64`"),
        "{}",
        stderr(&out)
    );
}
