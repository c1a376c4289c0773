//! Rows per second through a pipeline of four CPU steps, with the durable run log against the
//! same run with non-durable commits (redb `Durability::None`). Goal: durable / not >= 0.85.
//!
//! cargo run --release -p distill-benches --bin engine_throughput
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000), DISTILL_BENCH_BATCH (default 1,000),
//! DISTILL_BENCH_ONLY=durable (only the durable run, to read its peak memory).

use distill_engine::step::{Generator, Lifecycle, Step, StepKind, StepResult};
use distill_engine::{
    BuildContext, LogOptions, Pipeline, PipelineSpec, Registry, RunOptions, StepSpec, run,
};
use distill_storage::{Row, Value};
use std::time::Instant;

const DEFAULT_ROWS: u64 = 1_000_000;
const DEFAULT_BATCH: usize = 1_000;
const WORDS: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
];

struct Source {
    rows: u64,
}
impl Lifecycle for Source {}
impl Generator for Source {
    fn outputs(&self) -> Vec<String> {
        vec!["id".into(), "text".into()]
    }
    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let end = (offset + count as u64).min(self.rows);
        let rows = (offset..end)
            .map(|i| {
                let text: Vec<&str> = (0..6)
                    .map(|k| WORDS[((i * 7 + k * 3) % 8) as usize])
                    .collect();
                Row::new().with("id", i as i64).with("text", text.join(" "))
            })
            .collect();
        Ok((rows, end >= self.rows))
    }
}

/// What a CPU step computes from a row's text.
type TextFn = fn(&str) -> Value;

/// A CPU step: computes `output` from `text` with `f`.
struct Map {
    output: &'static str,
    f: TextFn,
}
impl Lifecycle for Map {}
impl Step for Map {
    fn inputs(&self) -> Vec<String> {
        vec!["text".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec![self.output.into()]
    }
    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        Ok(rows
            .into_iter()
            .map(|mut row| {
                let v = (self.f)(row.get("text").and_then(Value::as_str).unwrap_or(""));
                row.insert(self.output, v);
                row
            })
            .collect())
    }
}

fn registry(rows: u64) -> Registry {
    let mut r = Registry::default();
    r.register("bench_source", move |_, _: &BuildContext| {
        Ok(StepKind::Generator(Box::new(Source { rows })))
    });
    let maps: [(&'static str, TextFn); 4] = [
        ("upper", |t| Value::Str(t.to_uppercase())),
        ("words", |t| Value::Int(t.split_whitespace().count() as i64)),
        ("digest", |t| {
            Value::Str(blake3::hash(t.as_bytes()).to_hex()[..16].to_owned())
        }),
        ("chars", |t| {
            Value::Int(t.chars().filter(|c| "aeiou".contains(*c)).count() as i64)
        }),
    ];
    for (output, f) in maps {
        r.register(output, move |_, _: &BuildContext| {
            Ok(StepKind::Step(Box::new(Map { output, f })))
        });
    }
    r
}

fn pipeline(rows: u64, batch: usize) -> Pipeline {
    let spec = PipelineSpec::new("bench")
        .step(StepSpec::new("source", "bench_source").batch_size(batch))
        .step(
            StepSpec::new("upper", "upper")
                .after("source")
                .input_batch_size(batch),
        )
        .step(
            StepSpec::new("words", "words")
                .after("upper")
                .input_batch_size(batch),
        )
        .step(
            StepSpec::new("digest", "digest")
                .after("words")
                .input_batch_size(batch),
        )
        .step(
            StepSpec::new("chars", "chars")
                .after("digest")
                .input_batch_size(batch),
        );
    Pipeline::build(spec, &registry(rows), &BuildContext::default()).expect("valid bench pipeline")
}

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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
