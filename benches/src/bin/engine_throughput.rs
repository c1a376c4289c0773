//! Rows per second through a pipeline of four CPU steps, with the durable run log against the
//! same run with non-durable commits (redb `Durability::None`). Goal: durable / not >= 0.85.
//!
//! cargo run --release -p distill-benches --bin engine_throughput
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000), DISTILL_BENCH_BATCH (default 1,000),
//! DISTILL_BENCH_ONLY=durable (only the durable run, to read its peak memory).

use distill_benches::{DEFAULT_BATCH, DEFAULT_ROWS, env_or, pipeline};
use distill_engine::{LogOptions, RunOptions, run};
use std::time::Instant;

fn measure(rows: u64, batch: usize, durable: bool) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.redb");
    let mut options = RunOptions::new(&db);
    options.log = LogOptions { durable };
    let p = pipeline(rows, batch);
    let start = Instant::now();
    let summary = run(&p, &options).expect("bench run");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(summary.leaves, vec![("chars".to_string(), rows)]);
    let bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    (rows as f64 / secs, bytes)
}

fn main() {
    let rows = env_or("DISTILL_BENCH_ROWS", DEFAULT_ROWS);
    let batch = env_or("DISTILL_BENCH_BATCH", DEFAULT_BATCH);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "engine_throughput: {rows} rows, 4 CPU steps + generator, batch {batch}, {cores} cores"
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    // DISTILL_BENCH_ONLY=durable measures the durable run alone (for its peak memory).
    if std::env::var("DISTILL_BENCH_ONLY").as_deref() == Ok("durable") {
        let (durable, bytes) = measure(rows, batch, true);
        println!(
            "durable only: {durable:.0} rows/s, {:.1} MiB on disk",
            bytes as f64 / 1048576.0
        );
        return;
    }
    // Warm-up (page cache, allocator) with a small run, then the measured ones.
    measure(rows / 20 + 1, batch, true);
    let (not_durable, bytes_nd) = measure(rows, batch, false);
    let (durable, bytes_d) = measure(rows, batch, true);
    println!("| log | rows/s | MiB on disk |");
    println!("|---|---|---|");
    println!(
        "| durable (Immediate, group commit) | {durable:.0} | {:.1} |",
        bytes_d as f64 / 1048576.0
    );
    println!(
        "| not durable (Durability::None) | {not_durable:.0} | {:.1} |",
        bytes_nd as f64 / 1048576.0
    );
    println!(
        "ratio durable / not durable: {:.3} (goal >= 0.85)",
        durable / not_durable
    );
}
