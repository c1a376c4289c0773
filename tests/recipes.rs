//! The recipes end to end: each example pipeline of `fixtures/pipelines/recipes/` runs through
//! the real binary against the loopback mock LLM, whose answers are scripted by request
//! content, and its exported rows are checked exactly (answers that parse, answers that do
//! not: null with the reason in the task's error column).

mod common;

use common::distill::{read_jsonl, root, run, stderr};
use distill_testkit::mock_llm::{Behaviour, MockLlm, Scripted};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The endpoint the examples name (the local SmolLM2 server of `scripts/local-llm.sh`).
const EXAMPLE_URL: &str = "http://127.0.0.1:18082/v1";

fn mock(rules: &[(&str, &str)]) -> MockLlm {
    MockLlm::start(Behaviour {
        script: rules.iter().map(|(c, a)| Scripted::new(*c, *a)).collect(),
        ..Behaviour::default()
    })
}

/// Runs example `file` against `url` in `d`; returns each leaf's exported rows.
fn run_example(d: &Path, file: &str, url: &str, db: &str) -> BTreeMap<String, Vec<Value>> {
    let yaml = std::fs::read_to_string(root().join("fixtures/pipelines/recipes").join(file))
        .unwrap()
        .replace(EXAMPLE_URL, url);
    std::fs::write(d.join(file), yaml).unwrap();
    let out = run(d, &["run", file, "--db", db]);
    assert!(out.status.success(), "{file}: {}", stderr(&out));
    let dir = format!("{db}-out");
    let out = run(
        d,
        &["export", "--db", db, "--out", &dir, "--format", "jsonl"],
    );
    assert!(out.status.success(), "{file}: {}", stderr(&out));
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join(&dir).join("distiset.json")).unwrap())
            .unwrap();
    let mut leaves = BTreeMap::new();
    for leaf in meta["leaves"].as_array().unwrap() {
        let name = leaf["name"].as_str().unwrap().to_owned();
        let rows = read_jsonl(&d.join(&dir).join(&name).join("train/data-00000.jsonl"));
        leaves.insert(name, rows);
    }
    leaves
}

