//! The pipeline of issue 18: `load_jsonl` -> two `format_text` -> `keep_columns`, on text rows.
//!
//! 1. 1,000,000 short rows (an id and a 40-character instruction), batch 1,000, durable log:
//!    rows/s of the run, its peak RSS (the child process's `getrusage`), the database's size at
//!    the end and its largest size while the run went on (sampled from outside every 5 ms),
//!    and the same run with non-durable commits. Targets: >= 400k rows/s, peak RSS <= 64 MiB,
//!    database <= 60 MB at the end and never above 3x that while running, durable within 15%.
//! 2. 10,000 short rows at batch 50 through the real `distill` binary, run then export,
//!    whole processes: target <= 80 ms.
//! 3. 10,000 rows of about 2 KB of text (LLM-answer sized): the database's size against the
//!    Parquet export of the leaf. Target: <= 3x.
//!
//! cargo build --release -p distill-cli && cargo run --release -p distill-benches --bin text_pipeline
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000), DISTILL_BENCH_BATCH (default 1,000),
//! DISTILL_BENCH_ONLY (`short`, `small` or `long`: one part), DISTILL_BENCH_KEEP=1 (the
//! pipelines keep their intermediate batches: `keep_intermediate: true`).

use distill_benches::text::{instruction, long_text, vocabulary};
use distill_benches::{DEFAULT_BATCH, DEFAULT_ROWS, env_or};
use distill_engine::{LogOptions, RunOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child's variable: `ROWS:BATCH:DURABLE:DIR`.
const CHILD: &str = "DISTILL_BENCH_TEXT_CHILD";
/// Rows of the small and of the long-text cases.
const SMALL_ROWS: usize = 10_000;
/// Rows per batch of the small case.
const SMALL_BATCH: usize = 50;
/// Runs of the small case (the median is reported).
const SMALL_ROUNDS: usize = 7;
/// Seed of the generated text.
const SEED: u64 = 18;

fn write_jsonl(path: &Path, rows: usize, long: bool) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let vocabulary = vocabulary(&mut rng);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("data file"));
    for i in 0..rows {
        let text = if long {
            long_text(&mut rng, &vocabulary)
        } else {
            instruction(&mut rng)
        };
        let line = serde_json::json!({"id": i, "instruction": text});
        writeln!(out, "{line}").expect("write data");
    }
    out.flush().expect("write data");
}

fn pipeline_yaml(data: &Path, batch: usize, keep: bool) -> String {
    let keep = if keep {
        "keep_intermediate: true\n"
    } else {
        ""
    };
    format!(
        "name: text-bench\n{keep}steps:\n\
         \x20 - {{name: load, type: load_jsonl, batch_size: {batch}, params: {{path: '{}'}}}}\n\
         \x20 - {{name: prompt, type: format_text, after: [load], input_batch_size: {batch}, params: {{template: 'Question: {{{{ instruction }}}}', output: prompt}}}}\n\
         \x20 - {{name: chat, type: format_text, after: [prompt], input_batch_size: {batch}, params: {{template: '<user>{{{{ prompt }}}}</user><assistant>', output: text}}}}\n\
         \x20 - {{name: keep, type: keep_columns, after: [chat], input_batch_size: {batch}, params: {{columns: [id, text]}}}}\n",
        data.display()
    )
}

/// Peak resident memory of this process in MiB, from `getrusage`.
fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    usage.ru_maxrss as f64 / 1024.0
}

/// The child: runs the pipeline of `dir/p.yaml` on `dir/run.redb`, prints `rows/s peak_mib`.
fn child(arg: &str) {
    let mut parts = arg.splitn(4, ':');
    let rows: u64 = parts.next().and_then(|v| v.parse().ok()).expect("rows");
    let durable = parts.next() == Some("durable");
    let dir = PathBuf::from(parts.next().expect("dir"));
    let pipeline = distill::load_pipeline(&dir.join("p.yaml")).expect("pipeline builds");
    let mut options = RunOptions::new(dir.join("run.redb"));
    options.log = LogOptions { durable };
    let start = Instant::now();
    let summary = distill::run(&pipeline, &options).expect("bench run");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(summary.leaves, vec![("keep".to_string(), rows)]);
    println!("{} {}", rows as f64 / secs, peak_rss_mib());
}

struct Measured {
    rows_per_sec: f64,
    peak_rss_mib: f64,
    final_bytes: u64,
    peak_bytes: u64,
}

/// Runs the pipeline in `dir` in a child process, sampling the database's size meanwhile.
fn measure(dir: &Path, rows: usize, durable: bool) -> Measured {
    let db = dir.join("run.redb");
    let _ = std::fs::remove_file(&db);
    let mode = if durable { "durable" } else { "memory" };
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD, format!("{rows}:{mode}:{}", dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the child");
    let mut peak_bytes = 0;
    while child.try_wait().expect("child").is_none() {
        peak_bytes = peak_bytes.max(std::fs::metadata(&db).map_or(0, |m| m.len()));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("child output");
    assert!(out.status.success(), "the child failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    let final_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    Measured {
        rows_per_sec: v[0],
        peak_rss_mib: v[1],
        final_bytes,
        peak_bytes: peak_bytes.max(final_bytes),
    }
}

/// The release `distill` binary beside this bench.
fn distill_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this binary");
    let bin = exe.with_file_name("distill");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p distill-cli",
        bin.display()
    );
    bin
}

