//! The run log's contract, through its public API on real redb files.

use distill_storage::{
    Batch, Error, Event, GroupCommitter, NewRun, Progress, Row, RunLog, RunReader, RunState,
    RunStatus, StepState, Value,
};
use redb::ReadableDatabase;
use std::sync::Arc;

fn new_run() -> NewRun {
    NewRun {
        signature: "sig-1".into(),
        pipeline: "name: test".into(),
        created_by: "tests".into(),
    }
}

fn rows(n: usize, tag: &str) -> Vec<Row> {
    (0..n)
        .map(|i| Row::new().with("i", i as i64).with("tag", tag))
        .collect()
}

fn batch(step: &str, seq: u64, n: usize, last: bool) -> Batch {
    Batch {
        step: step.into(),
        seq,
        rows: rows(n, step),
        last,
    }
}

#[test]
fn create_then_reopen_keeps_meta_batches_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    {
        let log = RunLog::create(&path, new_run()).unwrap();
        log.commit(
            Progress::new()
                .state("a", StepState::Running)
                .batch(batch("a", 0, 3, false))
                .cursor("b<-a", 0),
        )
        .unwrap();
        log.commit(
            Progress::new()
                .batch(batch("a", 1, 2, true))
                .state("a", StepState::Finished)
                .count("a", "requests", 5)
                .count("a", "requests", 2),
        )
        .unwrap();
    }
    let log = RunLog::open(&path).unwrap();
    let meta = log.meta().unwrap();
    assert_eq!(meta.signature, "sig-1");
    assert_eq!(meta.pipeline, "name: test");
    let snap = log.snapshot().unwrap();
    let record = snap.step("a").unwrap().unwrap();
    assert_eq!((record.batches, record.rows, record.done), (2, 5, true));
    assert_eq!(record.state, StepState::Finished);
    assert_eq!(record.counters["requests"], 7);
    let got: Vec<Batch> = snap.batches("a", 0).unwrap().map(Result::unwrap).collect();
    assert_eq!(got, vec![batch("a", 0, 3, false), batch("a", 1, 2, true)]);
    assert_eq!(snap.cursor("b<-a").unwrap(), Some(0));
    assert_eq!(snap.batch("a", 1).unwrap(), Some(batch("a", 1, 2, true)));
    assert_eq!(snap.batch("a", 2).unwrap(), None);
}

#[test]
fn log_announces_every_change_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    let receipt = log
        .commit(
            Progress::new()
                .run(RunState {
                    status: RunStatus::Running,
                    stage: Some(0),
                    ..RunState::default()
                })
                .state("a", StepState::Running)
                .batch(batch("a", 0, 1, false))
                .offset("hub", 1),
        )
        .unwrap();
    assert_eq!(receipt.log, 1..5);
    let entries: Vec<_> = log
        .snapshot()
        .unwrap()
        .log_from(0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert!(matches!(entries[0].event, Event::Created { .. }));
    assert!(matches!(
        entries[1].event,
        Event::Run {
            status: RunStatus::Running,
            stage: Some(0)
        }
    ));
    assert!(matches!(
        entries[3].event,
        Event::Batch {
            seq: 0,
            rows: 1,
            ..
        }
    ));
    assert!(matches!(entries[4].event, Event::Offset { offset: 1, .. }));
    let tail: Vec<_> = log.snapshot().unwrap().log_from(3).unwrap().collect();
    assert_eq!(tail.len(), 2);
    let newest: Vec<u64> = log
        .snapshot()
        .unwrap()
        .log_tail(2)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(newest, vec![4, 3]);
}

