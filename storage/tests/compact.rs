//! Compacting a finished run database: what it gives back, that it reads the same after, and
//! that a process killed (SIGKILL) while compacting leaves a database that opens and reads the
//! same.

use distill_storage::{Batch, Error, NewRun, Progress, Row, RunLog, compact_finished};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Set in the child process of the kill test: the database it compacts.
const CHILD: &str = "DISTILL_COMPACT_CHILD";
const BATCHES: u64 = 20;

fn new_run() -> NewRun {
    NewRun {
        signature: "sig-1".into(),
        pipeline: "name: test".into(),
        created_by: "tests".into(),
    }
}

/// Rows of about 2 KB of text that compresses only to half (hex of a hash chain).
fn bulky_rows(n_rows: usize, seed: u64) -> Vec<Row> {
    (0..n_rows)
        .map(|i| {
            let mut text = String::new();
            let mut h = blake3::hash(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat());
            while text.len() < 2_000 {
                h = blake3::hash(h.as_bytes());
                text.push_str(&h.to_hex());
            }
            Row::new().with("i", i as i64).with("text", text)
        })
        .collect()
}

/// A run database at `path` whose `big` batches were reclaimed between its `kept` ones: much
/// free space inside the file (redb gives back only a free end of the file by itself).
fn fragmented(path: &Path) {
    let log = RunLog::create(path, new_run()).unwrap();
    for seq in 0..BATCHES {
        let unit = Progress::new()
            .batch(Batch {
                step: "big".into(),
                seq,
                rows: bulky_rows(500, seq),
                last: seq + 1 == BATCHES,
            })
            .batch(Batch {
                step: "kept".into(),
                seq,
                rows: bulky_rows(50, 1000 + seq),
                last: seq + 1 == BATCHES,
            });
        log.commit(unit).unwrap();
    }
    let rows = 500 * BATCHES;
    let past =
        Progress::new()
            .cursor("c<-big", rows)
            .reclaim("big", BATCHES, rows, vec!["c<-big".into()]);
    log.commit(past).unwrap();
}

/// Every kept batch reads back as committed.
fn assert_reads_the_same(path: &Path) {
    let log = RunLog::open(path).unwrap();
    let snap = log.snapshot().unwrap();
    for seq in 0..BATCHES {
        let kept = snap.batch("kept", seq).unwrap().expect("kept batch");
        assert_eq!(kept.rows, bulky_rows(50, 1000 + seq), "batch {seq}");
    }
    assert_eq!(snap.reclaimed("big").unwrap(), (BATCHES, 500 * BATCHES));
}

#[test]
fn a_finished_database_with_much_free_space_is_compacted_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    fragmented(&path);
    let before = std::fs::metadata(&path).unwrap().len();
    assert!(before > 10 << 20, "{before} bytes");
    let done = compact_finished(&path).unwrap().expect("worth compacting");
    assert_eq!(done.before, before);
    let after = std::fs::metadata(&path).unwrap().len();
    assert_eq!(done.after, after);
    assert!(after * 2 < before, "{before} -> {after} bytes");
    assert_reads_the_same(&path);
    // Nothing left to give back: not compacted again.
    assert_eq!(compact_finished(&path).unwrap(), None);
}

#[test]
fn compaction_is_refused_while_the_file_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    fragmented(&path);
    let log = RunLog::open(&path).unwrap();
    let err = compact_finished(&path).unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err:?}");
    drop(log);
    assert!(compact_finished(&path).unwrap().is_some());
}

/// The child of the kill test: compacts the database it is given (does nothing otherwise).
#[test]
fn child_compacts_when_asked() {
    if let Ok(path) = std::env::var(CHILD) {
        let start = std::time::Instant::now();
        compact_finished(Path::new(&path)).unwrap();
        eprintln!("compacted in {:?}", start.elapsed());
    }
}

#[test]
fn a_kill_while_compacting_leaves_a_database_that_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.redb");
    fragmented(&original);
    let full = std::fs::metadata(&original).unwrap().len();
    let pristine = std::fs::read(&original).unwrap();
    let mut interrupted = 0;
    // Kills later and later, until several landed in the middle of a compaction (a loaded
    // machine starts the child later).
    let mut round = 0u64;
    while round < 12 || (interrupted < 3 && round < 60) {
        round += 1;
        let path = dir.path().join(format!("r{round}.redb"));
        std::fs::copy(&original, &path).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_compacts_when_asked", "--nocapture"])
            .env(CHILD, &path)
            .spawn()
            .unwrap();
        // From before the compaction starts to well into it (it takes tens of ms here).
        std::thread::sleep(Duration::from_millis(2 + round * 4 % 120));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // Killed after the compaction changed the file: a kill in the middle of it.
        if !status.success() && std::fs::read(&path).unwrap() != pristine {
            interrupted += 1;
        }
        assert_reads_the_same(&path);
        // The next compaction finishes what the killed one started.
        let _ = compact_finished(&path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() * 2 < full);
        assert_reads_the_same(&path);
    }
    eprintln!("{interrupted} of {round} kills landed in the middle of a compaction");
    assert!(interrupted > 0, "no kill landed in a compaction");
}
