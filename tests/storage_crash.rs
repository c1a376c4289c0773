//! Guards invariant 1 (atomic progress): a writer killed with SIGKILL at any instant leaves a
//! database that holds a prefix of its history. Every commit the writer acknowledged is there,
//! no batch is torn, the log has no gap, cursors agree with batches, and writing continues.

mod common;

use common::{child_arg, seed, spawn_child};
use distill_storage::{
    Batch, Event, GroupCommitter, NewRun, Progress, Row, RunLog, RunReader, StepState,
};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::Duration;

const STEPS: [&str; 2] = ["alpha", "beta"];
const KILLS: usize = 60;

/// The rows of batch `seq` of `step`: deterministic, so a reader can tell a torn batch.
fn rows_of(step: &str, seq: u64) -> Vec<Row> {
    let n = 1 + (seq % 13) as usize * 20;
    (0..n)
        .map(|i| {
            Row::new()
                .with("step", step)
                .with("seq", seq as i64)
                .with("i", i as i64)
                .with("text", format!("{step}-{seq}-{i} ").repeat(3))
        })
        .collect()
}

fn unit(step: &str, seq: u64) -> Progress {
    Progress::new()
        .batch(Batch {
            step: step.into(),
            seq,
            rows: rows_of(step, seq),
            last: false,
        })
        .cursor(format!("{step}-pos"), seq)
        .count(step, "units", 1)
        .state(step, StepState::Running)
}

/// The writer child: commits batches forever, printing "ack STEP SEQ" after each durable commit.
#[test]
fn crash_child() {
    let Some(path) = child_arg() else { return };
    let run = NewRun {
        signature: "crash".into(),
        pipeline: "crash test".into(),
        created_by: "tests".into(),
    };
    let (log, _) = RunLog::open_or_create(&path, run).expect("open");
    let log = Arc::new(log);
    let committer = GroupCommitter::start(log.clone());
    let snap = log.snapshot().unwrap();
    let mut next: Vec<u64> = STEPS
        .iter()
        .map(|s| snap.step(s).unwrap().map_or(0, |r| r.batches))
        .collect();
    drop(snap);
    let mut out = std::io::stdout().lock();
    loop {
        // Alternate single commits and groups of in-flight tickets.
        for (i, step) in STEPS.iter().enumerate() {
            if next[i].is_multiple_of(2) {
                log.commit(unit(step, next[i])).expect("commit");
                writeln!(out, "ack {step} {}", next[i]).unwrap();
                next[i] += 1;
            } else {
                let tickets: Vec<_> = (0..4)
                    .map(|k| committer.submit(unit(step, next[i] + k)).unwrap())
                    .collect();
                for (k, t) in tickets.into_iter().enumerate() {
                    t.wait().expect("group commit");
                    writeln!(out, "ack {step} {}", next[i] + k as u64).unwrap();
                }
                next[i] += 4;
            }
            out.flush().unwrap();
        }
    }
}

fn verify(path: &std::path::Path, acked: &BTreeSet<(String, u64)>) -> u64 {
    let log = RunLog::open(path).expect("reopen after kill");
    let snap = log.snapshot().unwrap();
    let mut total = 0;
    for step in STEPS {
        let Some(record) = snap.step(step).unwrap() else {
            assert!(
                acked.iter().all(|(s, _)| s != step),
                "{step} acked, not stored"
            );
            continue;
        };
        let batches: Vec<Batch> = snap.batches(step, 0).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            batches.len() as u64,
            record.batches,
            "{step}: record vs table"
        );
        let mut rows = 0;
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(b.seq, i as u64, "{step}: gap in batches");
            assert_eq!(b.rows, rows_of(step, b.seq), "{step}: batch {} torn", b.seq);
            rows += b.rows.len() as u64;
        }
        assert_eq!(rows, record.rows, "{step}: row count");
        assert_eq!(record.counters["units"], record.batches, "{step}: counter");
        let cursor = snap.cursor(&format!("{step}-pos")).unwrap();
        assert_eq!(cursor, record.batches.checked_sub(1), "{step}: cursor");
        total += record.batches;
    }
    for (step, seq) in acked {
        assert!(
            snap.batch(step, *seq).unwrap().is_some(),
            "acknowledged batch {seq} of {step} is missing"
        );
    }
    // The log has no gap and announces every batch exactly once.
    let mut announced = BTreeSet::new();
    for (expected, entry) in snap.log_from(0).unwrap().enumerate() {
        let entry = entry.unwrap();
        assert_eq!(entry.seq, expected as u64, "gap in the log");
        if let Event::Batch { step, seq, .. } = entry.event {
            assert!(announced.insert((step, seq)), "batch announced twice");
        }
    }
    assert_eq!(announced.len() as u64, total, "log vs batches");
    total
}

#[test]
fn sigkill_leaves_a_prefix_of_history_and_writing_continues() {
    if child_arg().is_some() {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(seed("storage_crash"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let mut acked = BTreeSet::new();
    let mut last_total = 0;
    for kill in 0..KILLS {
        let mut child = spawn_child("crash_child", path.to_str().unwrap());
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ack ") {
                    let (step, seq) = rest.split_once(' ').unwrap();
                    acks.push((step.to_owned(), seq.parse::<u64>().unwrap()));
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(rng.u64(20..150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());
        if !path.exists() {
            // Killed before creating the database (creation is atomic): nothing to keep.
            assert!(
                acked.is_empty(),
                "kill {kill}: commits acknowledged, no database"
            );
            continue;
        }
        // A reader can open the database of a dead writer (recovering it first).
        let reader = RunReader::open(&path)
            .unwrap_or_else(|e| panic!("kill {kill}: read-only open after the crash: {e}"));
        let read_total: u64 = STEPS
            .iter()
            .filter_map(|s| reader.snapshot().unwrap().step(s).unwrap())
            .map(|r| r.batches)
            .sum();
        drop(reader);
        let total = verify(&path, &acked);
        assert_eq!(read_total, total, "reader and writer disagree");
        assert!(total >= last_total, "committed batches went backwards");
        last_total = total;
    }
    assert!(
        acked.len() > KILLS,
        "too few commits to prove anything: {}",
        acked.len()
    );
    // Writing continues after the last kill.
    let log = RunLog::open(&path).unwrap();
    let next = log
        .snapshot()
        .unwrap()
        .step("alpha")
        .unwrap()
        .unwrap()
        .batches;
    log.commit(unit("alpha", next)).unwrap();
    eprintln!(
        "{KILLS} kills, {} acknowledged commits, {last_total} batches",
        acked.len()
    );
}