#[test]
fn out_of_order_duplicate_and_after_last_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    log.commit(Progress::new().batch(batch("a", 0, 1, false)))
        .unwrap();
    let dup = log
        .commit(Progress::new().batch(batch("a", 0, 1, false)))
        .unwrap_err();
    assert!(
        matches!(
            dup,
            Error::BatchOutOfOrder {
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{dup:?}"
    );
    let gap = log
        .commit(Progress::new().batch(batch("a", 2, 1, false)))
        .unwrap_err();
    assert!(matches!(
        gap,
        Error::BatchOutOfOrder {
            expected: 1,
            got: 2,
            ..
        }
    ));
    log.commit(Progress::new().batch(batch("a", 1, 1, true)))
        .unwrap();
    let after = log
        .commit(Progress::new().batch(batch("a", 2, 1, false)))
        .unwrap_err();
    assert!(matches!(after, Error::StepAlreadyDone { seq: 2, .. }));
    assert!(after.to_string().contains("step 'a'"), "{after}");
    // A refused unit writes nothing, not even its other parts.
    let snap = log.snapshot().unwrap();
    assert_eq!(snap.step("a").unwrap().unwrap().batches, 2);
}

#[test]
fn refused_unit_in_a_group_leaves_the_others_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    let results = log.commit_group(vec![
        Progress::new().batch(batch("a", 0, 1, false)),
        Progress::new()
            .batch(batch("b", 5, 1, false))
            .cursor("x", 9),
        Progress::new().batch(batch("a", 1, 1, false)),
    ]);
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(Error::BatchOutOfOrder { .. })));
    let snap = log.snapshot().unwrap();
    assert_eq!(snap.step("a").unwrap().unwrap().batches, 2);
    assert_eq!(snap.step("b").unwrap(), None);
    assert_eq!(snap.cursor("x").unwrap(), None);
}

#[test]
fn reopen_continues_batch_numbering_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    {
        let log = RunLog::create(&path, new_run()).unwrap();
        log.commit(Progress::new().batch(batch("a", 0, 1, false)))
            .unwrap();
    }
    let log = RunLog::open(&path).unwrap();
    let err = log
        .commit(Progress::new().batch(batch("a", 0, 1, false)))
        .unwrap_err();
    assert!(matches!(err, Error::BatchOutOfOrder { expected: 1, .. }));
    let receipt = log
        .commit(Progress::new().batch(batch("a", 1, 1, false)))
        .unwrap();
    assert_eq!(receipt.log, 2..3);
}

#[test]
fn group_committer_commits_units_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(RunLog::create(dir.path().join("run.redb"), new_run()).unwrap());
    let committer = Arc::new(GroupCommitter::start(log.clone()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let committer = committer.clone();
            std::thread::spawn(move || {
                let step = format!("s{t}");
                let tickets: Vec<_> = (0..50)
                    .map(|seq| {
                        committer
                            .submit(Progress::new().batch(batch(&step, seq, 2, seq == 49)))
                            .unwrap()
                    })
                    .collect();
                for ticket in tickets {
                    ticket.wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = log.snapshot().unwrap();
    for t in 0..4 {
        let record = snap.step(&format!("s{t}")).unwrap().unwrap();
        assert_eq!((record.batches, record.rows, record.done), (50, 100, true));
    }
    assert_eq!(snap.log_len().unwrap(), 1 + 4 * 50);
}

#[test]
fn cache_entries_commit_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(RunLog::create(dir.path().join("run.redb"), new_run()).unwrap());
    let committer = GroupCommitter::start(log.clone());
    let key = *blake3::hash(b"request").as_bytes();
    committer
        .commit(Progress::new().cache(key, b"response".to_vec()))
        .unwrap();
    let snap = log.snapshot().unwrap();
    assert_eq!(
        snap.cached(&key).unwrap().as_deref(),
        Some(&b"response"[..])
    );
    assert_eq!(snap.cache_len().unwrap(), 1);
    assert_eq!(snap.cached(&[0; 32]).unwrap(), None);
}

#[test]
fn offsets_and_records_move_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    log.commit(
        Progress::new()
            .offset("hub", 10)
            .record("hub/pending", Some(b"shard-1".to_vec())),
    )
    .unwrap();
    log.commit(
        Progress::new()
            .offset("hub", 20)
            .record("hub/pending", None),
    )
    .unwrap();
    let snap = log.snapshot().unwrap();
    assert_eq!(snap.offset("hub").unwrap(), Some(20));
    assert_eq!(snap.record("hub/pending").unwrap(), None);
}

#[test]
fn records_are_listed_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    log.commit(
        Progress::new()
            .record("hub:a/x", Some(b"1".to_vec()))
            .record("hub:b/y", Some(b"2".to_vec()))
            .record("hua", Some(b"3".to_vec()))
            .record("hz", Some(b"4".to_vec())),
    )
    .unwrap();
    let snap = log.snapshot().unwrap();
    let keys: Vec<String> = snap
        .records("hub:")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["hub:a/x".to_string(), "hub:b/y".to_string()]);
    assert!(snap.records("none:").unwrap().is_empty());
}

