//! Guards invariant 2 (exactly-once output): the real `distill` binary runs a multi-stage
//! pipeline with global steps and is killed with SIGKILL at random moments, then resumed until
//! it finishes. Its export must equal an uninterrupted run's: same rows, same order, none lost,
//! none duplicated.

mod common;

use common::distill::{distill, run, run_with_file_limit, stderr};
use common::seed;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Kills to make in total; the first run usually takes them all, and more rounds (fresh
/// databases) are run until this many happened.
const KILLS: usize = 50;
const ROWS: usize = 20000;

fn write_fixture(dir: &Path) {
    let mut data = std::io::BufWriter::new(std::fs::File::create(dir.join("data.jsonl")).unwrap());
    for i in 0..ROWS {
        // Every 7th topic repeats, so dedup has work; every 5th row is dropped by the filter.
        let topic = format!("topic {}", (i * 13) % (ROWS / 7 * 6));
        let row = serde_json::json!({"id": i, "topic": topic, "tags": [i % 3, i % 5], "keep": i % 5 != 0});
        writeln!(data, "{row}").unwrap();
    }
    data.flush().unwrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        r#"name: crash-test
steps:
  - name: load
    type: load_jsonl
    batch_size: 37
    params: {path: data.jsonl}
  - name: prompt
    type: format_text
    after: [load]
    input_batch_size: 23
    params:
      template: "Write about {{ topic }} (row {{ id }}, tags {{ tags | join(',') }})"
      output: prompt
  - name: kept
    type: filter
    after: [prompt]
    input_batch_size: 31
    params: {column: keep, op: eq, value: true}
  - name: unique
    type: dedup
    after: [kept]
    input_batch_size: 50
    params: {columns: [topic]}
  - name: expanded
    type: expand_list
    after: [unique]
    input_batch_size: 19
    params: {column: tags, output: tag}
  - name: final
    type: keep_columns
    after: [expanded]
    input_batch_size: 29
    params: {columns: [id, tag, prompt]}
  - name: sampled
    type: sample
    after: [unique]
    params: {n: 100, seed: 3}
"#,
    )
    .unwrap();
}

fn export(dir: &Path, db: &str, out: &str) -> (String, String) {
    let o = run(
        dir,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    let read = |leaf: &str| {
        std::fs::read_to_string(dir.join(out).join(leaf).join("train/data-00000.jsonl")).unwrap()
    };
    (read("final"), read("sampled"))
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_output() {
    let mut rng = fastrand::Rng::with_seed(seed("run_crash"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fixture(d);

    let started = Instant::now();
    let o = run(d, &["run", "pipeline.yaml", "--db", "clean.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clean_time = started.elapsed();
    eprintln!("uninterrupted run: {clean_time:?}");
    let reference = export(d, "clean.redb", "clean");
    assert!(reference.0.lines().count() > 1000);

    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS {
        round += 1;
        let db = format!("crash-{round}.redb");
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(
                attempts < 500,
                "round {round}: no progress after {attempts} attempts"
            );
            let mut child = distill(d)
                .args(["run", "pipeline.yaml", "--db", &db])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Mostly short lives, so one run is killed many times; one in five long enough for
            // a global step (one atomic unit of work) to finish and commit.
            let full = (clean_time.as_millis() as u64).clamp(100, 10_000);
            let max = if rng.u8(0..5) == 0 {
                full
            } else {
                (full / 20).max(30)
            };
            std::thread::sleep(Duration::from_millis(rng.u64(10..max)));
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "round {round}: {}", stderr(&out));
                break;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        let got = export(d, &db, &format!("out-{round}"));
        assert!(
            got.0 == reference.0,
            "round {round}: 'final' differs from the uninterrupted run"
        );
        assert!(
            got.1 == reference.1,
            "round {round}: 'sampled' differs from the uninterrupted run"
        );
        eprintln!("round {round}: {attempts} starts, {kills} kills so far, output identical");
    }
}

/// A full disk fails a group commit part-way through a run. Steps see their predecessors'
/// batches before these are durable, so this checks that what the log keeps is still whole:
/// the run stops with exit 1, and the same command without the limit resumes it to the
/// uninterrupted run's output.
#[test]
fn a_full_disk_mid_run_stops_cleanly_and_resume_gives_the_uninterrupted_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fixture(d);
    let o = run(d, &["run", "pipeline.yaml", "--db", "clean.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = export(d, "clean.redb", "clean");
    let full_kib = std::fs::metadata(d.join("clean.redb")).unwrap().len() / 1024;
    let mut stopped = 0;
    for (round, share) in [3u64, 5, 7, 9].into_iter().enumerate() {
        let db = format!("full-{round}.redb");
        let out = run_with_file_limit(
            d,
            full_kib * share / 10,
            &["run", "pipeline.yaml", "--db", &db],
        );
        if out.status.success() {
            continue; // the file stayed under the limit (compacted, or pages reused)
        }
        assert_eq!(
            out.status.code(),
            Some(1),
            "round {round}: {}",
            stderr(&out)
        );
        stopped += 1;
        let status = run(d, &["status", "--db", &db]);
        eprintln!(
            "round {round}: stopped at {} KiB of {full_kib}: {}\n{}",
            full_kib * share / 10,
            stderr(&out).trim(),
            String::from_utf8_lossy(&status.stdout)
        );
        let o = run(d, &["run", "pipeline.yaml", "--db", &db]);
        assert!(o.status.success(), "round {round} resume: {}", stderr(&o));
        let got = export(d, &db, &format!("full-out-{round}"));
        assert!(
            got == reference,
            "round {round}: the resumed output differs"
        );
    }
    assert!(stopped > 0, "no limit stopped the run");
}
