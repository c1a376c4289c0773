//! LLM tasks in real runs against the loopback mock server: outputs, accounting, failures kept
//! as data, and the request cache that makes sure no answered request is paid for twice.

use distill::{BuildContext, Pipeline, PipelineSpec, RunOptions, StepSpec, run};
use distill_storage::{RunReader, Value};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::collections::HashSet;

fn rows(n: usize) -> serde_json::Value {
    serde_json::Value::Array(
        (0..n)
            .map(|i| serde_json::json!({"id": i, "instruction": format!("question {i}")}))
            .collect(),
    )
}

fn pipeline(base_url: &str, n: usize, extra: &[(&str, serde_json::Value)]) -> Pipeline {
    let mut task = StepSpec::new("generate", "text_generation")
        .after("load")
        .input_batch_size(7)
        .param("base_url", base_url)
        .param("model", "mock-model")
        .param("concurrency", 4)
        .param("max_attempts", 3)
        .param("timeout_secs", 2.0);
    for (k, v) in extra {
        task = task.param(k, v);
    }
    let spec = PipelineSpec::new("llm")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", rows(n))
                .batch_size(10),
        )
        .step(task);
    Pipeline::build(spec, &distill::registry(), &BuildContext::default()).unwrap()
}

fn output(db: &std::path::Path) -> Vec<distill_storage::Row> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches("generate", 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect()
}

#[test]
fn generates_one_answer_per_row_with_accounting() {
    let server = MockLlm::start(Behaviour {
        fail_every: Some(5),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.redb");
    // Every 5th request fails: with requests interleaved, a row's attempts can land on several
    // multiples of 5, so allow enough attempts that all ten failing is out of reach.
    run(
        &pipeline(
            &server.base_url(),
            30,
            &[("max_attempts", serde_json::json!(10))],
        ),
        &RunOptions::new(&db),
    )
    .unwrap();
    let rows = output(&db);
    assert_eq!(rows.len(), 30);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.get("generation"),
            Some(&Value::from(format!("echo: question {i}")))
        );
        assert_eq!(row.get("model_name"), Some(&Value::from("mock-model")));
        assert_eq!(row.get("input_tokens"), Some(&Value::Int(2)));
        assert_eq!(row.get("generation_error"), Some(&Value::Null));
    }
    let reader = RunReader::open(&db).unwrap();
    let record = reader
        .snapshot()
        .unwrap()
        .step("generate")
        .unwrap()
        .unwrap();
    let c = &record.counters;
    assert_eq!(c["requests"], 30);
    assert!(c["retries"] >= 6, "every 5th request got a 500: {c:?}");
    assert_eq!(c["input_tokens"], 60);
    assert_eq!(c["output_tokens"], 90);
    assert!(!c.contains_key("cache_hits"));
}

