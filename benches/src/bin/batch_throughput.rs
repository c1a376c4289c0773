//! Rows per second of a `text_generation` task in batch mode against the loopback batch
//! double (jobs complete as soon as they are created; each is polled once a second): 50,000
//! rows in jobs of 10,000, every answer committed to the run's cache from the jobs' output
//! files, then processed from the cache. A second run (`--new`, same database) finds every
//! answer in the cache and submits nothing: the cost of processing alone.
//!
//! cargo run --release -p distill-benches --bin batch_throughput
//! Environment: DISTILL_BENCH_ROWS (default 50,000), DISTILL_BENCH_WINDOW (rows per job,
//! 10,000), DISTILL_BENCH_BATCH (input batch size, 256).

use distill::{BuildContext, Pipeline, PipelineSpec, RunOptions, StepSpec, run};
use distill_benches::env_or;
use distill_testkit::mock_batch::BatchBehaviour;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::time::{Duration, Instant};

fn main() {
    let rows: usize = env_or("DISTILL_BENCH_ROWS", 50_000);
    let window: usize = env_or("DISTILL_BENCH_WINDOW", 10_000);
    let batch: usize = env_or("DISTILL_BENCH_BATCH", 256);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("batch_throughput: {rows} rows, jobs of {window}, batch {batch}, {cores} cores");
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let server = MockLlm::start(Behaviour::default());
    server.set_batch_behaviour(BatchBehaviour {
        processing: Some(Duration::ZERO),
        ..BatchBehaviour::default()
    });
    let data: Vec<serde_json::Value> = (0..rows)
        .map(|i| serde_json::json!({"instruction": format!("write about item {i}")}))
        .collect();
    let spec = PipelineSpec::new("batch-bench")
        .step(
            StepSpec::new("load", "inline")
                .param("rows", data)
                .batch_size(batch),
        )
        .step(
            StepSpec::new("generate", "text_generation")
                .after("load")
                .input_batch_size(batch)
                .param("base_url", server.base_url())
                .param("model", "mock-model")
                .param("mode", "batch")
                .param("batch_window", window)
                .param("max_open_jobs", rows.div_ceil(window).max(1))
                .param("poll_secs", 1),
        );
    let pipeline =
        Pipeline::build(spec, &distill::registry(), &BuildContext::default()).expect("pipeline");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = RunOptions::new(dir.path().join("bench.redb"));
    let started = Instant::now();
    let summary = run(&pipeline, &options).expect("run");
    let batch_secs = started.elapsed().as_secs_f64();
    assert_eq!(summary.leaves[0].1, rows as u64);
    let jobs = server.batch_log().created.len();
    options.new_run = true;
    let started = Instant::now();
    let summary = run(&pipeline, &options).expect("cached run");
    let cached_secs = started.elapsed().as_secs_f64();
    assert_eq!(summary.leaves[0].1, rows as u64);
    assert_eq!(
        server.batch_log().created.len(),
        jobs,
        "nothing submitted again"
    );
    println!("| measure | figure |");
    println!("|---|---|");
    println!("| jobs | {jobs} |");
    println!(
        "| batch run (submit, poll, collect, process) | {batch_secs:.2} s, {:.0} rows/s |",
        rows as f64 / batch_secs
    );
    println!(
        "| the same rows from the cache (--new) | {cached_secs:.2} s, {:.0} rows/s |",
        rows as f64 / cached_secs
    );
}