#[test]
fn snapshot_does_not_see_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    log.commit(Progress::new().batch(batch("a", 0, 1, false)))
        .unwrap();
    let before = log.snapshot().unwrap();
    log.commit(Progress::new().batch(batch("a", 1, 1, false)))
        .unwrap();
    assert_eq!(before.batches("a", 0).unwrap().count(), 1);
    assert_eq!(log.snapshot().unwrap().batches("a", 0).unwrap().count(), 2);
}

#[test]
fn failed_state_keeps_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    log.commit(Progress::new().failed("judge", "HTTP 401 from http://x/v1"))
        .unwrap();
    let record = log.snapshot().unwrap().step("judge").unwrap().unwrap();
    assert_eq!(record.state, StepState::Failed);
    assert_eq!(record.error.as_deref(), Some("HTTP 401 from http://x/v1"));
}

#[test]
fn rows_keep_nested_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    let row = Row::new()
        .with("list", vec![Value::Int(1), Value::Null, Value::from("x")])
        .with("map", Row::new().with("score", 4.5))
        .with("bytes", Value::Bytes(vec![0, 255]));
    let b = Batch {
        step: "s".into(),
        seq: 0,
        rows: vec![row],
        last: true,
    };
    log.commit(Progress::new().batch(b.clone())).unwrap();
    assert_eq!(log.snapshot().unwrap().batch("s", 0).unwrap(), Some(b));
}

// --- errors -----------------------------------------------------------------------------------

#[test]
fn second_writer_is_told_the_database_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let _first = RunLog::create(&path, new_run()).unwrap();
    let err = RunLog::open(&path).err().expect("second writer must fail");
    assert!(matches!(err, Error::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(err.to_string().contains("run.redb"), "{err}");
}

#[test]
fn foreign_file_is_not_a_run_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "just some text, not a database\n".repeat(200)).unwrap();
    for err in [
        RunLog::open(&path).err().unwrap(),
        RunReader::open(&path).err().unwrap(),
        RunLog::create(&path, new_run()).err().unwrap(),
    ] {
        assert!(matches!(err, Error::NotARunDatabase { .. }), "{err:?}");
        assert!(err.to_string().contains("notes.txt"), "{err}");
    }
}

#[test]
fn redb_file_without_our_tables_is_not_a_run_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("x");
            txn.open_table(def).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = RunLog::open(&path).err().unwrap();
    assert!(matches!(err, Error::NotARunDatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("meta"), "{err}");
}

const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

fn raw_db(path: &std::path::Path) -> redb::Database {
    redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open(path)
        .unwrap()
}

/// Overwrites the stored format version, as an older or newer build would have written it.
fn set_format_version(path: &std::path::Path, version: u32) {
    let db = raw_db(path);
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(META).unwrap();
        t.insert("format_version", version.to_le_bytes().as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

fn stored_format_version(path: &std::path::Path) -> u32 {
    let db = raw_db(path);
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(META).unwrap();
    let raw = t.get("format_version").unwrap().unwrap();
    u32::from_le_bytes(raw.value().try_into().unwrap())
}

#[test]
fn newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    drop(RunLog::create(&path, new_run()).unwrap());
    set_format_version(&path, 99);
    let err = RunLog::open(&path).err().unwrap();
    assert!(
        matches!(err, Error::NewerFormat { found: 99, .. }),
        "{err:?}"
    );
    let err = RunReader::open(&path).err().unwrap();
    assert!(matches!(err, Error::NewerFormat { .. }), "{err:?}");
}

/// A copy of `fixtures/runs/v2-stopped.redb` (written by the last format 2 build: batches and
/// cached answers uncompressed) at `path`.
fn format_2_file(path: &std::path::Path) {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/runs/v2-stopped.redb"
    );
    std::fs::copy(fixture, path).unwrap();
}

