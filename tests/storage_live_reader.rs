//! Guards invariant 4 (consistent reads): another process following a live writer sees, in
//! every snapshot, whole commits only: counts equal the batches present, two steps written in
//! the same unit always agree, and the log has no hole.

mod common;

use common::{child_arg, spawn_child};
use distill_storage::{Batch, Event, NewRun, Progress, Row, RunLog, RunReader, Snapshot};
use std::io::{BufRead, BufReader};

const UNITS: u64 = 400;

#[test]
fn live_writer_child() {
    let Some(path) = child_arg() else { return };
    let run = NewRun {
        signature: "live".into(),
        pipeline: "live reader test".into(),
        created_by: "tests".into(),
    };
    let log = RunLog::create(&path, run).unwrap();
    println!("ready");
    // Wait until the reader is open, then write at a pace that lets it see the run progress.
    let go = std::path::Path::new(&path).with_extension("go");
    while !go.exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for seq in 0..UNITS {
        std::thread::sleep(std::time::Duration::from_micros(500));
        let rows: Vec<Row> = (0..(seq % 5 + 1))
            .map(|i| Row::new().with("i", i as i64))
            .collect();
        let batch = |step: &str| Batch {
            step: step.into(),
            seq,
            rows: rows.clone(),
            last: seq + 1 == UNITS,
        };
        log.commit(Progress::new().batch(batch("left")).batch(batch("right")))
            .unwrap();
    }
}

fn check(snap: &Snapshot) -> u64 {
    let left = snap.step("left").unwrap().unwrap_or_default();
    let right = snap.step("right").unwrap().unwrap_or_default();
    assert_eq!(left.batches, right.batches, "one unit seen half committed");
    let mut rows = 0;
    for (i, b) in snap.batches("left", 0).unwrap().enumerate() {
        let b = b.unwrap();
        assert_eq!(b.seq, i as u64);
        rows += b.rows.len() as u64;
    }
    assert_eq!(rows, left.rows, "row count vs batches");
    let mut batch_events = 0;
    for (i, e) in snap.log_from(0).unwrap().enumerate() {
        let e = e.unwrap();
        assert_eq!(e.seq, i as u64, "hole in the log");
        batch_events += u64::from(matches!(e.event, Event::Batch { .. }));
    }
    assert_eq!(batch_events, left.batches * 2, "log vs batches");
    left.batches
}

#[test]
fn reader_process_sees_only_whole_commits_of_a_live_writer() {
    if child_arg().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let mut child = spawn_child("live_writer_child", path.to_str().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.ends_with("ready") {
            break;
        }
    }
    let reader = RunReader::open(&path).expect("read-only open beside a live writer");
    std::fs::write(path.with_extension("go"), b"").unwrap();
    let mut seen = Vec::new();
    loop {
        let done = child.try_wait().unwrap().is_some();
        seen.push(check(&reader.snapshot().unwrap()));
        if done {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
    let last = check(&reader.snapshot().unwrap());
    assert_eq!(last, UNITS, "the reader must follow to the last commit");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "snapshots went backwards"
    );
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert!(
        distinct.len() > 3,
        "the reader never saw the run in progress: {distinct:?}"
    );
}
