//! A consistent copy of the run database, for checkpoints: every table of one [`Snapshot`]
//! written into a fresh redb file while the run goes on.
//!
//! The copy reads through the snapshot's read transaction, so it sees exactly one commit and
//! never blocks the writer (redb keeps the pages of a live read transaction; the writer goes on
//! with others). It is not a copy of the file's bytes: a file being written mixes the header of
//! one commit with pages of the next. The new file is a run database like any other: it opens
//! with [`crate::RunLog`] or [`crate::RunReader`], and holds no free pages.

use crate::error::{Error, Result};
use crate::guard::guarded;
use crate::redb_errors::map;
use crate::schema::{BATCHES, CACHE, CURSORS, LOG, META, OFFSETS, RECLAIMED, RECORDS, STEPS};
use crate::snapshot::Snapshot;
use redb::{
    ConcurrencyMode, Database, MultimapTableHandle, ReadTransaction, ReadableTable,
    TableDefinition, TableHandle,
};
use std::path::Path;

/// Bytes of keys and values written per transaction of the copy: bounds the memory redb holds
/// for uncommitted pages, whatever the database's size.
const CHUNK_BYTES: usize = 64 << 20;

/// redb's page cache for the new file: it is written once, in key order, and never read back
/// here.
const COPY_CACHE_BYTES: usize = 16 << 20;

/// What [`Snapshot::copy_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyStats {
    /// Tables copied.
    pub tables: u32,
    /// Entries copied, over every table.
    pub entries: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Length of the new file.
    pub file_bytes: u64,
    /// The run database format version recorded in the copy.
    pub format_version: u32,
}

impl Snapshot {
    /// Writes every table of this snapshot into a new run database at `dest`, which must not
    /// exist. A table this build does not know is an error (a copy must never leave one out).
    /// `dest` is complete only when this returns `Ok`; on an error it may hold part of a copy
    /// and should be removed.
    pub fn copy_to(&self, dest: &Path) -> Result<CopyStats> {
        if dest.exists() {
            return Err(Error::AlreadyExists {
                path: dest.to_path_buf(),
            });
        }
        let db = crate::run_log::guarded_open(dest, || {
            let mut builder = redb::Builder::new();
            builder.set_cache_size(COPY_CACHE_BYTES);
            // The mode of every run database, so the copy opens as one.
            builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
            builder.create(dest)
        })?;
        let mut stats = CopyStats {
            format_version: self.check_format()?,
            ..CopyStats::default()
        };
        guarded(&self.path, || {
            let txn = &self.txn;
            let multimaps = txn
                .list_multimap_tables()
                .map_err(|e| map(&self.path, "list tables", e))?
                .map(|t| t.name().to_owned())
                .collect::<Vec<_>>();
            if let Some(name) = multimaps.first() {
                return Err(unknown_table(&self.path, name));
            }
            let names = txn
                .list_tables()
                .map_err(|e| map(&self.path, "list tables", e))?
                .map(|t| t.name().to_owned())
                .collect::<Vec<_>>();
            let from = &self.path;
            for name in names {
                let name = name.as_str();
                if name == META.name() {
                    copy_table(txn, from, &db, dest, META, &mut stats)?;
                } else if name == BATCHES.name() {
                    copy_table(txn, from, &db, dest, BATCHES, &mut stats)?;
                } else if name == STEPS.name() {
                    copy_table(txn, from, &db, dest, STEPS, &mut stats)?;
                } else if name == CURSORS.name() {
                    copy_table(txn, from, &db, dest, CURSORS, &mut stats)?;
                } else if name == LOG.name() {
                    copy_table(txn, from, &db, dest, LOG, &mut stats)?;
                } else if name == CACHE.name() {
                    copy_table(txn, from, &db, dest, CACHE, &mut stats)?;
                } else if name == OFFSETS.name() {
                    copy_table(txn, from, &db, dest, OFFSETS, &mut stats)?;
                } else if name == RECORDS.name() {
                    copy_table(txn, from, &db, dest, RECORDS, &mut stats)?;
                } else if name == RECLAIMED.name() {
                    copy_table(txn, from, &db, dest, RECLAIMED, &mut stats)?;
                } else {
                    return Err(unknown_table(&self.path, name));
                }
                stats.tables += 1;
            }
            Ok(())
        })?;
        drop(db);
        stats.file_bytes = std::fs::metadata(dest)
            .map_err(|source| Error::Io {
                path: dest.to_path_buf(),
                source,
            })?
            .len();
        Ok(stats)
    }
}

