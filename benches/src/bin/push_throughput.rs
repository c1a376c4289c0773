//! Pushing to the Hub, against the loopback Hub double: the pipeline's rows/s with a push
//! section (pushing every N rows while it runs) against without, and `distill push` of a
//! finished 1,000,000-row run (rows/s and MB/s of Parquet through the whole protocol).
//!
//! cargo run --release -p distill-benches --bin push_throughput
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000), DISTILL_BENCH_PUSH_EVERY (rows between
//! pushes, default 100,000).

use distill::hub::{HubAccess, PushOptions};
use distill::{PushSpec, RunOptions};
use distill_benches::{DEFAULT_BATCH, DEFAULT_ROWS, env_or, pipeline_pushing};
use distill_testkit::mock_hub::{HubBehaviour, MockHub};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const TOKEN: &str = "hf_bench";

fn access(hub: &MockHub) -> HubAccess {
    HubAccess {
        endpoint: hub.endpoint(),
        token: Some(TOKEN.into()),
    }
}

fn run_pipeline(db: &Path, rows: u64, push: Option<(PushSpec, &MockHub)>) -> (f64, u64) {
    let options = RunOptions::new(db);
    let spec = push.as_ref().map(|(spec, _)| spec.clone());
    let hub = push
        .as_ref()
        .map(|(_, hub)| access(hub))
        .unwrap_or_default();
    let start = Instant::now();
    let summary =
        distill::run_with_hub(&pipeline_pushing(rows, DEFAULT_BATCH, spec), &options, &hub)
            .expect("bench run");
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    let pushed = summary.push.map_or(0, |p| {
        assert_eq!(p.last_error, None, "the push failed");
        p.total_rows()
    });
    (rate, pushed)
}

fn main() {
    let rows = env_or("DISTILL_BENCH_ROWS", DEFAULT_ROWS);
    let every = env_or("DISTILL_BENCH_PUSH_EVERY", 100_000u64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("push_throughput: {rows} rows, push every {every} rows, {cores} cores");
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        ..HubBehaviour::default()
    });

    run_pipeline(&dir.path().join("warm-up.redb"), rows / 10 + 1, None);
    let quiet = dir.path().join("quiet.redb");
    let (without, _) = run_pipeline(&quiet, rows, None);
    let mut spec = PushSpec::new("bench/live");
    spec.every_rows = Some(every);
    let (with, pushed) = run_pipeline(&dir.path().join("pushing.redb"), rows, Some((spec, &hub)));
    assert_eq!(pushed, rows, "every row of the leaf pushed");
    let live_commits = hub.commits("bench/live").len();

    let options = PushOptions {
        db: quiet,
        spec: PushSpec::new("bench/after"),
        access: access(&hub),
        stop: Arc::new(AtomicBool::new(false)),
        poll: Duration::from_millis(100),
    };
    let start = Instant::now();
    let outcome = distill::hub::push(&options, |_, _| {}).expect("push");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(outcome.status.total_rows(), rows);
    let bytes: usize = hub
        .files("bench/after")
        .iter()
        .filter(|(p, _)| p.ends_with(".parquet"))
        .map(|(_, b)| b.len())
        .sum();

    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    println!("| pipeline without push | {without:.0} rows/s |");
    println!(
        "| pipeline pushing every {every} rows ({live_commits} commits) | {with:.0} rows/s ({:.1}% of without) |",
        100.0 * with / without
    );
    println!(
        "| distill push of the finished run | {:.0} rows/s, {:.1} MB/s of Parquet ({:.1} MB, {} commits) |",
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6,
        hub.commits("bench/after").len()
    );
}
