//! Rows per second of an `embeddings` task against a loopback OpenAI-compatible server with a
//! fixed 50 ms latency per request, 64 rows per request, concurrency 16, over 100,000 rows;
//! every vector is committed to the run's cache (one record per row). The ceiling is
//! 16 × 64 / 0.05 s = 20,480 rows/s.
//!
//! cargo run --release -p distill-benches --bin embeddings_throughput
//! Environment: DISTILL_BENCH_ROWS (default 100,000), DISTILL_BENCH_CONCURRENCY (16),
//! DISTILL_BENCH_ROWS_PER_REQUEST (64), DISTILL_BENCH_LATENCY_MS (50),
//! DISTILL_BENCH_BATCH (input batch size, default 1,024).

use distill::{BuildContext, Pipeline, PipelineSpec, RunOptions, StepSpec, run};
use distill_benches::env_or;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::time::{Duration, Instant};

fn main() {
    let rows: usize = env_or("DISTILL_BENCH_ROWS", 100_000);
    let concurrency: usize = env_or("DISTILL_BENCH_CONCURRENCY", 16);
    let per_request: usize = env_or("DISTILL_BENCH_ROWS_PER_REQUEST", 64);
    let latency_ms: u64 = env_or("DISTILL_BENCH_LATENCY_MS", 50);
    let batch: usize = env_or("DISTILL_BENCH_BATCH", 1024);
    let ceiling = (concurrency * per_request) as f64 / (latency_ms as f64 / 1000.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "embeddings_throughput: {rows} rows, {per_request} rows per request, concurrency {concurrency}, latency {latency_ms} ms, batch {batch}, {cores} cores"
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(latency_ms),
        ..Behaviour::default()
    });
    let inputs: Vec<serde_json::Value> = (0..rows)
        .map(|i| serde_json::json!({"input": format!("passage number {i}")}))
        .collect();
    let spec = PipelineSpec::new("embeddings-bench")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", inputs)
                .batch_size(batch),
        )
        .step(
            StepSpec::new("embed", "embeddings")
                .after("load")
                .input_batch_size(batch)
                .param("base_url", server.base_url())
                .param("model", "mock-embed")
                .param("rows_per_request", per_request)
                .param("concurrency", concurrency),
        );
    let pipeline =
        Pipeline::build(spec, &distill::registry(), &BuildContext::default()).expect("pipeline");
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let summary = run(&pipeline, &RunOptions::new(dir.path().join("bench.redb"))).expect("run");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(summary.leaves[0].1, rows as u64);
    let requests = server.count().saturating_sub(1); // minus GET /models
    let achieved = rows as f64 / secs;
    println!("| measure | figure |");
    println!("|---|---|");
    println!("| rows embedded | {rows} |");
    println!("| requests answered | {requests} |");
    println!("| wall time | {secs:.2} s |");
    println!("| achieved | {achieved:.0} rows/s |");
    println!(
        "| ceiling {concurrency} x {per_request} / {:.2} s | {ceiling:.0} rows/s |",
        latency_ms as f64 / 1000.0
    );
    println!("fraction of the limit: {:.3}", achieved / ceiling);
    println!(
        "peak requests in flight at the server: {}",
        server.peak_in_flight()
    );
}