/// The requests the mock got on `path` (`completions` or `chat/completions`), as JSON.
fn bodies(server: &MockLlm, path: &str) -> Vec<Value> {
    server
        .received()
        .iter()
        .filter(|r| r.path == format!("/v1/{path}"))
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

fn texts(values: &[&str]) -> Value {
    json!(values)
}

fn msg(role: &str, content: &str) -> Value {
    json!({"role": role, "content": content})
}

#[test]
fn magpie_generator_then_sft_rows() {
    let server = mock(&[
        ("<|im_start|>user\n", "What is a catalyst?<|im_end|>\n"),
        (
            "What is a catalyst?",
            "A catalyst speeds up a reaction without being used up.",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(dir.path(), "magpie.yaml", &server.base_url(), "r.redb");
    let rows = &leaves["sft"];
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["instruction"], "What is a catalyst?");
        assert_eq!(
            row["response"],
            "A catalyst speeds up a reaction without being used up."
        );
        assert_eq!(row["prompt"], "What is a catalyst?");
        assert_eq!(
            row["prompt_id"],
            blake3::hash(b"What is a catalyst?").to_hex().to_string()
        );
        assert_eq!(
            row["messages"],
            json!([
                msg("user", "What is a catalyst?"),
                msg(
                    "assistant",
                    "A catalyst speeds up a reaction without being used up."
                )
            ])
        );
        assert_eq!(row["model_name"], "smollm2-135m");
        assert!(row["magpie_error"].is_null());
    }
    // One raw completion per row, each its own (seed offset by the row number), ending in
    // the open user turn, with the end-of-turn token as a stop.
    let completions = bodies(&server, "completions");
    assert_eq!(completions.len(), 2);
    let mut seeds: Vec<u64> = completions
        .iter()
        .map(|b| b["seed"].as_u64().unwrap())
        .collect();
    seeds.sort_unstable();
    assert_eq!(seeds, vec![7, 8]);
    for b in &completions {
        assert_eq!(
            b["prompt"],
            "<|im_start|>system\nYou are a helpful assistant who explains basic chemistry.<|im_end|>\n<|im_start|>user\n"
        );
        assert_eq!(b["stop"], json!(["<|im_end|>"]));
    }
    let chats = bodies(&server, "chat/completions");
    assert!(!chats.is_empty());
    assert_eq!(
        chats[0]["messages"],
        json!([
            msg(
                "system",
                "You are a helpful assistant who explains basic chemistry."
            ),
            msg("user", "What is a catalyst?")
        ])
    );
}

#[test]
fn magpie_two_turns_from_each_rows_system_prompt() {
    let server = mock(&[
        (
            "<|im_start|>assistant\nA right angle",
            "And an acute angle?",
        ),
        (
            "geometry.<|im_end|>\n<|im_start|>user\n",
            "What is a right angle?",
        ),
        ("<|im_start|>assistant\nYes", "How long does it take?"),
        (
            "trains.<|im_end|>\n<|im_start|>user\n",
            "Can I take a train from Paris to Rome?",
        ),
        (
            "And an acute angle?",
            "An acute angle is smaller than 90 degrees.",
        ),
        (
            "What is a right angle?",
            "A right angle measures 90 degrees.",
        ),
        ("How long does it take?", "About eleven hours."),
        ("Paris to Rome?", "Yes, with one change in Milan."),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(dir.path(), "magpie_chat.yaml", &server.base_url(), "r.redb");
    let rows = &leaves["sft"];
    let geometry = json!([
        msg(
            "system",
            "You are a patient teacher of elementary geometry."
        ),
        msg("user", "What is a right angle?"),
        msg("assistant", "A right angle measures 90 degrees."),
        msg("user", "And an acute angle?"),
        msg("assistant", "An acute angle is smaller than 90 degrees."),
    ]);
    let trains = json!([
        msg(
            "system",
            "You are a travel agent who knows European trains."
        ),
        msg("user", "Can I take a train from Paris to Rome?"),
        msg("assistant", "Yes, with one change in Milan."),
        msg("user", "How long does it take?"),
        msg("assistant", "About eleven hours."),
    ]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["conversation"], geometry);
    assert_eq!(rows[0]["messages"], geometry);
    assert_eq!(rows[0]["prompt"], "What is a right angle?");
    assert_eq!(rows[1]["conversation"], trains);
    assert!(rows.iter().all(|r| r["magpie_error"].is_null()));
    assert_eq!(bodies(&server, "completions").len(), 4);
    assert_eq!(bodies(&server, "chat/completions").len(), 4);
}

#[test]
fn self_instruct_then_one_row_per_request() {
    let server = mock(&[
        (
            "Photosynthesis",
            "Here are three requests:\n1. How do plants make sugar?\n2. Why do leaves need light?\n3. What gas do plants release?",
        ),
        (
            "hash map",
            "- What is a hash collision?\n- How does a hash map grow?\n- When is a tree map better?\n- One too many?",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "self_instruct.yaml",
        &server.base_url(),
        "r.redb",
    );
    let got: Vec<&str> = leaves["one_per_row"]
        .iter()
        .map(|r| r["instruction"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            "How do plants make sugar?",
            "Why do leaves need light?",
            "What gas do plants release?",
            "What is a hash collision?",
            "How does a hash map grow?",
            "When is a tree map better?"
        ]
    );
    assert!(
        leaves["one_per_row"]
            .iter()
            .all(|r| r["self_instruct_error"].is_null() && r.get("instructions").is_none())
    );
    let prompt = bodies(&server, "chat/completions")[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("write 3 different requests") && prompt.contains("a tutoring assistant"),
        "{prompt}"
    );
}

/// The guidance line of each Evol-Instruct mutation in the built-in template.
fn guidance(mutation: &str) -> &'static str {
    match mutation {
        "add_constraints" => "Add one more constraint",
        "deepen" => "Ask about the topic in more depth",
        "concretize" => "Replace general ideas",
        "increase_reasoning" => "several explicit steps of reasoning",
        "breadth" => "brand-new instruction",
        other => panic!("unknown mutation {other}"),
    }
}

#[test]
fn evol_instruct_evolves_twice_answers_and_names_a_failed_evolution() {
    let rules = [
        (
            "Original instruction:\nSort a list of numbers.",
            "Sort a list of numbers in descending order.",
        ),
        (
            "Original instruction:\nSort a list of numbers in descending order.",
            "#Rewritten Prompt#: Sort a list of 1000 numbers in descending order without built-ins.",
        ),
        (
            "Original instruction:\nExplain what a prime number is.",
            "Explain what a prime number is, with two examples.",
        ),
        (
            "Original instruction:\nExplain what a prime number is, with two examples.",
            "Explain what a prime number is, with two examples.",
        ),
        (
            "without built-ins.",
            "Write a merge sort that compares in reverse.",
        ),
        ("descending order.", "Use sorted(xs, reverse=True)."),
    ];
    let server = mock(&rules);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "evol_instruct.yaml",
        &server.base_url(),
        "r.redb",
    );
    let rows = &leaves["evolve"];
    assert_eq!(
        rows[0]["evolved_instructions"],
        texts(&[
            "Sort a list of numbers in descending order.",
            "Sort a list of 1000 numbers in descending order without built-ins."
        ])
    );
    assert_eq!(
        rows[0]["answers"],
        texts(&[
            "Use sorted(xs, reverse=True).",
            "Write a merge sort that compares in reverse."
        ])
    );
    assert!(rows[0]["evol_instruct_error"].is_null());
    let mutations: Vec<String> = rows[0]["mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mutations.len(), 2);
    // Each recorded mutation is the one whose guidance its request carried.
    let asked = bodies(&server, "chat/completions");
    for (k, previous) in [
        "Sort a list of numbers.",
        "Sort a list of numbers in descending order.",
    ]
    .iter()
    .enumerate()
    {
        let prompt = asked
            .iter()
            .map(|b| b["messages"][0]["content"].as_str().unwrap().to_owned())
            .find(|p| {
                p.ends_with(&format!(
                    "Original instruction:\n{previous}\n\nWrite only the new instruction."
                ))
            })
            .unwrap_or_else(|| panic!("no request evolving {previous}"));
        assert!(
            prompt.contains(guidance(&mutations[k])),
            "{}: {prompt}",
            mutations[k]
        );
    }
    assert_eq!(rows[1]["evolved_instructions"], Value::Null);
    assert_eq!(rows[1]["answers"], Value::Null);
    assert_eq!(
        rows[1]["evol_instruct_error"],
        "evolution 2: the answer repeats its input"
    );
    // Seeded by content: a fresh run (new database, new cache) chooses the same mutations.
    let again = run_example(
        dir.path(),
        "evol_instruct.yaml",
        &server.base_url(),
        "s.redb",
    );
    assert_eq!(again["evolve"], leaves["evolve"]);
}

#[test]
fn evol_quality_improves_responses() {
    let server = mock(&[
        (
            "Response:\n100 degrees.",
            "Water boils at 100 degrees Celsius at sea level.",
        ),
        (
            "Response:\n7.",
            "Improved response: 7 is prime: its only divisors are 1 and 7.",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "evol_quality.yaml",
        &server.base_url(),
        "r.redb",
    );
    let rows = &leaves["improve"];
    assert_eq!(
        rows[0]["evolved_response"],
        "Water boils at 100 degrees Celsius at sea level."
    );
    assert_eq!(
        rows[1]["evolved_response"],
        "7 is prime: its only divisors are 1 and 7."
    );
    for row in rows {
        assert_eq!(row["mutations"].as_array().unwrap().len(), 1);
        assert!(row["evol_quality_error"].is_null());
    }
}

#[test]
fn ultrafeedback_ratings_then_dpo_pairs() {
    let server = mock(&[
        (
            "capital of France",
            "#### Output for Text 1\nType: None\nRationale: No hallucination.\nRating: 5\nRationale: Correct.\n\n#### Output for Text 2\nType: 1\nRationale: Lyon is not the capital.\nRating: 1\nRationale: Factually wrong.",
        ),
        (
            "spider",
            "#### Output for Text 1\nType: None\nRationale: Accurate.\nRating: 5\nRationale: Right.\n#### Output for Text 2\nType: 1\nRationale: Wrong count.\nRating: 9\nRationale: Off the scale.",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "ultrafeedback.yaml",
        &server.base_url(),
        "r.redb",
    );
    let rows = &leaves["dpo"];
    assert_eq!(rows[0]["ratings"], json!([5, 1]));
    assert_eq!(rows[0]["types"], json!([[], [1]]));
    assert_eq!(
        rows[0]["rationales"],
        texts(&["No hallucination.", "Lyon is not the capital."])
    );
    assert_eq!(
        rows[0]["rationales_for_ratings"],
        texts(&["Correct.", "Factually wrong."])
    );
    assert!(rows[0]["ultrafeedback_error"].is_null());
    let q = "What is the capital of France?";
    assert_eq!(
        rows[0]["chosen"],
        json!([
            msg("user", q),
            msg("assistant", "Paris is the capital of France.")
        ])
    );
    assert_eq!(
        rows[0]["rejected"],
        json!([
            msg("user", q),
            msg("assistant", "The capital of France is Lyon.")
        ])
    );
    assert_eq!(
        (
            rows[0]["chosen_rating"].clone(),
            rows[0]["rejected_rating"].clone()
        ),
        (json!(5), json!(1))
    );
    assert_eq!(rows[1]["ratings"], json!([5, null]));
    assert_eq!(
        rows[1]["ultrafeedback_error"],
        "text 2: `9` is not a rating from 1 to 5"
    );
    assert!(rows[1]["chosen"].is_null() && rows[1]["rejected"].is_null());
}

#[test]
fn prometheus_absolute_and_relative() {
    let server = mock(&[
        (
            "## Response to evaluate\n144",
            "Feedback: Correct, it matches the reference. [RESULT] 5",
        ),
        (
            "## Response to evaluate\nVenus.",
            "Feedback: Wrong planet; the reference says Mercury.",
        ),
        (
            "## Response A\n144",
            "Feedback: A is right, B is off by 20. [RESULT] A",
        ),
        (
            "## Response A\nMercury.",
            "Feedback: A names the right planet.\n[RESULT] A",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "prometheus_eval.yaml",
        &server.base_url(),
        "r.redb",
    );
    let a = &leaves["absolute"];
    assert_eq!(a[0]["feedback"], "Correct, it matches the reference.");
    assert_eq!(a[0]["result"], 5);
    assert!(a[0]["prometheus_error"].is_null());
    assert_eq!(
        a[1]["feedback"],
        "Wrong planet; the reference says Mercury."
    );
    assert!(a[1]["result"].is_null());
    assert_eq!(a[1]["prometheus_error"], "no [RESULT] in the answer");
    let r = &leaves["relative"];
    assert_eq!(r[0]["result"], "A");
    assert_eq!(r[1]["result"], "A");
    assert_eq!(r[1]["feedback"], "A names the right planet.");
    // The absolute prompt shows the reference and the rubric's scores.
    let absolute = bodies(&server, "chat/completions")
        .into_iter()
        .map(|b| b["messages"][1]["content"].as_str().unwrap().to_owned())
        .find(|p| p.contains("## Response to evaluate\n144"))
        .unwrap();
    assert!(
        absolute.contains("12 times 12 is 144.") && absolute.contains("Score 5:"),
        "{absolute}"
    );
}

#[test]
fn deita_complexity_and_quality_scores() {
    let server = mock(&[
        ("[1] Say hello.", "[1] Score: 1\n[2] Score: 4"),
        ("[1] Name a color.", "[1] Score: 1\n[2] Score: 9"),
        (
            "[Response 1] A function that calls itself.",
            "[Response 1] Score: 3\n[Response 2] Score: 5",
        ),
        (
            "[Response 1] Blue.",
            "[Response 1] Score: 4\n[Response 2] Score: 1",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(dir.path(), "deita.yaml", &server.base_url(), "r.redb");
    let rows = &leaves["quality"];
    assert_eq!(rows[0]["complexity_scores"], json!([1, 4]));
    assert!(rows[0]["complexity_scorer_error"].is_null());
    assert_eq!(rows[1]["complexity_scores"], json!([1, null]));
    assert_eq!(
        rows[1]["complexity_scorer_error"],
        "item 2: `9` is not a score from 1 to 6"
    );
    assert_eq!(rows[0]["quality_scores"], json!([3, 5]));
    assert_eq!(rows[1]["quality_scores"], json!([4, 1]));
    assert!(rows.iter().all(|r| r["quality_scorer_error"].is_null()));
    assert_eq!(rows[0]["quality_model"], "smollm2-135m");
}

#[test]
fn text_classification_with_a_schema() {
    let server = mock(&[
        ("battery lasts", r#"{"labels": "positive"}"#),
        ("broke after two days", r#"{"labels": "angry"}"#),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "text_classification.yaml",
        &server.base_url(),
        "r.redb",
    );
    let rows = &leaves["sentiment"];
    assert_eq!(rows[0]["labels"], "positive");
    assert!(rows[0]["text_classification_error"].is_null());
    assert!(rows[1]["labels"].is_null());
    assert_eq!(
        rows[1]["text_classification_error"],
        "`angry` is not one of the labels"
    );
    let body = &bodies(&server, "chat/completions")[0];
    assert_eq!(
        body["response_format"]["schema"]["properties"]["labels"]["enum"],
        json!(["positive", "negative", "Unclassified"])
    );
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.starts_with("Product reviews from an online shop.")
            && prompt.contains("- positive: the customer is satisfied"),
        "{prompt}"
    );
}

#[test]
fn sentence_triplets() {
    let server = mock(&[
        (
            "Eiffel Tower",
            "## Positive\nWhen was the Eiffel Tower built?\n## Negative\nHow tall is the Eiffel Tower?",
        ),
        (
            "Honey bees",
            "## Positive\nHow do bees tell each other where flowers are?",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(
        dir.path(),
        "generate_sentence_pair.yaml",
        &server.base_url(),
        "r.redb",
    );
    let rows = &leaves["triplets"];
    assert_eq!(rows[0]["positive"], "When was the Eiffel Tower built?");
    assert_eq!(rows[0]["negative"], "How tall is the Eiffel Tower?");
    assert!(rows[1]["positive"].is_null() && rows[1]["negative"].is_null());
    assert_eq!(
        rows[1]["generate_sentence_pair_error"],
        "the answer has no `## Negative` sentence"
    );
}

#[test]
fn minhash_dedup_example_drops_the_near_copies() {
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(dir.path(), "minhash_dedup.yaml", "unused", "r.redb");
    let ids: Vec<i64> = leaves["unique"]
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 3, 5]);
}

#[test]
fn embedding_dedup_example_drops_the_near_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let leaves = run_example(dir.path(), "embedding_dedup.yaml", "unused", "r.redb");
    let ids: Vec<i64> = leaves["unique"]
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 3, 5]);
}

#[test]
fn embeddings_then_embedding_dedup_drops_repeated_texts() {
    // The mock's vectors are a hash of the text: equal texts, equal vectors; others far apart.
    let server = mock(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = format!(
        "name: embed-dedup\nsteps:\n  - name: texts\n    type: inline\n    params: {{rows: [{{id: 1, text: alpha}}, {{id: 2, text: beta}}, {{id: 3, text: alpha}}, {{id: 4, text: gamma}}, {{id: 5, text: beta}}]}}\n  - name: embed\n    type: embeddings\n    after: [texts]\n    input_batch_size: 5\n    input_mappings: {{input: text}}\n    params: {{base_url: {}, model: m, dimensions: 16}}\n  - name: unique\n    type: embedding_dedup\n    after: [embed]\n    input_batch_size: 2\n    params: {{threshold: 0.999}}\n",
        server.base_url()
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<i64> = read_jsonl(&d.join("o/unique/train/data-00000.jsonl"))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 4]);
}

#[test]
fn a_recipe_in_batch_mode_is_refused_before_anything_runs() {
    let server = mock(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = format!(
        "name: r\nsteps:\n  - {{name: seeds, type: inline, params: {{rows: [{{input: a topic}}]}}}}\n  - name: grow\n    type: self_instruct\n    after: [seeds]\n    params: {{base_url: {}, model: m, mode: batch}}\n",
        server.base_url()
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`mode: batch` is not available for recipes"),
        "{}",
        stderr(&out)
    );
    assert!(server.received().is_empty());
}
