//! Consistent reads of a run database: everything seen through one [`Snapshot`] is one commit.

use crate::codec::{FORMAT_VERSION, decode};
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::guard::{as_damage, guarded};
use crate::model::{Batch, LogEntry, RunMeta, RunState, StepRecord};
use crate::redb_errors::map;
use crate::schema::{
    BATCHES, CACHE, CURSORS, KEY_FORMAT, KEY_META, KEY_STATE, LOG, META, OFFSETS, RECLAIMED,
    RECORDS, STEPS,
};
use crate::value::Row;
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use std::path::{Path, PathBuf};

/// A read-only view of the run database as of one commit. Holding it never blocks the writer.
pub struct Snapshot {
    pub(crate) txn: ReadTransaction,
    pub(crate) path: PathBuf,
    /// How the file's payloads are stored (from its format version).
    pub(crate) compression: Compression,
}

impl Snapshot {
    pub(crate) fn new(txn: ReadTransaction, path: &Path) -> Self {
        let mut snapshot = Self {
            txn,
            path: path.to_path_buf(),
            compression: Compression::None,
        };
        // A file whose version cannot be read is refused by `check_format` when opened.
        if let Ok(version) = snapshot.check_format() {
            snapshot.compression = Compression::of_format(version);
        }
        snapshot
    }

    /// The file's format version (see [`FORMAT_VERSION`]).
    pub fn format_version(&self) -> Result<u32> {
        self.check_format()
    }