fn all_rows(snap: &distill_storage::Snapshot, step: &str) -> Vec<Row> {
    snap.batches(step, 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect()
}

#[test]
fn a_version_1_file_reads_unchanged_and_a_writer_marks_it_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    format_2_file(&path);
    // Version 1 differs from 2 only by the values 2 added: its files are 2's.
    set_format_version(&path, 1);
    {
        let reader = RunReader::open(&path).unwrap();
        let snap = reader.snapshot().unwrap();
        assert_eq!(all_rows(&snap, "questions").len(), 40);
    }
    assert_eq!(stored_format_version(&path), 1, "readers never write");
    let log = RunLog::open(&path).unwrap();
    log.commit(Progress::new().batch(Batch {
        rows: vec![Row::new().with("big", Value::UInt(u64::MAX))],
        ..batch("a", 0, 0, true)
    }))
    .unwrap();
    drop(log);
    assert_eq!(stored_format_version(&path), 2);
    let reader = RunReader::open(&path).unwrap();
    let snap = reader.snapshot().unwrap();
    let last = snap.batches("a", 0).unwrap().next().unwrap().unwrap();
    assert_eq!(last.rows[0].get("big"), Some(&Value::UInt(u64::MAX)));
    assert_eq!(all_rows(&snap, "questions").len(), 40);
}

#[test]
fn a_version_2_file_is_written_on_in_its_own_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    format_2_file(&path);
    let log = RunLog::open(&path).unwrap();
    let before = all_rows(&log.snapshot().unwrap(), "questions");
    log.commit(
        Progress::new()
            .batch(batch("a", 0, 3, false))
            .batch(batch("b", 0, 3, false))
            .cursor("b<-a", 3)
            .cache([7; 32], b"{\"answer\": 1}".to_vec())
            // Format 2 files never reclaim.
            .reclaim("a", 1, 3, vec!["b<-a".into()]),
    )
    .unwrap();
    drop(log);
    assert_eq!(stored_format_version(&path), 2);
    // Stored uncompressed: the raw value is the encoding itself.
    let db = raw_db(&path);
    let txn = db.begin_read().unwrap();
    let cache = txn
        .open_table(redb::TableDefinition::<&[u8; 32], &[u8]>::new("cache"))
        .unwrap();
    assert_eq!(
        cache.get(&[7; 32]).unwrap().unwrap().value(),
        b"{\"answer\": 1}"
    );
    drop((cache, txn, db));
    let reader = RunReader::open(&path).unwrap();
    let snap = reader.snapshot().unwrap();
    assert_eq!(all_rows(&snap, "questions"), before);
    assert_eq!(snap.batches("a", 0).unwrap().count(), 1);
    assert_eq!(snap.reclaimed("a").unwrap(), (0, 0));
    assert_eq!(snap.cached(&[7; 32]).unwrap().unwrap(), b"{\"answer\": 1}");
}

#[test]
fn new_files_store_batches_and_answers_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let text = "the same few words again and again, ".repeat(50);
    let answer = format!("{{\"content\": \"{text}\"}}").into_bytes();
    {
        let log = RunLog::create(&path, new_run()).unwrap();
        let rows: Vec<Row> = (0..20)
            .map(|i| Row::new().with("i", i as i64).with("text", text.as_str()))
            .collect();
        log.commit(
            Progress::new()
                .batch(Batch {
                    step: "a".into(),
                    seq: 0,
                    rows,
                    last: true,
                })
                .cache([1; 32], answer.clone()),
        )
        .unwrap();
    }
    assert_eq!(stored_format_version(&path), 3);
    let db = raw_db(&path);
    let txn = db.begin_read().unwrap();
    let batches = txn
        .open_table(redb::TableDefinition::<(&str, u64), &[u8]>::new("batches"))
        .unwrap();
    let stored = batches.get(("a", 0)).unwrap().unwrap().value().len();
    assert!(stored * 20 < 20 * text.len(), "{stored} bytes stored");
    let cache = txn
        .open_table(redb::TableDefinition::<&[u8; 32], &[u8]>::new("cache"))
        .unwrap();
    assert!(cache.get(&[1; 32]).unwrap().unwrap().value().len() * 5 < answer.len());
    drop((batches, cache, txn, db));
    let reader = RunReader::open(&path).unwrap();
    let snap = reader.snapshot().unwrap();
    let rows = all_rows(&snap, "a");
    assert_eq!(rows.len(), 20);
    assert_eq!(
        rows[19].get("text").and_then(Value::as_str),
        Some(text.as_str())
    );
    assert_eq!(snap.cached(&[1; 32]).unwrap(), Some(answer));
}