#[test]
fn a_request_that_keeps_failing_becomes_a_null_with_its_error() {
    let server = MockLlm::start(Behaviour {
        fail_every: Some(1),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.redb");
    run(&pipeline(&server.base_url(), 3, &[]), &RunOptions::new(&db)).unwrap();
    for row in output(&db) {
        assert_eq!(row.get("generation"), Some(&Value::Null));
        let error = row.get("generation_error").and_then(Value::as_str).unwrap();
        assert!(
            error.contains("HTTP 500") && error.contains("gave up after 3"),
            "{error}"
        );
    }
    // With on_failure: fail, the step fails instead.
    let db = dir.path().join("fail.redb");
    let err = run(
        &pipeline(
            &server.base_url(),
            3,
            &[("on_failure", serde_json::json!("fail"))],
        ),
        &RunOptions::new(&db),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("'generate'") && err.to_string().contains("HTTP 500"),
        "{err}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_at_load_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1");
    let err = run(
        &pipeline(&url, 3, &[]),
        &RunOptions::new(dir.path().join("r.redb")),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("'generate'") && msg.contains("unreachable") && msg.contains(&url),
        "{msg}"
    );
}

#[test]
fn every_answer_is_cached_and_a_finished_run_asks_nothing_again() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.redb");
    let p = pipeline(
        &server.base_url(),
        40,
        &[("num_generations", serde_json::json!(2))],
    );
    let options = RunOptions::new(&db);
    run(&p, &options).unwrap();
    let first = output(&db);
    assert_eq!(first.len(), 40);
    assert_eq!(
        first[3].get("generation"),
        Some(&Value::from(vec!["echo: question 3", "echo: question 3"]))
    );
    let answered: Vec<String> = server
        .received()
        .iter()
        .filter(|r| r.status == 200 && r.path.ends_with("/chat/completions"))
        .map(|r| r.body_hash.clone())
        .collect();
    assert_eq!(answered.len(), 80);
    // Every answer is in the cache, and a second run of the finished database asks nothing.
    // (tests/llm_kill.rs kills runs mid-way and checks that no cached answer is asked again.)
    let reader = RunReader::open(&db).unwrap();
    assert_eq!(reader.snapshot().unwrap().cache_len().unwrap(), 80);
    drop(reader);
    let before = server.count();
    run(&p, &options).unwrap();
    assert_eq!(server.count(), before, "a finished run asks nothing again");
    let unique: HashSet<&String> = answered.iter().collect();
    assert_eq!(
        unique.len(),
        40,
        "two generations of a row send the same body"
    );
}

#[test]
fn judge_rates_generations_and_keeps_the_reason_when_it_cannot() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.redb");
    let llm = |spec: StepSpec| {
        spec.param("base_url", server.base_url())
            .param("model", "mock-model")
            .param("concurrency", 4)
    };
    let spec = PipelineSpec::new("judge")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", rows(6))
                .batch_size(3),
        )
        .step(
            llm(StepSpec::new("generate", "text_generation").after("load"))
                .param("num_generations", 2)
                .output_mapping("generation", "generations"),
        )
        .step(llm(StepSpec::new("rate", "judge")
            .after("generate")
            .param("aspect", "helpfulness")));
    let pipeline = Pipeline::build(spec, &distill::registry(), &BuildContext::default()).unwrap();
    run(&pipeline, &RunOptions::new(&db)).unwrap();
    let reader = RunReader::open(&db).unwrap();
    let snap = reader.snapshot().unwrap();
    let rated: Vec<_> = snap
        .batches("rate", 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect();
    assert_eq!(rated.len(), 6);
    for row in &rated {
        // The mock echoes the prompt, which holds no rating: nulls, and the reason kept.
        assert_eq!(
            row.get("ratings"),
            Some(&Value::List(vec![Value::Null, Value::Null]))
        );
        let error = row.get("judge_error").and_then(Value::as_str).unwrap();
        assert_eq!(error, "no rating from 1 to 5 for text 1, 2");
        assert_eq!(
            row.get("generations")
                .and_then(Value::as_list)
                .map(<[Value]>::len),
            Some(2)
        );
    }
    // The judge saw both generations and the aspect.
    let asked = server
        .received()
        .into_iter()
        .filter(|r| r.body.contains("helpfulness"))
        .count();
    assert_eq!(asked, 6);
    assert!(
        server
            .received()
            .iter()
            .any(|r| r.body.contains("<text 2>"))
    );
}

fn structured(server: &MockLlm, schema: serde_json::Value) -> Pipeline {
    let spec = PipelineSpec::new("structured")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", rows(4))
                .batch_size(4),
        )
        .step(
            StepSpec::new("extract", "structured_generation")
                .after("load")
                .param("base_url", server.base_url())
                .param("model", "mock-model")
                .param("schema", schema)
                .param("max_invalid_retries", 2),
        );
    Pipeline::build(spec, &distill::registry(), &BuildContext::default()).unwrap()
}

fn extracted(db: &std::path::Path) -> Vec<distill_storage::Row> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches("extract", 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect()
}

#[test]
fn structured_answers_are_validated_and_invalid_ones_retried_then_null() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    // The mock answers {"answer": <prompt>, "score": 3}.
    let ok = serde_json::json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
        "required": ["answer", "score"]
    });
    let db = dir.path().join("ok.redb");
    run(&structured(&server, ok), &RunOptions::new(&db)).unwrap();
    for (i, row) in extracted(&db).iter().enumerate() {
        let Some(Value::Map(m)) = row.get("structured") else {
            panic!("{row:?}")
        };
        assert_eq!(m.get("answer"), Some(&Value::from(format!("question {i}"))));
        assert_eq!(m.get("score"), Some(&Value::Int(3)));
        assert_eq!(row.get("structured_error"), Some(&Value::Null));
    }
    let sent = server
        .received()
        .iter()
        .filter(|r| r.body.contains("\"schema\""))
        .count();
    assert_eq!(sent, 4, "valid answers are not asked again");

    let strict = serde_json::json!({
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 4}},
        "required": ["score"]
    });
    let before = server.count();
    let db = dir.path().join("strict.redb");
    run(&structured(&server, strict), &RunOptions::new(&db)).unwrap();
    for row in extracted(&db) {
        assert_eq!(row.get("structured"), Some(&Value::Null));
        let why = row.get("structured_error").and_then(Value::as_str).unwrap();
        assert!(
            why.contains("does not match the schema") && why.contains("/score"),
            "{why}"
        );
    }
    // 4 rows x (1 + 2 retries), plus the endpoint check at load.
    assert_eq!(server.count() - before, 4 * 3 + 1);
    let reader = RunReader::open(&db).unwrap();
    let record = reader.snapshot().unwrap().step("extract").unwrap().unwrap();
    assert_eq!(record.counters["invalid_answers"], 12);
}

