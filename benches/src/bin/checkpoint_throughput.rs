//! Checkpoints beside a run: the pipeline's rows/s with a `checkpoint:` section taking a
//! snapshot every 10 s (copy of one read transaction, zstd, sha256, upload, manifest, prune)
//! against the same run without. The target is a `file://` directory on the same disk (the
//! `object_store` local store: the upload is a local write, so the disk and the CPU the
//! snapshot takes are all in the figure, the network is not). A CPU-bound run of a generator
//! and four CPU steps is the worst case: an LLM-bound run leaves the cores idle.
//!
//! cargo run --release -p distill-benches --bin checkpoint_throughput
//! Environment: DISTILL_BENCH_ROWS (default 2,000,000), DISTILL_BENCH_CHECKPOINT_SECS
//! (default 10), DISTILL_BENCH_ROUNDS (runs of each, alternated; default 2).

use distill::RunOptions;
use distill::checkpoint::CheckpointStatus;
use distill_benches::{DEFAULT_BATCH, env_or, pipeline_checkpointing};
use distill_engine::CheckpointSpec;
use std::path::Path;
use std::time::Instant;

fn run(
    db: &Path,
    rows: u64,
    checkpoint: Option<CheckpointSpec>,
) -> (f64, Option<CheckpointStatus>) {
    let pipeline = pipeline_checkpointing(rows, DEFAULT_BATCH, checkpoint);
    let start = Instant::now();
    let summary = distill::run_with_hub(&pipeline, &RunOptions::new(db), &Default::default())
        .expect("bench run");
    (
        rows as f64 / start.elapsed().as_secs_f64(),
        summary.checkpoint,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rows = env_or("DISTILL_BENCH_ROWS", 2_000_000u64);
    let every = env_or("DISTILL_BENCH_CHECKPOINT_SECS", 10u64);
    let rounds = env_or("DISTILL_BENCH_ROUNDS", 2usize).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "checkpoint_throughput: {rows} rows, a snapshot every {every} s, {rounds} rounds, {cores} cores"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("store dir");
    run(&dir.path().join("warm-up.redb"), rows / 10 + 1, None);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut last = None;
    let mut plain_bytes = 0;
    for round in 0..rounds {
        let db = dir.path().join(format!("plain-{round}.redb"));
        without.push(run(&db, rows, None).0);
        plain_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
        std::fs::remove_file(&db).expect("remove db");
        let mut spec = CheckpointSpec::new(format!("file://{}", store.display()));
        spec.every_secs = Some(every);
        spec.keep = 2;
        let db = dir.path().join(format!("checkpointed-{round}.redb"));
        let (rate, status) = run(&db, rows, Some(spec));
        with.push(rate);
        let status = status.expect("a checkpoint section");
        assert_eq!(status.last_error, None, "a snapshot failed");
        let db_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
        last = Some((status, db_bytes));
        std::fs::remove_file(&db).expect("remove db");
    }
    let (status, db_bytes) = last.expect("one round");
    let report = status.last.expect("a snapshot");
    let (a, b) = (median(without), median(with));
    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    println!("| pipeline without checkpoints (median) | {a:.0} rows/s |");
    println!(
        "| pipeline with a snapshot every {every} s (median; {} snapshots in the last run) | {b:.0} rows/s ({:.1}% of without) |",
        status.taken,
        100.0 * b / a
    );
    println!(
        "| last snapshot | {:.1} MB compressed from a {:.1} MB run database ({:.1} MB without checkpoints) |",
        report.size as f64 / 1e6,
        db_bytes as f64 / 1e6,
        plain_bytes as f64 / 1e6
    );
}
