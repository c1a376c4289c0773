//! Loading the files people have, through the real binary: Parquet written by pyarrow and by
//! `datasets` (every Arrow type `datasets` writes) and `save_to_disk` folders read with the
//! values those libraries read back (tests/python/loaders.py compares them), a SIGKILL in
//! the middle of a multi-row-group file, an input rewritten under a run, a type distill cannot
//! read, and JSONL/CSV globs of compressed files.

mod common;

use common::distill::{distill, read_jsonl, run, stderr};
use common::seed;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs tests/python/loaders.py with `args` in `dir`; it must succeed.
fn loaders(dir: &Path, args: &[&str]) -> String {
    let script = common::distill::root().join("tests/python/loaders.py");
    let out = Command::new(common::python::python())
        .arg(script)
        .args(args)
        .current_dir(dir)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join(".hf-home"))
        .output()
        .expect("run loaders.py");
    assert!(
        out.status.success(),
        "loaders.py {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The inputs every test here shares, written once per run of this binary by pyarrow and
/// `datasets` (under cargo's target/tmp, replaced by the next run).
fn inputs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("load_files-inputs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        loaders(&dir, &["write", dir.to_str().unwrap()]);
        dir
    })
}

/// Runs a one-step pipeline `kind` with `params` in a fresh directory under the inputs and
/// exports it as JSONL; returns the directory and the export's file.
fn load(kind: &str, params: &str, batch: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(inputs()).unwrap();
    let yaml = format!(
        "name: load\nsteps:\n  - {{name: load, type: {kind}, batch_size: {batch}, params: {params}}}\n"
    );
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = run(dir.path(), &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{kind} {params}: {}", stderr(&out));
    let out = run(
        dir.path(),
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let file = dir.path().join("o/load/train/data-00000.jsonl");
    (dir, file)
}

fn compared(args: &[&str]) -> serde_json::Value {
    let out = loaders(inputs(), args);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

#[test]
fn parquet_of_every_type_loads_with_the_values_pyarrow_reads() {
    // Batches of 4 across row groups of 5: reads cross row-group boundaries.
    let (_d, file) = load("load_parquet", "{path: ../types.parquet}", 4);
    let report = compared(&["compare-parquet", "types.parquet", file.to_str().unwrap()]);
    assert_eq!(report["rows"], 23);
    assert_eq!(report["columns"].as_array().unwrap().len(), 35);
    let rows = read_jsonl(&file);
    // A few values spelled out, beside the script's comparison.
    assert_eq!(
        rows[1]["f32"], 0.10000000149011612,
        "float32 widened exactly"
    );
    assert_eq!(rows[0]["u64"], u64::MAX);
    assert_eq!(rows[1]["ts_utc"], "2024-05-01T13:30:01.000250Z");
    assert_eq!(rows[1]["ts_ns"], "2023-11-14T22:13:21.000000007");
    assert_eq!(
        rows[0]["ts_paris"], "2024-05-01T12:30:00Z",
        "the UTC instant"
    );
    assert_eq!(rows[1]["price"], "-1.99");
    assert_eq!(rows[3]["i8"], serde_json::Value::Null);

    let (_d, file) = load("load_parquet", "{path: ../datasets.parquet}", 7);
    let report = compared(&[
        "compare-parquet",
        "datasets.parquet",
        file.to_str().unwrap(),
    ]);
    assert_eq!(report["rows"], 23);
}

#[test]
fn saved_datasets_load_with_the_values_datasets_reads() {
    for (params, folder, split, rows) in [
        ("{path: ../saved}", "saved", "train", 23),
        ("{path: ../saved_dict}", "saved_dict", "train", 23),
        (
            "{path: ../saved_dict, split: test}",
            "saved_dict",
            "test",
            5,
        ),
    ] {
        let (_d, file) = load("load_disk", params, 5);
        let report = compared(&["compare-disk", folder, split, file.to_str().unwrap()]);
        assert_eq!(report["rows"], rows, "{params}");
    }
    let (_d, file) = load(
        "load_disk",
        "{path: ../saved, columns: [meta, id], limit: 9}",
        4,
    );
    let rows = read_jsonl(&file);
    assert_eq!(rows.len(), 9);
    assert_eq!(
        rows[8],
        serde_json::json!({"meta": {"source": "s", "n": 8}, "id": 8})
    );
}

#[test]
fn a_type_distill_cannot_read_is_refused_before_the_run_naming_the_column() {
    let dir = tempfile::tempdir_in(inputs()).unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.yaml"),
        "name: p\nsteps:\n  - {name: load, type: load_disk, params: {path: ../interval}}\n",
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("column 'span'")
            && err.contains("Interval(MonthDayNano)")
            && err.contains("data-00000-of-00001.arrow"),
        "{err}"
    );
    assert!(!d.join("r.redb").exists());
    std::fs::write(
        d.join("p.yaml"),
        "name: p\nsteps:\n  - {name: load, type: load_disk, params: {path: ../interval, columns: [ok]}}\n",
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

const KILL_ROWS: usize = 60_000;
const KILLS: usize = 8;

fn ids_of(rows: &[serde_json::Value]) -> Vec<u64> {
    rows.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

#[test]
fn sigkill_in_the_middle_of_a_parquet_file_then_resume_yields_every_row_once() {
    let mut rng = fastrand::Rng::with_seed(seed("load_files sigkill"));
    let dir = tempfile::tempdir_in(inputs()).unwrap();
    let d = dir.path();
    loaders(d, &["rows", "rows.parquet", &KILL_ROWS.to_string(), "3001"]);
    std::fs::write(
        d.join("p.yaml"),
        "name: kill\nsteps:\n  - {name: load, type: load_parquet, batch_size: 700, params: {path: rows.parquet}}\n  - {name: keep, type: keep_columns, after: [load], input_batch_size: 450, params: {columns: [id]}}\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = run(d, &["run", "p.yaml", "--db", "clean.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let full = started.elapsed().as_millis() as u64;
    // Kill it KILLS times at random moments (a run that ends first is started again from a
    // fresh database), then let the last start finish.
    let mut kills = 0;
    let mut db = 0;
    loop {
        let mut child = distill(d)
            .args(["run", "p.yaml", "--db", &format!("killed-{db}.redb")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if kills == KILLS {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.u64(10..full.max(20))));
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            db += 1;
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let killed = format!("killed-{db}.redb");
    let out = run(
        d,
        &["export", "--db", &killed, "--out", "o", "--format", "jsonl"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ids = ids_of(&read_jsonl(&d.join("o/keep/train/data-00000.jsonl")));
    assert_eq!(ids, (0..KILL_ROWS as u64).collect::<Vec<_>>());
}

#[test]
fn a_parquet_file_rewritten_with_the_same_size_and_time_refuses_the_resume() {
    let dir = tempfile::tempdir_in(inputs()).unwrap();
    let d = dir.path();
    loaders(d, &["rows", "rows.parquet", "50", "20", "one"]);
    std::fs::write(
        d.join("p.yaml"),
        "name: changed\nsteps:\n  - {name: load, type: load_parquet, batch_size: 10, params: {path: rows.parquet}}\n",
    )
    .unwrap();
    assert!(
        run(d, &["run", "p.yaml", "--db", "r.redb"])
            .status
            .success()
    );
    let file = d.join("rows.parquet");
    let meta = std::fs::metadata(&file).unwrap();
    // The same rows, a footer that differs in one byte, the old modification time.
    loaders(d, &["rows", "rows.parquet", "50", "20", "two"]);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), meta.len());
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("'load'") && err.contains("input changed") && err.contains("footer"),
        "{err}"
    );
}

fn gz(text: &str) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().stdout
}

fn zst(text: &str) -> Vec<u8> {
    let script = "import sys, pyarrow; sys.stdout.buffer.write(pyarrow.compress(sys.stdin.buffer.read(), codec='zstd', asbytes=True))";
    let mut child = Command::new(common::python::python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn jsonl_and_csv_read_globs_lists_and_compressed_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    let lines = |ids: std::ops::Range<u64>| -> String {
        ids.map(|i| format!("{{\"id\": {i}}}\n")).collect()
    };
    std::fs::write(d.join("data/part-0.jsonl"), lines(0..3)).unwrap();
    std::fs::write(d.join("data/part-1.jsonl.gz"), gz(&lines(3..8))).unwrap();
    std::fs::write(d.join("data/part-2.jsonl.zst"), zst(&lines(8..10))).unwrap();
    std::fs::write(d.join("a.csv.gz"), gz("id,name\n1,x\n")).unwrap();
    std::fs::write(d.join("b.csv"), "id,name\n2,\n").unwrap();
    std::fs::write(
        d.join("p.yaml"),
        "name: files\nsteps:\n  - {name: j, type: load_jsonl, batch_size: 4, params: {path: 'data/*.jsonl*'}}\n  - {name: c, type: load_csv, params: {path: [b.csv, a.csv.gz]}}\n",
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ids_of(&read_jsonl(&d.join("o/j/train/data-00000.jsonl"))),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        read_jsonl(&d.join("o/c/train/data-00000.jsonl")),
        vec![
            serde_json::json!({"id": "2", "name": null}),
            serde_json::json!({"id": "1", "name": "x"})
        ]
    );
    // A bad line inside a compressed file beyond the rows read for the columns: the run
    // fails on it (exit 4) naming the file and the line.
    let many: String = (0..1200).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    std::fs::write(
        d.join("data/part-3.jsonl.gz"),
        gz(&format!("{many}{{\"id\": \n")),
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r2.redb"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("part-3.jsonl.gz line 1201"),
        "{}",
        stderr(&out)
    );
}
