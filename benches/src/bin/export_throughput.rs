//! Export of a 1,000,000-row leaf to Parquet (rows/s), and the pipeline's rows/s while another
//! process exports the live run every few seconds, against without. Goal: under 10% slower.
//!
//! cargo run --release -p distill-benches --bin export_throughput
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000), DISTILL_BENCH_EXPORT_EVERY (seconds
//! between live exports, default 5).

use distill::{ExportFormat, RunOptions, export, run};
use distill_benches::{DEFAULT_BATCH, DEFAULT_ROWS, env_or, pipeline};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Measured runs of each kind.
const ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run_pipeline(db: &Path, rows: u64) -> f64 {
    let start = Instant::now();
    run(&pipeline(rows, DEFAULT_BATCH), &RunOptions::new(db)).expect("bench run");
    rows as f64 / start.elapsed().as_secs_f64()
}

/// The exporter process: exports `db` every `every` seconds until killed; prints each time.
fn export_loop(db: &Path, out: &Path, every: Duration) {
    loop {
        std::thread::sleep(every);
        let start = Instant::now();
        match export(db, out, ExportFormat::Parquet) {
            Ok(d) => {
                let rows: u64 = d.leaves.iter().map(|l| l.rows).sum();
                println!(
                    "live export: {rows} rows in {:.2} s",
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e) => println!("live export: {e}"),
        }
    }
}

fn spawn_exporter(db: &Path, out: &Path, every: u64) -> Child {
    Command::new(std::env::current_exe().expect("bench path"))
        .args([
            "--export-loop",
            &db.display().to_string(),
            &out.display().to_string(),
            &every.to_string(),
        ])
        .spawn()
        .expect("spawn exporter")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--export-loop") {
        let every = Duration::from_secs(args[4].parse().unwrap_or(5));
        export_loop(Path::new(&args[2]), Path::new(&args[3]), every);
        return;
    }
    let rows = env_or("DISTILL_BENCH_ROWS", DEFAULT_ROWS);
    let every: u64 = env_or("DISTILL_BENCH_EXPORT_EVERY", 5);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("export_throughput: {rows} rows, live export every {every} s, {cores} cores");
    println!("command: {}", args.join(" "));
    let dir = tempfile::tempdir().expect("temp dir");

    run_pipeline(&dir.path().join("warm-up.redb"), rows / 10 + 1);
    let quiet = dir.path().join("quiet.redb");
    let without = run_pipeline(&quiet, rows);
    let start = Instant::now();
    let d = export(&quiet, &dir.path().join("export"), ExportFormat::Parquet).expect("export");
    let secs = start.elapsed().as_secs_f64();
    let exported: u64 = d.leaves.iter().map(|l| l.rows).sum();
    let parquet_bytes: u64 = std::fs::read_dir(dir.path().join("export/chars/train"))
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);

    // Runs vary by more than the effect measured: alternate, and compare medians.
    let mut without_runs = vec![without];
    let mut with_runs = Vec::new();
    for round in 0..ROUNDS {
        let live = dir.path().join(format!("live-{round}.redb"));
        let mut exporter = spawn_exporter(&live, &dir.path().join("live-export"), every);
        with_runs.push(run_pipeline(&live, rows));
        let _ = exporter.kill();
        let _ = exporter.wait();
        if round + 1 < ROUNDS {
            without_runs.push(run_pipeline(
                &dir.path().join(format!("quiet-{round}.redb")),
                rows,
            ));
        }
    }
    let without = median(&mut without_runs);
    let with = median(&mut with_runs);

    println!("| measure | figure |");
    println!("|---|---|");
    println!(
        "| Parquet export of {exported} rows | {:.0} rows/s ({secs:.2} s, {:.1} MiB) |",
        exported as f64 / secs,
        parquet_bytes as f64 / 1048576.0
    );
    println!("| pipeline without exports (median of {ROUNDS}) | {without:.0} rows/s |");
    println!(
        "| pipeline with a live export every {every} s (median of {ROUNDS}) | {with:.0} rows/s |"
    );
    println!(
        "slowdown while exporting: {:.1}% (goal < 10%)",
        (1.0 - with / without) * 100.0
    );
}