    /// How many of `step`'s first batches were deleted once every consumer was past them
    /// (reclaimed), and how many rows they held: `(0, 0)` when none were.
    pub fn reclaimed(&self, step: &str) -> Result<(u64, u64)> {
        guarded(&self.path, || {
            let table = match self.txn.open_table(RECLAIMED) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok((0, 0)),
                Err(other) => return Err(map(&self.path, "open table", other)),
            };
            let raw = table.get(step).map_err(self.err("read reclaimed"))?;
            Ok(raw.map_or((0, 0), |v| v.value()))
        })
    }

    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<redb::ReadOnlyTable<K, V>> {
        self.txn.open_table(def).map_err(|e| match e {
            TableError::TableDoesNotExist(name) => Error::NotARunDatabase {
                path: self.path.clone(),
                reason: format!("table '{name}' is missing"),
            },
            other => map(&self.path, "open table", other),
        })
    }

    fn err(&self, context: &'static str) -> impl Fn(redb::StorageError) -> Error + '_ {
        move |e| map(&self.path, context, e)
    }

    /// Checks that this is a run database this build can read.
    pub(crate) fn check_format(&self) -> Result<u32> {
        guarded(&self.path, || {
            let meta = self.table(META)?;
            let raw = meta.get(KEY_FORMAT).map_err(self.err("read format"))?;
            let Some(raw) = raw else {
                return Err(Error::NotARunDatabase {
                    path: self.path.clone(),
                    reason: "no format version".into(),
                });
            };
            let bytes: [u8; 4] = raw.value().try_into().map_err(|_| Error::Corrupt {
                path: self.path.clone(),
                detail: "format version is not 4 bytes".into(),
            })?;
            let found = u32::from_le_bytes(bytes);
            if found > FORMAT_VERSION {
                return Err(Error::NewerFormat {
                    path: self.path.clone(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(found)
        })
    }

    fn meta_record<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let meta = self.table(META)?;
        let raw = meta.get(key).map_err(self.err("read metadata"))?;
        let raw = raw.ok_or_else(|| Error::Corrupt {
            path: self.path.clone(),
            detail: format!("metadata '{key}' is missing"),
        })?;
        decode(raw.value(), key)
    }

    /// The run's metadata.
    pub fn meta(&self) -> Result<RunMeta> {
        guarded(&self.path, || self.meta_record(KEY_META))
    }

    /// The run's status and stage.
    pub fn run_state(&self) -> Result<RunState> {
        guarded(&self.path, || self.meta_record(KEY_STATE))
    }

    /// Every step the log knows of, by name.
    pub fn steps(&self) -> Result<Vec<(String, StepRecord)>> {
        guarded(&self.path, || {
            let table = self.table(STEPS)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(self.err("read steps"))? {
                let (k, v) = item.map_err(self.err("read steps"))?;
                let name = k.value().to_owned();
                let record = decode(v.value(), &format!("state of step '{name}'"))?;
                out.push((name, record));
            }
            Ok(out)
        })
    }

    /// One step's record, if the log knows the step.
    pub fn step(&self, step: &str) -> Result<Option<StepRecord>> {
        guarded(&self.path, || {
            let table = self.table(STEPS)?;
            let raw = table.get(step).map_err(self.err("read step"))?;
            raw.map(|v| decode(v.value(), &format!("state of step '{step}'")))
                .transpose()
        })
    }

    /// The step's batches from `from` on, in order, streamed.
    pub fn batches(&self, step: &str, from: u64) -> Result<BatchIter> {
        guarded(&self.path, || {
            let table = self.table(BATCHES)?;
            let range = table
                .range((step, from)..=(step, u64::MAX))
                .map_err(self.err("read batches"))?;
            Ok(BatchIter {
                range,
                path: self.path.clone(),
                compression: self.compression,
            })
        })
    }

    /// One batch of a step.
    pub fn batch(&self, step: &str, seq: u64) -> Result<Option<Batch>> {
        guarded(&self.path, || {
            self.batches(step, seq)?
                .next()
                .transpose()
                .map(|b| b.filter(|b| b.seq == seq))
        })
    }

    /// A cursor's position.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>> {
        guarded(&self.path, || {
            let table = self.table(CURSORS)?;
            let raw = table.get(name).map_err(self.err("read cursor"))?;
            Ok(raw.map(|v| v.value()))
        })
    }

    /// Every cursor, by name.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>> {
        guarded(&self.path, || {
            let table = self.table(CURSORS)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(self.err("read cursors"))? {
                let (k, v) = item.map_err(self.err("read cursors"))?;
                out.push((k.value().to_owned(), v.value()));
            }
            Ok(out)
        })
    }

    /// Log entries from `from` on, in order, streamed.
    pub fn log_from(&self, from: u64) -> Result<LogIter> {
        guarded(&self.path, || {
            let table = self.table(LOG)?;
            let range = table.range(from..).map_err(self.err("read log"))?;
            Ok(LogIter {
                range,
                path: self.path.clone(),
            })
        })
    }

    /// The last `count` log entries, newest first.
    pub fn log_tail(&self, count: usize) -> Result<Vec<LogEntry>> {
        guarded(&self.path, || {
            let table = self.table(LOG)?;
            let range = table.range::<u64>(..).map_err(self.err("read log"))?;
            range
                .rev()
                .take(count)
                .map(|item| {
                    let (k, v) = item.map_err(self.err("read log"))?;
                    decode(v.value(), &format!("log entry {}", k.value()))
                })
                .collect()
        })
    }

    /// Number of log entries (the next entry's sequence number).
    pub fn log_len(&self) -> Result<u64> {
        guarded(&self.path, || {
            let table = self.table(LOG)?;
            let last = table.last().map_err(self.err("read log"))?;
            Ok(last.map_or(0, |(k, _)| k.value() + 1))
        })
    }

    /// A consumer's offset.
    pub fn offset(&self, consumer: &str) -> Result<Option<u64>> {
        guarded(&self.path, || {
            let table = self.table(OFFSETS)?;
            let raw = table.get(consumer).map_err(self.err("read offset"))?;
            Ok(raw.map(|v| v.value()))
        })
    }

    /// A consumer's record.
    pub fn record(&self, key: &str) -> Result<Option<Vec<u8>>> {
        guarded(&self.path, || {
            let table = self.table(RECORDS)?;
            let raw = table.get(key).map_err(self.err("read record"))?;
            Ok(raw.map(|v| v.value().to_vec()))
        })
    }

    /// Every consumer record whose key starts with `prefix`, by key.
    pub fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        guarded(&self.path, || {
            let table = self.table(RECORDS)?;
            let mut out = Vec::new();
            for item in table.range(prefix..).map_err(self.err("read records"))? {
                let (k, v) = item.map_err(self.err("read records"))?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// A cached response.
    pub fn cached(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        guarded(&self.path, || {
            let table = self.table(CACHE)?;
            let raw = table.get(key).map_err(self.err("read cache"))?;
            raw.map(|v| {
                let what = "a cached answer";
                Ok(self.compression.unpack(v.value(), what)?.into_owned())
            })
            .transpose()
        })
    }

    /// Number of cached responses.
    pub fn cache_len(&self) -> Result<u64> {
        guarded(&self.path, || {
            let table = self.table(CACHE)?;
            table.len().map_err(self.err("read cache"))
        })
    }
}

/// Streams a step's batches in order. See [`Snapshot::batches`].
pub struct BatchIter {
    range: redb::Range<'static, (&'static str, u64), &'static [u8]>,
    path: PathBuf,
    compression: Compression,
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        let path = self.path.clone();
        guarded(&path, || Ok(self.next_batch()))
            .unwrap_or_else(|e| Some(Err(e)))
            .map(|item| item.map_err(|e| as_damage(&path, e)))
    }
}

impl BatchIter {
    fn next_batch(&mut self) -> Option<Result<Batch>> {
        let item = self.range.next()?;
        Some(
            item.map_err(|e| map(&self.path, "read batch", e))
                .and_then(|(k, v)| {
                    let (step, seq) = k.value();
                    let what = format!("batch {seq} of step '{step}'");
                    let bytes = self.compression.unpack(v.value(), &what)?;
                    let (rows, last): (Vec<Row>, bool) = decode(&bytes, &what)?;
                    Ok(Batch {
                        step: step.to_owned(),
                        seq,
                        rows,
                        last,
                    })
                }),
        )
    }
}

/// Streams log entries in order. See [`Snapshot::log_from`].
pub struct LogIter {
    range: redb::Range<'static, u64, &'static [u8]>,
    path: PathBuf,
}

impl Iterator for LogIter {
    type Item = Result<LogEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        let path = self.path.clone();
        guarded(&path, || {
            Ok(self.range.next().map(|item| {
                item.map_err(|e| map(&self.path, "read log", e))
                    .and_then(|(k, v)| decode(v.value(), &format!("log entry {}", k.value())))
            }))
        })
        .unwrap_or_else(|e| Some(Err(e)))
        .map(|item| item.map_err(|e| as_damage(&path, e)))
    }
}
