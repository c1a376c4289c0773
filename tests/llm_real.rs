//! LLM tasks against a real OpenAI-compatible server: llama.cpp's Python server with Gemma 3 270M
//! (scripts/local-llm.sh), not the loopback mock. The mock tests failures and speed; these prove
//! that what we send and parse is what a real server speaks: the endpoint check, generation and
//! judge columns through the real binary, JSON-schema answers, and the request cache.
//!
//! The server is found through `DISTILL_LLM_URL` (e.g. `http://127.0.0.1:18081/v1`; CI starts it
//! first). Without it, the tests start it with `bash scripts/local-llm.sh start`, which installs it
//! on first use (minutes) and stops it when this test binary exits. The model is a tiny base
//! model on a few CPU cores: answers are short and checked for their shape, not their wording.

mod common;

use common::distill::{read_jsonl, run, stderr, stdout};
use distill_llm::{Client, LlmParams, RetryPolicy, Runner};
use std::path::Path;

const MODEL: &str = common::llm::LOCAL_MODEL;

/// The server's base URL, starting the server if `DISTILL_LLM_URL` is not set.
fn base_url() -> &'static str {
    common::llm::local_llm_url()
}

/// Connection parameters of every LLM step here, as YAML flow-map entries.
fn llm_params(max_tokens: u32) -> String {
    format!(
        "base_url: {}, model: {MODEL}, concurrency: 1, timeout_secs: 300, generation: {{temperature: 0, max_tokens: {max_tokens}}}",
        base_url()
    )
}

/// Runs `distill ARGS` in `dir`, failing the test with distill's output if it fails.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "distill {args:?}: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A step's counters from `distill status --json`.
fn counters(dir: &Path, db: &str, step: &str) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&ok(dir, &["status", "--db", db, "--json"])).unwrap();
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step} in {status}"))["counters"]
        .clone()
}

fn count(counters: &serde_json::Value, name: &str) -> u64 {
    counters[name].as_u64().unwrap_or(0)
}

fn params(json: serde_json::Value) -> LlmParams {
    serde_json::from_value(json).unwrap()
}

