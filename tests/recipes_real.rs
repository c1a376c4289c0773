//! The recipes' example pipelines against a real model: SmolLM2-135M-Instruct (ChatML) on
//! llama.cpp's server (`DISTILL_LLM_MODEL=smollm2 scripts/local-llm.sh`), through the real
//! binary. A 135M model's answers are weak, so shapes are checked, not wording: every row is
//! there, and each output is either filled or null with the reason in the task's error
//! column, never silently empty. Runs are small (two rows, short `max_tokens`).
//!
//! The server is found through `DISTILL_SMOLLM2_URL`; without it the test starts it (and
//! stops it when done).

mod common;

use common::distill::{read_jsonl, root, run, stderr};
use serde_json::Value;
use std::path::Path;

const EXAMPLE_URL: &str = "http://127.0.0.1:18082/v1";

/// Runs example `file` against the real server; returns the rows of `leaf`.
fn run_example(d: &Path, file: &str, leaf: &str) -> Vec<Value> {
    let url = common::llm::smollm2_url();
    let yaml = std::fs::read_to_string(root().join("fixtures/pipelines/recipes").join(file))
        .unwrap()
        .replace(EXAMPLE_URL, url)
        .replace(
            "model: smollm2-135m",
            "model: smollm2-135m\n      concurrency: 1\n      timeout_secs: 300",
        );
    std::fs::write(d.join(file), yaml).unwrap();
    let db = format!("{file}.redb");
    let out = run(d, &["run", file, "--db", &db]);
    assert!(out.status.success(), "{file}: {}", stderr(&out));
    let dir = format!("{file}-out");
    let out = run(
        d,
        &["export", "--db", &db, "--out", &dir, "--format", "jsonl"],
    );
    assert!(out.status.success(), "{file}: {}", stderr(&out));
    read_jsonl(&d.join(&dir).join(leaf).join("train/data-00000.jsonl"))
}

/// Every output of a row is filled, or the error column says why.
fn filled_or_explained(file: &str, rows: &[Value], outputs: &[&str], error: &str) {
    for row in rows {
        let missing: Vec<&&str> = outputs.iter().filter(|c| row[**c].is_null()).collect();
        if !missing.is_empty() {
            assert!(
                row[error].as_str().is_some_and(|e| !e.is_empty()),
                "{file}: {missing:?} null without a reason in {error}: {row}"
            );
        }
        if row[error].is_null() {
            assert_eq!(row["model_name"], "smollm2-135m", "{file}: {row}");
        }
        eprintln!("{file}: {row}");
    }
}

#[test]
fn every_recipe_runs_against_smollm2() {
    let _server = common::llm::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let rows = run_example(d, "magpie.yaml", "sft");
    assert_eq!(rows.len(), 2);
    filled_or_explained(
        "magpie",
        &rows,
        &["instruction", "response"],
        "magpie_error",
    );
    for row in rows.iter().filter(|r| r["magpie_error"].is_null()) {
        assert!(!row["instruction"].as_str().unwrap().contains("<|im_end|>"));
        assert_eq!(row["messages"].as_array().unwrap().len(), 2);
    }

    let rows = run_example(d, "magpie_chat.yaml", "sft");
    assert_eq!(rows.len(), 2);
    filled_or_explained("magpie_chat", &rows, &["conversation"], "magpie_error");
    for row in rows.iter().filter(|r| r["magpie_error"].is_null()) {
        let roles: Vec<&str> = row["conversation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    }

    // One row per request: a seed whose answer held none has no rows (its error is on the
    // `requests` step's row, which `expand_list` leaves out).
    let rows = run_example(d, "self_instruct.yaml", "one_per_row");
    assert!(rows.len() <= 6, "at most num_instructions per seed");
    for row in &rows {
        assert!(
            !row["instruction"].as_str().unwrap().trim().is_empty(),
            "{row}"
        );
    }

    let rows = run_example(d, "evol_instruct.yaml", "evolve");
    assert_eq!(rows.len(), 2);
    filled_or_explained(
        "evol_instruct",
        &rows,
        &["evolved_instructions", "mutations", "answers"],
        "evol_instruct_error",
    );

    let rows = run_example(d, "evol_quality.yaml", "improve");
    assert_eq!(rows.len(), 2);
    filled_or_explained(
        "evol_quality",
        &rows,
        &["evolved_response"],
        "evol_quality_error",
    );

    let rows = run_example(d, "ultrafeedback.yaml", "dpo");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let ratings = row["ratings"].as_array().unwrap();
        assert_eq!(ratings.len(), 2);
        if ratings.iter().any(Value::is_null) {
            assert!(row["ultrafeedback_error"].is_string(), "{row}");
        }
        assert!(
            ratings
                .iter()
                .all(|r| r.is_null() || (1..=5).contains(&r.as_i64().unwrap()))
        );
    }

    for leaf in ["absolute", "relative"] {
        let rows = run_example(d, "prometheus_eval.yaml", leaf);
        assert_eq!(rows.len(), 2);
        filled_or_explained("prometheus_eval", &rows, &["result"], "prometheus_error");
    }

    let rows = run_example(d, "deita.yaml", "quality");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        for (scores, error) in [
            ("complexity_scores", "complexity_scorer_error"),
            ("quality_scores", "quality_scorer_error"),
        ] {
            let s = row[scores].as_array().unwrap();
            assert_eq!(s.len(), 2);
            if s.iter().any(Value::is_null) {
                assert!(row[error].is_string(), "{row}");
            }
        }
    }

    let rows = run_example(d, "text_classification.yaml", "sentiment");
    assert_eq!(rows.len(), 2);
    filled_or_explained(
        "text_classification",
        &rows,
        &["labels"],
        "text_classification_error",
    );
    // The schema constrains the answer: a label from the set, always.
    for row in &rows {
        assert!(
            ["positive", "negative", "Unclassified"]
                .contains(&row["labels"].as_str().unwrap_or("")),
            "{row}"
        );
    }

    let rows = run_example(d, "generate_sentence_pair.yaml", "triplets");
    assert_eq!(rows.len(), 2);
    filled_or_explained(
        "generate_sentence_pair",
        &rows,
        &["positive", "negative"],
        "generate_sentence_pair_error",
    );
}