#[test]
fn reclaim_deletes_only_what_every_consumer_is_past() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let log = RunLog::create(&path, new_run()).unwrap();
    let consumers = || vec!["b<-a".to_string(), "c<-a".to_string()];
    log.commit(
        Progress::new()
            .batch(batch("a", 0, 3, false))
            .batch(batch("a", 1, 3, false))
            .batch(batch("a", 2, 3, true)),
    )
    .unwrap();
    // One consumer past two batches, the other not: nothing goes.
    log.commit(
        Progress::new()
            .cursor("b<-a", 6)
            .reclaim("a", 2, 6, consumers()),
    )
    .unwrap();
    let snap = log.snapshot().unwrap();
    assert_eq!(snap.batches("a", 0).unwrap().count(), 3);
    assert_eq!(snap.reclaimed("a").unwrap(), (0, 0));
    // The second one past the first batch only: the first batch goes, in that commit.
    log.commit(
        Progress::new()
            .cursor("c<-a", 4)
            .reclaim("a", 1, 3, consumers()),
    )
    .unwrap();
    let snap = log.snapshot().unwrap();
    let left: Vec<u64> = snap
        .batches("a", 0)
        .unwrap()
        .map(|b| b.unwrap().seq)
        .collect();
    assert_eq!(left, vec![1, 2]);
    assert_eq!(snap.reclaimed("a").unwrap(), (1, 3));
    // Beyond the committed batches, or backwards: refused silently, nothing deleted.
    log.commit(
        Progress::new()
            .cursor("c<-a", 9)
            .cursor("b<-a", 9)
            .reclaim("a", 4, 9, consumers())
            .reclaim("a", 0, 0, consumers()),
    )
    .unwrap();
    assert_eq!(log.snapshot().unwrap().batches("a", 0).unwrap().count(), 2);
    log.commit(Progress::new().reclaim("a", 3, 9, consumers()))
        .unwrap();
    let snap = log.snapshot().unwrap();
    assert_eq!(snap.batches("a", 0).unwrap().count(), 0);
    assert_eq!(snap.reclaimed("a").unwrap(), (3, 9));
    // The step's record still counts everything it produced.
    assert_eq!(snap.step("a").unwrap().unwrap().rows, 9);
    drop(snap);
    // A restart forgets what was reclaimed.
    log.restart(new_run()).unwrap();
    assert_eq!(log.snapshot().unwrap().reclaimed("a").unwrap(), (0, 0));
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    {
        let log = RunLog::create(&path, new_run()).unwrap();
        for seq in 0..50 {
            log.commit(Progress::new().batch(batch("a", seq, 100, false)))
                .unwrap();
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    for keep in [len / 2, 1000, 10] {
        let cut = dir.path().join(format!("cut-{keep}.redb"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&cut, &bytes[..keep as usize]).unwrap();
        let err = RunLog::open(&cut)
            .and_then(|log| {
                // Opening may succeed on a lucky cut; reading every batch must not.
                let snap = log.snapshot()?;
                snap.batches("a", 0)?.collect::<Result<Vec<_>, _>>()?;
                Ok(())
            })
            .err()
            .unwrap_or_else(|| panic!("cut at {keep} of {len} bytes was accepted"));
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::NotARunDatabase { .. }),
            "cut at {keep}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("cut-{keep}")), "{err}");
    }
}

#[test]
fn missing_file_and_existing_run_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let err = RunLog::open(&path).err().unwrap();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    drop(RunLog::create(&path, new_run()).unwrap());
    let err = RunLog::create(&path, new_run()).err().unwrap();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    let (_, created) = RunLog::open_or_create(&path, new_run()).unwrap();
    assert!(!created);
}