#[test]
fn the_endpoint_check_passes_and_a_wrong_base_url_fails_clearly() {
    let _server = common::llm::one_at_a_time();
    let url = base_url();
    let mut runner = Runner::new(params(serde_json::json!({"base_url": url, "model": MODEL})));
    runner.load().expect("GET /models on the real server");

    // Nothing listens on port 9: unreachable, naming the endpoint.
    let wrong = "http://127.0.0.1:9/v1";
    let mut runner = Runner::new(params(
        serde_json::json!({"base_url": wrong, "model": MODEL}),
    ));
    let err = runner.load().unwrap_err().to_string();
    assert!(err.contains(wrong) && err.contains("unreachable"), "{err}");
    // The right server, the wrong path: its HTTP status.
    let wrong = format!("{}/v0", url.trim_end_matches("/v1"));
    let mut runner = Runner::new(params(
        serde_json::json!({"base_url": wrong, "model": MODEL}),
    ));
    let err = runner.load().unwrap_err().to_string();
    assert!(
        err.contains(&wrong) && err.contains("HTTP 404 to GET /models"),
        "{err}"
    );

    // One chat completion through the client: the fields the tasks read are there.
    let client = Client::new(vec![url.to_owned()], 1, None, RetryPolicy::default()).unwrap();
    client.check().unwrap();
    let answer = client
        .chat(&serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "temperature": 0,
            "max_tokens": 8,
        }))
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );
    assert_eq!(json["model"], MODEL, "{json}");
    assert!(
        json["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert!(
        json["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{json}"
    );
}

const INSTRUCTIONS: [&str; 3] = [
    "Explain in one sentence what `len` does in Python.",
    "Explain in one sentence what `os.path.join` does in Python.",
    "Explain in one sentence what `json.dumps` does in Python.",
];

/// Generate, then judge (a list of one generation per row), through the real binary; then the
/// same pipeline again with `--new` in the same database asks the server nothing.
#[test]
fn generation_and_judge_through_the_binary_then_a_new_run_is_served_by_the_cache() {
    let _server = common::llm::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = INSTRUCTIONS
        .iter()
        .map(|i| format!("{}\n", serde_json::json!({ "instruction": i })))
        .collect();
    std::fs::write(d.join("data.jsonl"), data).unwrap();
    let yaml = format!(
        "name: real-llm
steps:
  - name: load
    type: load_jsonl
    params: {{path: data.jsonl}}
  - name: generate
    type: text_generation
    after: [load]
    input_batch_size: 2
    output_mappings: {{model_name: generation_model}}
    params: {{{gen}, num_generations: 1}}
  - name: as_list
    type: combine_columns
    after: [generate]
    input_batch_size: 2
    params: {{columns: [generation], output_columns: [generations]}}
  - name: judge
    type: judge
    after: [as_list]
    input_batch_size: 2
    output_mappings: {{model_name: judge_model}}
    params: {{{judge}, aspect: correctness}}
  - name: judge_json
    type: judge
    after: [as_list]
    input_batch_size: 2
    output_mappings: {{model_name: judge_model}}
    params: {{{judge_json}, aspect: correctness, structured: true}}
",
        gen = llm_params(24),
        judge = llm_params(24),
        judge_json = llm_params(96),
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    ok(d, &["run", "p.yaml", "--db", "r.redb"]);
    ok(
        d,
        &[
            "export", "--db", "r.redb", "--out", "first", "--format", "jsonl",
        ],
    );
    let rows = read_jsonl(&d.join("first/judge/train/data-00000.jsonl"));
    assert_eq!(rows.len(), INSTRUCTIONS.len());
    for (row, instruction) in rows.iter().zip(INSTRUCTIONS) {
        assert_eq!(row["instruction"], instruction);
        // text_generation's columns (as_list turned `generation` into `generations`).
        let generations = row["generations"].as_array().expect("generations list");
        assert_eq!(generations.len(), 1, "{row}");
        let text = generations[0].as_str().unwrap_or_default();
        assert!(!text.trim().is_empty(), "empty generation: {row}");
        assert_eq!(row["generation_model"], MODEL, "{row}");
        assert!(row["input_tokens"].as_u64().unwrap() > 0, "{row}");
        let output_tokens = row["output_tokens"].as_u64().unwrap();
        assert!((1..=24).contains(&output_tokens), "{row}");
        assert!(row["generation_error"].is_null(), "{row}");
        // The judge's columns: a rating from 1 to 5 or null with the reason kept.
        assert_eq!(row["judge_model"], MODEL, "{row}");
        let ratings = row["ratings"].as_array().expect("ratings list");
        let rationales = row["rationales"].as_array().expect("rationales list");
        assert_eq!((ratings.len(), rationales.len()), (1, 1), "{row}");
        match ratings[0].as_i64() {
            Some(r) => assert!((1..=5).contains(&r), "{row}"),
            None => {
                assert!(ratings[0].is_null(), "{row}");
                let why = row["judge_error"].as_str().expect("judge_error");
                assert!(why.contains("text 1"), "{row}");
            }
        }
    }
    // With `structured: true` the server constrains the answer to the judge's JSON schema:
    // every rating parses.
    for row in read_jsonl(&d.join("first/judge_json/train/data-00000.jsonl")) {
        let rating = row["ratings"][0].as_i64();
        assert!(rating.is_some_and(|r| (1..=5).contains(&r)), "{row}");
        assert!(row["rationales"][0].is_string(), "{row}");
        assert!(row["judge_error"].is_null(), "{row}");
    }
    let (generate, judge) = (
        counters(d, "r.redb", "generate"),
        counters(d, "r.redb", "judge"),
    );
    assert_eq!(count(&generate, "requests"), 3, "{generate}");
    assert_eq!(count(&judge, "requests"), 3, "{judge}");
    assert!(count(&generate, "output_tokens") > 0, "{generate}");

    // Same pipeline, same database, `--new`: every answer comes from the request cache.
    ok(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    for step in ["generate", "judge", "judge_json"] {
        let c = counters(d, "r.redb", step);
        assert_eq!(
            count(&c, "requests"),
            0,
            "{step} asked the server again: {c}"
        );
        assert_eq!(count(&c, "cache_hits"), 3, "{step}: {c}");
    }
    ok(
        d,
        &[
            "export", "--db", "r.redb", "--out", "again", "--format", "jsonl",
        ],
    );
    assert_eq!(
        read_jsonl(&d.join("again/judge/train/data-00000.jsonl")),
        rows
    );
}

/// `structured_generation` sends the schema as `response_format`; llama.cpp constrains the
/// answer with it, so every answer parses and validates the first time.
#[test]
fn structured_generation_returns_json_that_matches_the_schema() {
    let _server = common::llm::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "returns_value": {"type": "boolean"},
            "arguments": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["name", "returns_value", "arguments"],
        "additionalProperties": false,
    });
    let yaml = format!(
        r#"name: real-structured
steps:
  - name: load
    type: inline
    params:
      rows:
        - {{instruction: "Describe the Python function `len` as JSON."}}
        - {{instruction: "Describe the Python function `print` as JSON."}}
  - name: extract
    type: structured_generation
    after: [load]
    params: {{{llm}, max_invalid_retries: 1, schema: {schema}}}
"#,
        llm = llm_params(48),
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    ok(d, &["run", "p.yaml", "--db", "r.redb"]);
    ok(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    let rows = read_jsonl(&d.join("o/extract/train/data-00000.jsonl"));
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(row["structured_error"].is_null(), "{row}");
        assert_eq!(row["model_name"], MODEL, "{row}");
        let answer = row["structured"].as_object().expect("an object");
        let mut keys: Vec<&str> = answer.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["arguments", "name", "returns_value"], "{row}");
        assert!(
            answer["name"]
                .as_str()
                .is_some_and(|n| n.chars().count() <= 24),
            "{row}"
        );
        assert!(answer["returns_value"].is_boolean(), "{row}");
        assert!(
            answer["arguments"]
                .as_i64()
                .is_some_and(|n| (0..=9).contains(&n)),
            "{row}"
        );
    }
    let c = counters(d, "r.redb", "extract");
    assert_eq!(count(&c, "invalid_answers"), 0, "{c}");
    assert_eq!(count(&c, "requests"), 2, "{c}");
}