fn distill(dir: &Path, args: &[&str]) {
    let out = Command::new(distill_binary())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run distill");
    assert!(
        out.status.success(),
        "distill {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn short_case(rows: usize, batch: usize, keep: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, rows, false);
    std::fs::write(dir.path().join("p.yaml"), pipeline_yaml(&data, batch, keep)).expect("yaml");
    let memory = measure(dir.path(), rows, false);
    let durable = measure(dir.path(), rows, true);
    distill(
        dir.path(),
        &["export", "--db", "run.redb", "--out", "export"],
    );
    let parquet = dir_bytes(&dir.path().join("export/keep"));
    println!("## {rows} short rows, batch {batch}");
    println!("| log | rows/s | peak RSS MiB | db MB at the end | db MB at its largest |");
    println!("|---|---|---|---|---|");
    for (name, m) in [("durable", &durable), ("not durable", &memory)] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} |",
            m.rows_per_sec,
            m.peak_rss_mib,
            mb(m.final_bytes),
            mb(m.peak_bytes)
        );
    }
    println!(
        "Parquet export of the leaf: {:.1} MB; durable / not durable: {:.3} (goal >= 0.85)",
        mb(parquet),
        durable.rows_per_sec / memory.rows_per_sec
    );
    println!(
        "targets: >= 400000 rows/s: {:.0}; peak RSS <= 64 MiB: {:.1}; db <= 60 MB: {:.1}; largest / final <= 3: {:.2}",
        durable.rows_per_sec,
        durable.peak_rss_mib,
        mb(durable.final_bytes),
        durable.peak_bytes as f64 / durable.final_bytes as f64
    );
}

fn small_case(keep: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, SMALL_ROWS, false);
    std::fs::write(
        dir.path().join("p.yaml"),
        pipeline_yaml(&data, SMALL_BATCH, keep),
    )
    .expect("yaml");
    let mut times = Vec::new();
    for round in 0..=SMALL_ROUNDS {
        let db = format!("run-{round}.redb");
        let out = format!("out-{round}");
        let start = Instant::now();
        distill(dir.path(), &["run", "p.yaml", "--db", &db]);
        distill(dir.path(), &["export", "--db", &db, "--out", &out]);
        if round > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "## {SMALL_ROWS} short rows, batch {SMALL_BATCH}, `distill run` then `distill export`"
    );
    println!(
        "whole processes: median {:.0} ms, fastest {:.0} ms, slowest {:.0} ms over {SMALL_ROUNDS} (target <= 80 ms)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}

fn long_case(keep: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, SMALL_ROWS, true);
    std::fs::write(
        dir.path().join("p.yaml"),
        pipeline_yaml(&data, SMALL_BATCH, keep),
    )
    .expect("yaml");
    let m = measure(dir.path(), SMALL_ROWS, true);
    distill(
        dir.path(),
        &["export", "--db", "run.redb", "--out", "export"],
    );
    let parquet = dir_bytes(&dir.path().join("export/keep"));
    let jsonl = std::fs::metadata(&data).map_or(0, |m| m.len());
    println!("## {SMALL_ROWS} rows of about 2 KB, batch {SMALL_BATCH}");
    println!(
        "input JSONL {:.1} MB; db {:.1} MB at the end ({:.1} MB at its largest); Parquet export {:.1} MB; {:.0} rows/s",
        mb(jsonl),
        mb(m.final_bytes),
        mb(m.peak_bytes),
        mb(parquet),
        m.rows_per_sec
    );
    println!(
        "target: db / Parquet <= 3: {:.2}",
        m.final_bytes as f64 / parquet as f64
    );
}

fn main() {
    if let Ok(arg) = std::env::var(CHILD) {
        child(&arg);
        return;
    }
    let rows = env_or("DISTILL_BENCH_ROWS", DEFAULT_ROWS) as usize;
    let batch = env_or("DISTILL_BENCH_BATCH", DEFAULT_BATCH);
    let keep = std::env::var("DISTILL_BENCH_KEEP").as_deref() == Ok("1");
    let only = std::env::var("DISTILL_BENCH_ONLY").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "text_pipeline: load_jsonl -> format_text x2 -> keep_columns, {cores} cores, load average {}{}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        if keep { ", keep_intermediate" } else { "" }
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    if only.is_empty() || only == "short" {
        short_case(rows, batch, keep);
    }
    if only.is_empty() || only == "small" {
        small_case(keep);
    }
    if only.is_empty() || only == "long" {
        long_case(keep);
    }
}