#[test]
fn a_bad_schema_is_a_parameter_error() {
    let server = MockLlm::start(Behaviour::default());
    let spec = PipelineSpec::new("bad")
        .step(StepSpec::new("load", "inline").param("rows", rows(1)))
        .step(
            StepSpec::new("extract", "structured_generation")
                .after("load")
                .param("base_url", server.base_url())
                .param("model", "m")
                .param("schema", serde_json::json!({"type": "no-such-type"})),
        );
    let err = Pipeline::build(spec, &distill::registry(), &BuildContext::default())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("'extract'") && err.to_string().contains("schema"),
        "{err}"
    );
}

#[test]
fn a_changed_pipeline_started_anew_in_the_same_database_reuses_every_paid_answer() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.redb");
    run(
        &pipeline(&server.base_url(), 20, &[]),
        &RunOptions::new(&db),
    )
    .unwrap();
    let paid = server.count();
    // The same requests in a changed pipeline (another batch size, an extra step after).
    let mut spec = pipeline(&server.base_url(), 20, &[]).spec().clone();
    spec.steps[1].input_batch_size = Some(3);
    spec = spec.step(
        StepSpec::new("keep", "keep_columns")
            .after("generate")
            .param("columns", vec!["id", "generation"]),
    );
    let changed = Pipeline::build(spec, &distill::registry(), &BuildContext::default()).unwrap();
    // Resuming the changed pipeline recomputes the edited task, and its loader too (the
    // loader's batches, consumed in the same stage, were reclaimed): answers from the cache.
    let summary = run(&changed, &RunOptions::new(&db)).unwrap();
    assert_eq!(summary.leaves, vec![("keep".to_owned(), 20)]);
    assert_eq!(
        server.count(),
        paid + 1,
        "only the endpoint check at load; every answer from the cache"
    );
    // Starting anew in the same database asks nothing again either.
    let mut options = RunOptions::new(&db);
    options.new_run = true;
    run(&changed, &options).unwrap();
    assert_eq!(
        server.count(),
        paid + 2,
        "only the endpoint check at load; every answer from the cache"
    );
    let reader = RunReader::open(&db).unwrap();
    let snap = reader.snapshot().unwrap();
    let keep: Vec<_> = snap
        .batches("keep", 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect();
    assert_eq!(keep.len(), 20);
    assert_eq!(
        keep[7].get("generation"),
        Some(&Value::from("echo: question 7"))
    );
    assert_eq!(
        snap.step("generate").unwrap().unwrap().counters["cache_hits"],
        20
    );
    assert_eq!(snap.meta().unwrap().signature, changed.signature());
}

/// Both tasks of a chain in batch mode (two generations per row, then a judge): the rows an
/// online run makes, with nothing asked online and every request in one job.
#[test]
fn a_generate_and_judge_chain_in_batch_mode_equals_the_online_chain() {
    let chain = |server: &MockLlm, mode: &str| {
        let llm = |spec: StepSpec| {
            spec.param("base_url", server.base_url())
                .param("model", "mock-model")
                .param("mode", mode)
                .param("poll_secs", 1)
                .param("batch_window", 4)
        };
        let spec = PipelineSpec::new("chain")
            .step(
                StepSpec::new("load", "inline")
                    .param("rows", rows(9))
                    .batch_size(3),
            )
            .step(
                llm(StepSpec::new("generate", "text_generation").after("load"))
                    .input_batch_size(2)
                    .param("num_generations", 2)
                    .output_mapping("generation", "generations"),
            )
            .step(llm(StepSpec::new("rate", "judge").after("generate")).input_batch_size(4));
        Pipeline::build(spec, &distill::registry(), &BuildContext::default()).unwrap()
    };
    let leaf = |db: &std::path::Path| -> Vec<distill_storage::Row> {
        let reader = RunReader::open(db).unwrap();
        let snap = reader.snapshot().unwrap();
        snap.batches("rate", 0)
            .unwrap()
            .flat_map(|b| b.unwrap().rows)
            .collect()
    };
    let server = MockLlm::start(Behaviour::default());
    server.set_batch_behaviour(distill_testkit::mock_batch::BatchBehaviour {
        processing: Some(std::time::Duration::from_millis(50)),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    run(
        &chain(&server, "batch"),
        &RunOptions::new(dir.path().join("b.redb")),
    )
    .unwrap();
    assert_eq!(server.chats_answered(), 0);
    let log = server.batch_log();
    let submissions = log.submissions();
    // 9 rows x 2 generations, then 9 judge requests: each in one job.
    assert_eq!(submissions.len(), 18 + 9);
    assert!(submissions.values().all(|n| *n == 1));
    // Jobs of at most 4 rows: 8 generation requests, 4 judge requests.
    assert!(log.created.iter().all(|j| j.custom_ids.len() <= 8));
    let online = MockLlm::start(Behaviour::default());
    run(
        &chain(&online, "online"),
        &RunOptions::new(dir.path().join("o.redb")),
    )
    .unwrap();
    assert_eq!(online.chats_answered(), 27);
    assert_eq!(
        leaf(&dir.path().join("b.redb")),
        leaf(&dir.path().join("o.redb"))
    );
}