#[test]
fn creation_is_atomic_and_a_leftover_staging_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    // What a crash during an earlier creation leaves behind.
    std::fs::write(dir.path().join("run.redb.creating"), b"half written").unwrap();
    let (log, created) = RunLog::open_or_create(&path, new_run()).unwrap();
    assert!(created);
    assert_eq!(log.meta().unwrap().signature, "sig-1");
    assert!(!dir.path().join("run.redb.creating").exists());
}

#[test]
fn non_durable_baseline_commits_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = distill_storage::LogOptions { durable: false };
    let log = RunLog::create_with(dir.path().join("run.redb"), new_run(), options).unwrap();
    log.commit(Progress::new().batch(batch("a", 0, 4, true)))
        .unwrap();
    assert_eq!(log.snapshot().unwrap().step("a").unwrap().unwrap().rows, 4);
}

#[test]
fn restart_drops_progress_keeps_the_cache_and_continues_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    let key = [7u8; 32];
    log.commit(
        Progress::new()
            .batch(batch("a", 0, 2, true))
            .cursor("a<-x", 2)
            .offset("hub", 1)
            .cache(key, b"paid".to_vec()),
    )
    .unwrap();
    let before = log.snapshot().unwrap().log_len().unwrap();
    log.restart(NewRun {
        signature: "sig-2".into(),
        pipeline: "name: changed".into(),
        created_by: "tests".into(),
    })
    .unwrap();
    let snap = log.snapshot().unwrap();
    assert_eq!(snap.meta().unwrap().signature, "sig-2");
    assert_eq!(snap.run_state().unwrap().status, RunStatus::Created);
    assert!(snap.steps().unwrap().is_empty());
    assert_eq!(snap.batches("a", 0).unwrap().count(), 0);
    assert_eq!(snap.cursor("a<-x").unwrap(), None);
    assert_eq!(snap.offset("hub").unwrap(), None);
    assert_eq!(snap.cached(&key).unwrap().as_deref(), Some(&b"paid"[..]));
    assert_eq!(snap.log_len().unwrap(), before + 1);
    drop(snap);
    // Batch numbering starts over.
    log.commit(Progress::new().batch(batch("a", 0, 1, false)))
        .unwrap();
}

#[test]
fn restart_keeping_keeps_only_the_records_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::create(dir.path().join("run.redb"), new_run()).unwrap();
    log.commit(
        Progress::new()
            .record("batch:gen:abc", Some(b"open job".to_vec()))
            .record("batchkeys:gen:abc", Some(vec![1; 32]))
            .record("hub:org/repo", Some(b"pushed".to_vec()))
            .record("sig:gen", Some(b"s".to_vec())),
    )
    .unwrap();
    log.restart_keeping(new_run(), &["batch:", "batchkeys:"])
        .unwrap();
    let snap = log.snapshot().unwrap();
    let kept: Vec<String> = snap
        .records("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kept, ["batch:gen:abc", "batchkeys:gen:abc"]);
    assert_eq!(
        snap.record("batch:gen:abc").unwrap().as_deref(),
        Some(&b"open job"[..])
    );
}

#[test]
fn a_batch_whose_compressed_bytes_are_damaged_reads_as_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    {
        let log = RunLog::create(&path, new_run()).unwrap();
        log.commit(Progress::new().batch(batch("a", 0, 50, true)))
            .unwrap();
    }
    // Overwrite the middle of the stored zstd frame, as a failing disk would.
    use redb::ReadableTable;
    {
        let db = raw_db(&path);
        let txn = db.begin_write().unwrap();
        {
            let def = redb::TableDefinition::<(&str, u64), &[u8]>::new("batches");
            let mut batches = txn.open_table(def).unwrap();
            let mut stored = batches.get(("a", 0)).unwrap().unwrap().value().to_vec();
            let n = stored.len();
            stored[n / 2..n - 2].fill(0xff);
            batches.insert(("a", 0), stored.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let reader = RunReader::open(&path).unwrap();
    let snap = reader.snapshot().unwrap();
    let err = snap.batches("a", 0).unwrap().next().unwrap().unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("batch 0 of step 'a'"), "{err}");
}
