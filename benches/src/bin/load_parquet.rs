//! Rows per second of `load_parquet` -> `keep_columns` on a 10-column Parquet file, and the
//! run's peak memory (VmHWM) at two sizes: reading streams row groups, so it should not grow
//! with the file. The file is written first; each run is a child process of its own, so its
//! peak is the run's alone.
//!
//! cargo run --release -p distill-benches --bin load_parquet
//! Environment: DISTILL_BENCH_ROWS (default 1,000,000; the memory run also reads 4x as many),
//! DISTILL_BENCH_BATCH (default 1,000).

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, StringDictionaryBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use distill_benches::{DEFAULT_BATCH, DEFAULT_ROWS, env_or};
use distill_engine::RunOptions;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Rows per row group in the file (pyarrow writes up to 1Mi; smaller groups keep seeks short).
const GROUP: usize = 100_000;
/// Rows per Arrow batch while writing.
const WRITE_BATCH: usize = 50_000;
/// The child's variable: the size it reads.
const CHILD: &str = "DISTILL_BENCH_LOAD_PARQUET_ROWS";
const WORDS: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
];

fn batch(from: usize, n: usize) -> RecordBatch {
    let mut id = Int64Builder::new();
    let mut score = Float64Builder::new();
    let mut ratio = Float32Builder::new();
    let mut count = Int32Builder::new();
    let mut flag = BooleanBuilder::new();
    let mut text = StringBuilder::new();
    let mut title = StringBuilder::new();
    let mut label = StringDictionaryBuilder::<Int32Type>::new();
    let mut tags = ListBuilder::new(StringBuilder::new());
    let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), 4);
    for i in from..from + n {
        id.append_value(i as i64);
        score.append_value(i as f64 / 7.0);
        ratio.append_value((i % 1000) as f32 / 1000.0);
        count.append_value((i % 97) as i32);
        flag.append_value(i % 3 == 0);
        let words: Vec<&str> = (0..10).map(|k| WORDS[(i * 7 + k * 3) % 8]).collect();
        text.append_value(words.join(" "));
        title.append_value(format!("row {i}"));
        label.append_value(WORDS[i % 8]);
        for k in 0..i % 4 {
            tags.values().append_value(WORDS[(i + k) % 8]);
        }
        tags.append(true);
        for k in 0..4 {
            embedding.values().append_value((i + k) as f32 * 0.001);
        }
        embedding.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(id.finish())),
        ("score", Arc::new(score.finish())),
        ("ratio", Arc::new(ratio.finish())),
        ("count", Arc::new(count.finish())),
        ("flag", Arc::new(flag.finish())),
        ("text", Arc::new(text.finish())),
        ("title", Arc::new(title.finish())),
        ("label", Arc::new(label.finish())),
        ("tags", Arc::new(tags.finish())),
        ("embedding", Arc::new(embedding.finish())),
    ];
    RecordBatch::try_from_iter(columns).expect("bench batch")
}

fn write_file(path: &Path, rows: usize) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(GROUP))
        .build();
    let file = std::fs::File::create(path).expect("create the file");
    let mut w = ArrowWriter::try_new(file, batch(0, 1).schema(), Some(props)).expect("writer");
    let mut at = 0;
    while at < rows {
        let n = WRITE_BATCH.min(rows - at);
        w.write(&batch(at, n)).expect("write");
        at += n;
    }
    w.close().expect("close");
}

/// Peak resident memory of this process, in MiB (Linux's VmHWM).
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Rows per second of the `load_parquet` generator alone on `data` (decode and convert to
/// rows, no run log).
fn reader_alone(data: &Path, batch_size: usize) -> f64 {
    let registry = distill::registry();
    let build = registry.get("load_parquet").expect("registered");
    let params = serde_json::json!({"path": data.to_str().expect("a UTF-8 path")});
    let kind = build(&params, &distill_engine::BuildContext::default()).expect("builds");
    let distill_engine::StepKind::Generator(mut generator) = kind else {
        panic!("load_parquet is a generator");
    };
    let start = Instant::now();
    let mut rows = 0u64;
    loop {
        let (batch, last) = generator.generate(rows, batch_size).expect("reads");
        rows += batch.len() as u64;
        if last {
            break;
        }
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

/// The child: runs the pipeline on the file `data` of `rows` rows, prints `rows/s peak_mib`.
fn child(data: &Path, rows: usize, batch_size: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "name: load-parquet-bench\nsteps:\n  - {{name: load, type: load_parquet, batch_size: {batch_size}, params: {{path: '{}'}}}}\n  - {{name: keep, type: keep_columns, after: [load], input_batch_size: {batch_size}, params: {{columns: [id, text, score]}}}}\n",
        data.display()
    );
    let pipeline_file = dir.path().join("p.yaml");
    std::fs::write(&pipeline_file, yaml).expect("pipeline");
    let pipeline = distill::load_pipeline(&pipeline_file).expect("pipeline builds");
    let options = RunOptions::new(dir.path().join("run.redb"));
    let start = Instant::now();
    let summary = distill::run(&pipeline, &options).expect("bench run");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(summary.leaves, vec![("keep".to_string(), rows as u64)]);
    println!("{} {}", rows as f64 / secs, peak_mib());
}

/// Writes a file of `rows` and runs the pipeline on it in a child process: rows/s, the
/// child's peak RSS in MiB, the file's size in MiB.
fn measure(rows: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.parquet");
    write_file(&data, rows);
    let file_mib = std::fs::metadata(&data).map_or(0, |m| m.len()) as f64 / 1048576.0;
    let out = Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD, format!("{rows}:{}", data.display()))
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    (v[0], v[1], file_mib)
}

fn main() {
    let batch_size = env_or("DISTILL_BENCH_BATCH", DEFAULT_BATCH);
    if let Ok(arg) = std::env::var(CHILD) {
        let (rows, data) = arg.split_once(':').expect("ROWS:PATH");
        child(Path::new(data), rows.parse().expect("rows"), batch_size);
        return;
    }
    let rows = env_or("DISTILL_BENCH_ROWS", DEFAULT_ROWS) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "load_parquet: load_parquet -> keep_columns, 10 columns, row groups of {GROUP}, batch {batch_size}, durable log, {cores} cores"
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("| rows | file MiB | rows/s | peak RSS MiB |");
    println!("|---|---|---|---|");
    let mut peaks = Vec::new();
    for n in [rows, rows * 4] {
        let (rate, peak, file) = measure(n);
        println!("| {n} | {file:.1} | {rate:.0} | {peak:.0} |");
        peaks.push(peak);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.parquet");
    write_file(&data, rows);
    println!(
        "the load_parquet generator alone (decode and convert, no run log), {rows} rows: {:.0} rows/s",
        reader_alone(&data, batch_size)
    );
    println!(
        "peak RSS at {}x rows / at 1x: {:.3} (goal: within 10%)",
        4,
        peaks[1] / peaks[0]
    );
}
