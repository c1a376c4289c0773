//! A full disk or a failed fsync (injected through redb's StorageBackend): the commit that hits it fails with a clear error naming the file, the writer is
//! poisoned (no write on an unknown state), and everything committed before survives a reopen.

use distill_storage::{Batch, Error, NewRun, Progress, Row, RunLog};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// A file backend with a byte budget for writes and growth; past it, ENOSPC.
#[derive(Debug)]
struct Budget {
    inner: FileBackend,
    left: Arc<AtomicI64>,
    /// When set, fsync fails with EIO.
    fail_sync: Arc<AtomicBool>,
}

impl Budget {
    fn spend(&self, bytes: u64) -> io::Result<()> {
        if self.left.fetch_sub(bytes as i64, Ordering::SeqCst) < bytes as i64 {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

impl StorageBackend for Budget {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let now = self.inner.len()?;
        if len > now {
            self.spend(len - now)?;
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.spend(data.len() as u64)?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

fn rows(seq: u64) -> Vec<Row> {
    (0..200)
        .map(|i| {
            Row::new()
                .with("seq", seq as i64)
                .with("text", format!("{seq}-{i} padding text"))
        })
        .collect()
}

fn unit(seq: u64) -> Progress {
    Progress::new()
        .batch(Batch {
            step: "s".into(),
            seq,
            rows: rows(seq),
            last: false,
        })
        .cursor("s<-in", seq)
}

struct Faults {
    left: Arc<AtomicI64>,
    fail_sync: Arc<AtomicBool>,
}

fn open_faulty(path: &std::path::Path) -> (RunLog, Faults) {
    let left = Arc::new(AtomicI64::new(i64::MAX));
    let fail_sync = Arc::new(AtomicBool::new(false));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let backend = Budget {
        inner: FileBackend::new(file).unwrap(),
        left: left.clone(),
        fail_sync: fail_sync.clone(),
    };
    let run = NewRun {
        signature: "s".into(),
        pipeline: "p".into(),
        created_by: "tests".into(),
    };
    let (log, created) = RunLog::on_backend(backend, path, run).unwrap();
    assert!(created);
    (log, Faults { left, fail_sync })
}

/// Reopens without faults: the acknowledged batches are all there, intact; writing continues.
fn check_after_reopen(path: &std::path::Path, acknowledged: u64) {
    let log = RunLog::open(path).unwrap();
    let snap = log.snapshot().unwrap();
    let record = snap.step("s").unwrap().unwrap();
    // A commit whose fsync failed may or may not have reached the disk; never less than acked.
    assert!(record.batches == acknowledged || record.batches == acknowledged + 1);
    for (i, b) in snap.batches("s", 0).unwrap().enumerate() {
        let b = b.unwrap();
        assert_eq!(b.seq, i as u64);
        assert_eq!(b.rows, rows(b.seq));
    }
    assert_eq!(snap.cursor("s<-in").unwrap(), Some(record.batches - 1));
    let next = record.batches;
    drop(snap);
    log.commit(unit(next)).unwrap();
}

#[test]
fn failed_fsync_poisons_the_writer_and_keeps_the_committed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let (log, faults) = open_faulty(&path);
    for seq in 0..10 {
        log.commit(unit(seq)).unwrap();
    }
    faults.fail_sync.store(true, Ordering::SeqCst);
    let err = log.commit(unit(10)).unwrap_err();
    assert!(err.to_string().contains("run.redb"), "{err}");
    faults.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(log.commit(unit(10)), Err(Error::Poisoned { .. })));
    drop(log);
    check_after_reopen(&path, 10);
}

#[test]
fn disk_full_is_clear_poisons_the_writer_and_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.redb");
    let (log, faults) = open_faulty(&path);
    let left = faults.left;
    let mut committed = 0;
    for seq in 0..20 {
        log.commit(unit(seq)).unwrap();
        committed += 1;
    }
    // The disk now has room for a little more, not for much.
    left.store(200_000, Ordering::SeqCst);
    let mut seq = committed;
    let err = loop {
        match log.commit(unit(seq)) {
            Ok(_) => {
                committed += 1;
                seq += 1;
            }
            Err(e) => break e,
        }
        assert!(seq < 10_000, "the budget never ran out");
    };
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(
        err.to_string().contains("run.redb") && err.to_string().contains("disk full"),
        "{err}"
    );
    // No write on an unknown state.
    left.store(i64::MAX, Ordering::SeqCst);
    let again = log.commit(unit(seq)).unwrap_err();
    assert!(matches!(again, Error::Poisoned { .. }), "{again:?}");
    drop(log);
    // Room again: everything acknowledged is there, intact, and the run continues.
    check_after_reopen(&path, committed);
}
