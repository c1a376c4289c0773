//! Durable commits to a run database: one transaction per batch against group commit, for
//! batches of 1, 50 and 1,000 small rows, while two other threads keep both cores busy.
//! Goal: group commit delivers at least 10x the batches/s of one commit per batch.
//!
//! cargo run --release -p distill-benches --bin storage_commit
//! Environment: DISTILL_BENCH_SECS (seconds per case, default 3).

use distill_storage::{Batch, GroupCommitter, NewRun, Progress, Row, RunLog, Ticket, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1, 50, 1_000];
const PRODUCERS: usize = 4;
const IN_FLIGHT: usize = 64;
const BURNERS: usize = 2;
const DEFAULT_SECS: u64 = 3;

fn row(i: usize) -> Row {
    Row::new()
        .with("id", i as i64)
        .with(
            "text",
            format!("a small row of text number {i:>8} for the benchmark"),
        )
        .with("score", i as f64 / 7.0)
        .with("tags", vec![Value::from("alpha"), Value::from("beta")])
        .with("flag", i.is_multiple_of(2))
}

fn unit(step: &str, seq: u64, rows: &[Row]) -> Progress {
    Progress::new()
        .batch(Batch {
            step: step.into(),
            seq,
            rows: rows.to_vec(),
            last: false,
        })
        .cursor(format!("{step}<-src"), seq)
}

/// Keeps a core busy until `stop`.
fn burner(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let buf = vec![7u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            std::hint::black_box(blake3::hash(std::hint::black_box(&buf)));
        }
    })
}

struct Figures {
    batches: u64,
    secs: f64,
    bytes: u64,
}

fn case(size: usize, group: bool, duration: Duration) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.redb");
    let run = NewRun {
        signature: "bench".into(),
        pipeline: "bench".into(),
        created_by: "bench".into(),
    };
    let log = Arc::new(RunLog::create(&path, run).expect("create"));
    let committer = Arc::new(GroupCommitter::start(log.clone()));
    let rows: Arc<Vec<Row>> = Arc::new((0..size).map(row).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..BURNERS).map(|_| burner(stop.clone())).collect();
    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (log, committer, rows) = (log.clone(), committer.clone(), rows.clone());
            std::thread::spawn(move || {
                let step = format!("step{p}");
                let mut seq = 0u64;
                let mut tickets: VecDeque<Ticket> = VecDeque::new();
                while start.elapsed() < duration {
                    if group {
                        if tickets.len() >= IN_FLIGHT {
                            tickets.pop_front().map(|t| t.wait().expect("commit"));
                        }
                        tickets
                            .push_back(committer.submit(unit(&step, seq, &rows)).expect("submit"));
                    } else {
                        log.commit(unit(&step, seq, &rows)).expect("commit");
                    }
                    seq += 1;
                }
                for t in tickets {
                    t.wait().expect("commit");
                }
                seq
            })
        })
        .collect();
    let batches: u64 = producers
        .into_iter()
        .map(|p| p.join().expect("producer"))
        .sum();
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().expect("burner");
    }
    drop(committer);
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    Figures {
        batches,
        secs,
        bytes,
    }
}

fn main() {
    let secs = std::env::var("DISTILL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let duration = Duration::from_secs(secs);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "storage_commit: {PRODUCERS} producer threads, {BURNERS} busy threads, {secs} s per case, {cores} cores"
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("| rows/batch | mode | batches | batches/s | rows/s | MiB on disk |");
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for size in SIZES {
        let mut per_sec = [0.0; 2];
        for (k, group) in [false, true].into_iter().enumerate() {
            let f = case(size, group, duration);
            let bps = f.batches as f64 / f.secs;
            per_sec[k] = bps;
            let mode = if group {
                "group commit"
            } else {
                "one txn per batch"
            };
            println!(
                "| {size} | {mode} | {} | {bps:.0} | {:.0} | {:.1} |",
                f.batches,
                bps * size as f64,
                f.bytes as f64 / 1048576.0
            );
        }
        ratios.push((size, per_sec[1] / per_sec[0]));
    }
    for (size, ratio) in ratios {
        println!("rows/batch {size}: group / single = {ratio:.1}x (goal >= 10x)");
    }
}
