//! `minhash_dedup` on short texts: rows/s through a generator and the streaming MinHash step
//! (durable log), and the process's peak RSS, at a quarter and at all of the rows, each in a
//! child process of its own: the peak grows with the band keys of the kept rows, not with
//! the texts.
//!
//! cargo run --release -p distill-benches --bin minhash_dedup
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000), DISTILL_BENCH_BATCH (default 1,000).
//! Texts: 12 words from a 50,000-word vocabulary, seeded; every 10th row is a copy of an
//! earlier one with one word changed (Jaccard 11/13 ≈ 0.85, just above the threshold, where
//! LSH finds about two in three: the kept count is for the record, accuracy is
//! `tests/minhash_dedup.rs`'s job).

use distill_benches::{DEFAULT_BATCH, DEFAULT_ROWS, env_or};
use distill_engine::step::{Generator, Lifecycle, StepKind, StepResult};
use distill_engine::{BuildContext, Pipeline, PipelineSpec, Registry, RunOptions, StepSpec, run};
use distill_storage::Row;
use std::time::Instant;

const SEED: u64 = 2024;
const WORDS: u64 = 12;
const VOCABULARY: u64 = 50_000;

struct Texts {
    rows: u64,
}

/// Row `i`'s words: its own, or (every 10th row) an earlier row's with one changed.
fn words(i: u64) -> Vec<u64> {
    let own = |i: u64| -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(SEED ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..WORDS).map(|_| rng.u64(0..VOCABULARY)).collect()
    };
    if i % 10 == 9 {
        let mut w = own(i / 2);
        w[0] = (w[0] + 1) % VOCABULARY;
        w
    } else {
        own(i)
    }
}

impl Lifecycle for Texts {}
impl Generator for Texts {
    fn outputs(&self) -> Vec<String> {
        vec!["id".into(), "text".into()]
    }
    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let end = (offset + count as u64).min(self.rows);
        let rows = (offset..end)
            .map(|i| {
                let text: Vec<String> = words(i).iter().map(|w| format!("w{w}")).collect();
                Row::new().with("id", i as i64).with("text", text.join(" "))
            })
            .collect();
        Ok((rows, end >= self.rows))
    }
}

fn pipeline(rows: u64, batch: usize) -> Pipeline {
    let mut registry = Registry::default();
    registry.register("texts", move |_, _: &BuildContext| {
        Ok(StepKind::Generator(Box::new(Texts { rows })))
    });
    let spec = PipelineSpec::new("minhash-bench")
        .step(StepSpec::new("texts", "texts").batch_size(batch))
        .step(
            StepSpec::new("dedup", "minhash_dedup")
                .after("texts")
                .input_batch_size(batch)
                .param("column", "text")
                .param("threshold", 0.8),
        );
    Pipeline::build(spec, &registry, &BuildContext::default()).expect("valid bench pipeline")
}

/// Peak resident memory of this process, in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let rows = env_or("DISTILL_BENCH_ROWS", DEFAULT_ROWS);
    let batch = env_or("DISTILL_BENCH_BATCH", DEFAULT_BATCH);
    if let Ok(n) = std::env::var("DISTILL_BENCH_CHILD") {
        let n: u64 = n.parse().expect("rows");
        let dir = tempfile::tempdir().expect("temp dir");
        let options = RunOptions::new(dir.path().join("bench.redb"));
        let p = pipeline(n, batch);
        let start = Instant::now();
        let summary = run(&p, &options).expect("bench run");
        let secs = start.elapsed().as_secs_f64();
        let kept = summary.leaves.first().map_or(0, |l| l.1);
        println!(
            "{n}\t{secs:.2}\t{:.0}\t{kept}\t{:.0}",
            n as f64 / secs,
            peak_rss_mib()
        );
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "minhash_dedup: {rows} short texts (12 words), threshold 0.8, 128 permutations, batch {batch}, {cores} cores, durable log"
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("| rows | seconds | rows/s | kept | peak RSS (MiB) |");
    println!("|---|---|---|---|---|");
    for n in [rows / 4, rows] {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("DISTILL_BENCH_CHILD", n.to_string())
            .output()
            .expect("child");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim().split('\t').collect();
        if f.len() == 5 {
            println!("| {} | {} | {} | {} | {} |", f[0], f[1], f[2], f[3], f[4]);
        } else {
            println!(
                "| {n} | failed: {} |",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}
