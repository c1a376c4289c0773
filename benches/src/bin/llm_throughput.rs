//! Requests per second of a `text_generation` task against a loopback OpenAI-compatible server
//! with a fixed 50 ms latency, at concurrency 64, over 20,000 rows; every answer is committed
//! to the run's cache. The ceiling is 64 / 0.05 s = 1,280 requests/s; the goal is 90% of it.
//!
//! cargo run --release -p distill-benches --bin llm_throughput
//! Environment: DISTILL_BENCH_REQUESTS (default 20,000), DISTILL_BENCH_CONCURRENCY (64),
//! DISTILL_BENCH_LATENCY_MS (50), DISTILL_BENCH_BATCH (input batch size, default 256).

use distill::{BuildContext, Pipeline, PipelineSpec, RunOptions, StepSpec, run};
use distill_benches::env_or;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::time::{Duration, Instant};

fn main() {
    let requests: usize = env_or("DISTILL_BENCH_REQUESTS", 20_000);
    let concurrency: usize = env_or("DISTILL_BENCH_CONCURRENCY", 64);
    let latency_ms: u64 = env_or("DISTILL_BENCH_LATENCY_MS", 50);
    let batch: usize = env_or("DISTILL_BENCH_BATCH", 256);
    let ceiling = concurrency as f64 / (latency_ms as f64 / 1000.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "llm_throughput: {requests} requests, concurrency {concurrency}, latency {latency_ms} ms, batch {batch}, {cores} cores"
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(latency_ms),
        ..Behaviour::default()
    });
    let rows: Vec<serde_json::Value> = (0..requests)
        .map(|i| serde_json::json!({"instruction": format!("write about item {i}")}))
        .collect();
    let spec = PipelineSpec::new("llm-bench")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", rows)
                .batch_size(batch),
        )
        .step(
            StepSpec::new("generate", "text_generation")
                .after("load")
                .input_batch_size(batch)
                .param("base_url", server.base_url())
                .param("model", "mock-model")
                .param("concurrency", concurrency),
        );
    let pipeline =
        Pipeline::build(spec, &distill::registry(), &BuildContext::default()).expect("pipeline");
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let summary = run(&pipeline, &RunOptions::new(dir.path().join("bench.redb"))).expect("run");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(summary.leaves[0].1, requests as u64);
    let achieved = server.count().saturating_sub(1) as f64 / secs; // minus GET /models
    println!("| measure | figure |");
    println!("|---|---|");
    println!(
        "| requests answered | {} |",
        server.count().saturating_sub(1)
    );
    println!("| wall time | {secs:.2} s |");
    println!("| achieved | {achieved:.0} requests/s |");
    println!("| ceiling 64 / 0.05 s | {ceiling:.0} requests/s |");
    println!(
        "share of the ceiling: {:.1}% (goal >= 90%)",
        achieved / ceiling * 100.0
    );
    println!(
        "peak requests in flight at the server: {}",
        server.peak_in_flight()
    );
    let db_bytes = std::fs::metadata(dir.path().join("bench.redb")).map_or(0, |m| m.len());
    println!(
        "run database at the end: {:.1} MB (cached answers compressed, the loader's batches reclaimed)",
        db_bytes as f64 / 1e6
    );
}