/// A table the copy does not know: copying the others would make a database that is not the
/// run's, so the copy stops.
fn unknown_table(path: &Path, name: &str) -> Error {
    Error::Database {
        path: path.to_path_buf(),
        context: "copy the run database",
        detail: format!(
            "table '{name}' is not known to this distill's copier (storage/src/copy.rs lists the tables it copies)"
        ),
    }
}

/// Copies one table in key order, in transactions of about [`CHUNK_BYTES`].
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    from: &Path,
    dst: &Database,
    to: &Path,
    def: TableDefinition<K, V>,
    stats: &mut CopyStats,
) -> Result<()> {
    let table = src
        .open_table(def)
        .map_err(|e| map(from, "open table", e))?;
    let mut items = table.iter().map_err(|e| map(from, "read table", e))?;
    loop {
        let txn = dst.begin_write().map_err(|e| map(to, "begin write", e))?;
        let mut done = false;
        {
            let mut out = txn.open_table(def).map_err(|e| map(to, "open table", e))?;
            let mut bytes = 0usize;
            while bytes < CHUNK_BYTES {
                let Some(item) = items.next() else {
                    done = true;
                    break;
                };
                let (key, value) = item.map_err(|e| map(from, "read table", e))?;
                let (key, value) = (key.value(), value.value());
                let size = K::as_bytes(&key).as_ref().len() + V::as_bytes(&value).as_ref().len();
                out.insert(key, value).map_err(|e| map(to, "write", e))?;
                bytes += size;
                stats.entries += 1;
                stats.bytes += size as u64;
            }
        }
        txn.commit().map_err(|e| map(to, "commit", e))?;
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Batch, NewRun, Progress, RunLog, RunReader, StepState};

    fn filled(path: &std::path::Path) -> RunLog {
        let log = RunLog::create(
            path,
            NewRun {
                signature: "sig".into(),
                pipeline: "name: p\nsteps: []\n".into(),
                created_by: "test".into(),
            },
        )
        .unwrap();
        for seq in 0..20u64 {
            let rows = (0..50)
                .map(|i| crate::Row::new().with("t", format!("row {i} of batch {seq}")))
                .collect();
            log.commit(
                Progress::new()
                    .batch(Batch {
                        step: "a".into(),
                        seq,
                        rows,
                        last: seq == 19,
                    })
                    .cursor("a:in", seq)
                    .cache([seq as u8; 32], vec![seq as u8; 100])
                    .offset("hub:x", seq)
                    .record(format!("rec:{seq}"), Some(vec![1, 2, 3]))
                    .state("a", StepState::Running),
            )
            .unwrap();
        }
        log
    }

    #[test]
    fn a_copy_holds_every_table_of_its_snapshot_and_not_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(&dir.path().join("run.redb"));
        let snapshot = log.snapshot().unwrap();
        // Written after the snapshot: not in the copy.
        log.commit(Progress::new().record("later", Some(vec![9])))
            .unwrap();
        let copy = dir.path().join("copy.redb");
        let stats = snapshot.copy_to(&copy).unwrap();
        assert_eq!(stats.tables, 9);
        assert!(stats.entries > 100 && stats.file_bytes > 0, "{stats:?}");
        let original = log.snapshot().unwrap();
        let reader = RunReader::open(&copy).unwrap();
        let copied = reader.snapshot().unwrap();
        assert_eq!(copied.meta().unwrap(), original.meta().unwrap());
        assert_eq!(copied.log_len().unwrap(), snapshot.log_len().unwrap());
        assert_eq!(copied.steps().unwrap(), snapshot.steps().unwrap());
        assert_eq!(copied.cursors().unwrap(), snapshot.cursors().unwrap());
        assert_eq!(copied.cache_len().unwrap(), 20);
        assert_eq!(copied.cached(&[7; 32]).unwrap(), Some(vec![7; 100]));
        assert_eq!(copied.offset("hub:x").unwrap(), Some(19));
        assert_eq!(copied.records("rec:").unwrap().len(), 20);
        assert_eq!(copied.record("later").unwrap(), None);
        let a: Vec<_> = copied
            .batches("a", 0)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let b: Vec<_> = snapshot
            .batches("a", 0)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 20);
        // The copy is a run database a writer resumes.
        drop((reader, copied));
        let resumed = RunLog::open(&copy).unwrap();
        assert_eq!(
            resumed.snapshot().unwrap().log_len().unwrap(),
            snapshot.log_len().unwrap()
        );
    }

    #[test]
    fn a_copy_never_overwrites_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(&dir.path().join("run.redb"));
        let existing = dir.path().join("x");
        std::fs::write(&existing, b"keep").unwrap();
        let err = log.snapshot().unwrap().copy_to(&existing).unwrap_err();
        assert!(err.to_string().contains("already holds"), "{err}");
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    }
}
