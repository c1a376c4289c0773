//! Pipelines in batch mode against the loopback batch double, and the online run they must
//! equal.

use super::distill::{read_jsonl, run, stderr};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;

/// Rows of the test data.
pub const ROWS: usize = 30;

/// Writes `data.jsonl` (ROWS rows, once) and `p.yaml`: load, then `generate` (text_generation) in
/// `mode` against `base_url`, polling every second, in jobs of 20 rows, unless `extra` (more
/// parameters, one a line) says otherwise.
pub fn write_pipeline(dir: &Path, base_url: &str, mode: &str, extra: &str) {
    let data: String = (0..ROWS)
        .map(|i| format!("{{\"id\": {i}, \"instruction\": \"write line {i}\"}}\n"))
        .collect();
    if !dir.join("data.jsonl").exists() {
        std::fs::write(dir.join("data.jsonl"), data).unwrap();
    }
    let mut extra_lines = String::new();
    let mode_line = format!("mode: {mode}");
    for default in [mode_line.as_str(), "batch_window: 20", "poll_secs: 1"] {
        let key = default.split(':').next().unwrap_or_default();
        if !extra.contains(&format!("{key}:")) {
            extra_lines.push_str(&format!("      {default}\n"));
        }
    }
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        extra_lines.push_str(&format!("      {}\n", line.trim()));
    }
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "name: batch-test\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 10\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    input_batch_size: 5\n    params:\n      base_url: {base_url}\n      model: mock-model\n      generation: {{temperature: 0.0, max_tokens: 32}}\n{extra_lines}"
        ),
    )
    .unwrap();
}

/// The rows of leaf `generate` exported as JSONL from `dir/r.redb` into `dir/OUT`.
pub fn export(dir: &Path, out: &str) -> Vec<serde_json::Value> {
    let result = run(
        dir,
        &[
            "export", "--db", "r.redb", "--out", out, "--format", "jsonl",
        ],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    read_jsonl(&dir.join(out).join("generate/train/data-00000.jsonl"))
}

/// The rows an online run of the same pipeline exports.
pub fn online_rows() -> Vec<serde_json::Value> {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &server.base_url(), "online", "");
    let out = run(dir.path(), &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    export(dir.path(), "online")
}
