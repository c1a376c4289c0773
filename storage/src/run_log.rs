//! The writer's handle on a run database: create, open, and commit units of progress.

use crate::codec::{FORMAT_VERSION, decode, encode};
use crate::compress::{BatchLife, Compression, FIRST_COMPRESSED};
use crate::error::{Error, Result};
use crate::model::{Event, LogEntry, RunMeta, RunState, RunStatus, StepRecord, StepState, now_ms};
use crate::progress::{PendingBatch, Progress, Reclaim};
use crate::redb_errors::map;
use crate::schema::{
    BATCHES, CACHE, CURSORS, KEY_FORMAT, KEY_META, KEY_STATE, LOG, META, OFFSETS, RECLAIMED,
    RECORDS, STEPS,
};
use crate::snapshot::Snapshot;
use crate::value::Row;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A changed pipeline for [`RunLog::rebase`]: the new identity, and what of the old run goes.
#[derive(Debug, Clone, Default)]
pub struct Rebase {
    /// The new pipeline signature.
    pub signature: String,
    /// The new canonical pipeline definition.
    pub pipeline: String,
    /// Steps whose batches and records are removed.
    pub drop_steps: Vec<String>,
    /// Cursors removed.
    pub drop_cursors: Vec<String>,
    /// Records set (`Some`) or removed (`None`).
    pub records: Vec<(String, Option<Vec<u8>>)>,
}

/// What a new run database records about its pipeline.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// blake3 hash of the canonical pipeline, hex encoded.
    pub signature: String,
    /// The canonical pipeline text, without secrets.
    pub pipeline: String,
    /// Version of the program creating the run.
    pub created_by: String,
}

/// What a commit wrote to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence numbers of the log entries this unit added.
    pub log: Range<u64>,
}

/// The single writer of a run database.
///
/// Opened in redb's `SingleWriter` mode, so other processes can follow its commits with
/// [`crate::RunReader`] while it writes. Every commit is durable (`Durability::Immediate`).
/// A failed commit poisons the handle: later commits fail with [`Error::Poisoned`], and the run
/// resumes from the last commit after reopening.
pub struct RunLog {
    db: Database,
    path: PathBuf,
    writer: Mutex<WriterState>,
    durable: bool,
    /// The file's format version, readable without the writer's lock (see `encode_rows`).
    version: AtomicU32,
}

/// How a run database is opened for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Every commit durable (the default). `false` is only a baseline for benchmarks: commits
    /// stay in memory (redb `Durability::None`), are all lost on a crash, and other processes
    /// cannot read the file while it is open.
    pub durable: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { durable: true }
    }
}

/// What the writer keeps in memory to check units before writing them.
#[derive(Default, Clone)]
struct WriterState {
    /// Per step: next batch seq and whether its last batch is committed.
    steps: HashMap<String, (u64, bool)>,
    /// Next log sequence number.
    next_log: u64,
    /// The first fatal error, once one happened.
    poisoned: Option<String>,
    /// The file's format version: what it is written in (a file keeps its format).
    version: u32,
}

/// redb's page cache. The log is written once and read back in order (resume, export), so a
/// large cache buys little; redb's default of 1 GiB would make a long run's memory grow.
pub(crate) const CACHE_BYTES: usize = 64 << 20;

pub(crate) fn builder(options: LogOptions) -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    // SingleWriter lets other processes follow the run; it refuses non-durable commits.
    builder.set_concurrency_mode(if options.durable {
        ConcurrencyMode::SingleWriter
    } else {
        ConcurrencyMode::ExclusiveWriter
    });
    builder
}

fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    path.with_file_name(name)
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

/// Runs a redb open, turning a panic on a damaged file into [`Error::Corrupt`].
pub(crate) fn guarded_open<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, redb::DatabaseError>,
) -> Result<T> {
    crate::guard::guarded(path, || open().map_err(|e| map(path, "open", e)))
}

impl RunLog {
    /// Creates a new run database at `path`. Fails if the file already holds data.
    pub fn create(path: impl AsRef<Path>, run: NewRun) -> Result<Self> {
        Self::create_with(path, run, LogOptions::default())
    }

    /// [`RunLog::create`] with options.
    pub fn create_with(path: impl AsRef<Path>, run: NewRun, options: LogOptions) -> Result<Self> {
        let path = path.as_ref();
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return match Self::open(path) {
                Ok(_) => Err(Error::AlreadyExists {
                    path: path.to_path_buf(),
                }),
                Err(e) => Err(e),
            };
        }
        // Built under a temporary name and renamed into place once initialised, so a crash
        // during creation never leaves a file that looks like a damaged run database.
        let staging = staging_path(path);
        let _ = std::fs::remove_file(&staging);
        {
            let db = guarded_open(&staging, || builder(options).create(&staging))?;
            let log = Self {
                db,
                path: path.to_path_buf(),
                writer: Mutex::new(WriterState::default()),
                durable: true,
                version: AtomicU32::new(FORMAT_VERSION),
            };
            log.initialise(run)?;
        }
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::rename(&staging, path).map_err(io)?;
        sync_parent(path).map_err(io)?;
        Self::open_with(path, options)
    }

    /// Opens an existing run database for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, LogOptions::default())
    }

    /// [`RunLog::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, options: LogOptions) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        let db = guarded_open(path, || builder(options).open(path))?;
        let log = Self {
            db,
            path: path.to_path_buf(),
            writer: Mutex::new(WriterState::default()),
            durable: options.durable,
            version: AtomicU32::new(FORMAT_VERSION),
        };
        log.load_state()?;
        Ok(log)
    }

    /// Opens a run database on any redb storage backend, initialising it when it holds none;
    /// returns the handle and whether it was created. For fault injection in tests and for
    /// custom storage. `label` names it in errors. Unlike [`RunLog::create`], creation here is
    /// not atomic.
    pub fn on_backend(
        backend: impl redb::StorageBackend,
        label: &Path,
        run: NewRun,
    ) -> Result<(Self, bool)> {
        let options = LogOptions::default();
        let db = guarded_open(label, || builder(options).create_with_backend(backend))?;
        let log = Self {
            db,
            path: label.to_path_buf(),
            writer: Mutex::new(WriterState::default()),
            durable: true,
            version: AtomicU32::new(FORMAT_VERSION),
        };
        let fresh = log
            .db
            .begin_read()
            .map_err(|e| map(label, "begin read", e))?
            .list_tables()
            .map_err(|e| map(label, "list tables", e))?
            .next()
            .is_none();
        if fresh {
            log.initialise(run)?;
        }
        log.load_state()?;
        Ok((log, fresh))
    }

    /// Starts a new run in this database for `run`'s pipeline: every batch, step record,
    /// cursor, consumer offset and record is removed, in one transaction; the request cache
    /// and the log are kept (the log announces the new run). So a changed pipeline still gets
    /// the answers it already paid for.
    pub fn restart(&self, run: NewRun) -> Result<()> {
        self.restart_keeping(run, &[])
    }

    /// [`RunLog::restart`], keeping the records whose keys start with one of `prefixes`
    /// (those of work paid for and still under way, such as provider batch jobs).
    pub fn restart_keeping(&self, run: NewRun, prefixes: &[&str]) -> Result<()> {
        let mut state = self.lock();
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        let txn = self.begin_write()?;
        {
            let t = |e: redb::TableError| map(&self.path, "restart", e);
            let e = |e: redb::StorageError| map(&self.path, "restart", e);
            txn.delete_table(BATCHES).map_err(t)?;
            txn.open_table(BATCHES).map_err(t)?;
            txn.delete_table(STEPS).map_err(t)?;
            txn.open_table(STEPS).map_err(t)?;
            txn.open_table(RECORDS)
                .map_err(t)?
                .retain(|key, _| prefixes.iter().any(|p| key.starts_with(p)))
                .map_err(e)?;
            for table in [CURSORS, OFFSETS] {
                txn.delete_table(table).map_err(t)?;
                txn.open_table(table).map_err(t)?;
            }
            txn.delete_table(RECLAIMED).map_err(t)?;
            self.write_run_header(&txn, run, state.next_log, state.version)?;
        }
        txn.commit().map_err(|e| map(&self.path, "commit", e))?;
        state.steps.clear();
        state.next_log += 1;
        Ok(())
    }

    /// Moves the run to a changed pipeline, keeping what is still valid: the metadata takes the
    /// new signature and pipeline (the creation time stays, so the run stays the same run), and
    /// everything of the steps in `change.drop_steps` goes (their batches and records; their
    /// counters stay, as accounting of the run), with
    /// the cursors and records named; the request cache and the log are kept, and the log
    /// announces the change. One transaction: after a crash, the run is either unchanged or
    /// wholly moved.
    pub fn rebase(&self, change: Rebase) -> Result<()> {
        let mut state = self.lock();
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        let txn = self.begin_write()?;
        {
            let t = |e: redb::TableError| map(&self.path, "rebase", e);
            let e = |e: redb::StorageError| map(&self.path, "rebase", e);
            let mut meta: RunMeta = {
                let table = txn.open_table(META).map_err(t)?;
                let bytes =
                    table
                        .get(KEY_META)
                        .map_err(e)?
                        .ok_or_else(|| Error::NotARunDatabase {
                            path: self.path.clone(),
                            reason: "no run metadata".into(),
                        })?;
                decode(bytes.value(), "run metadata")?
            };
            meta.signature = change.signature.clone();
            meta.pipeline = change.pipeline;
            meta.format_version = state.version;
            txn.open_table(META)
                .map_err(t)?
                .insert(KEY_META, encode(&meta, "run metadata")?.as_slice())
                .map_err(e)?;
            let mut batches = txn.open_table(BATCHES).map_err(t)?;
            let mut steps = txn.open_table(STEPS).map_err(t)?;
            if state.version >= FIRST_COMPRESSED {
                let mut reclaimed = txn.open_table(RECLAIMED).map_err(t)?;
                for step in &change.drop_steps {
                    reclaimed.remove(step.as_str()).map_err(e)?;
                }
            }
            for step in &change.drop_steps {
                batches
                    .retain_in((step.as_str(), 0)..=(step.as_str(), u64::MAX), |_, _| false)
                    .map_err(e)?;
                // Its counters stay: what its answers cost was spent in this run (budgets and
                // `status` count it); everything else of the step goes.
                let counters = match steps.remove(step.as_str()).map_err(e)? {
                    Some(bytes) => {
                        decode::<StepRecord>(bytes.value(), &format!("state of step '{step}'"))?
                            .counters
                    }
                    None => Default::default(),
                };
                if !counters.is_empty() {
                    let kept = StepRecord {
                        counters,
                        updated_ms: now_ms(),
                        ..StepRecord::default()
                    };
                    let bytes = encode(&kept, &format!("state of step '{step}'"))?;
                    steps.insert(step.as_str(), bytes.as_slice()).map_err(e)?;
                }
            }
            let mut cursors = txn.open_table(CURSORS).map_err(t)?;
            for cursor in &change.drop_cursors {
                cursors.remove(cursor.as_str()).map_err(e)?;
            }
            let mut records = txn.open_table(RECORDS).map_err(t)?;
            for (key, value) in &change.records {
                match value {
                    Some(bytes) => records.insert(key.as_str(), bytes.as_slice()).map_err(e)?,
                    None => records.remove(key.as_str()).map_err(e)?,
                };
            }
            let entry = LogEntry {
                seq: state.next_log,
                at_ms: now_ms(),
                event: Event::Changed {
                    signature: change.signature,
                    dropped: change.drop_steps.clone(),
                },
            };
            txn.open_table(LOG)
                .map_err(t)?
                .insert(state.next_log, encode(&entry, "log entry")?.as_slice())
                .map_err(e)?;
        }
        txn.commit().map_err(|e| map(&self.path, "commit", e))?;
        for step in &change.drop_steps {
            state.steps.remove(step);
        }
        state.next_log += 1;
        Ok(())
    }

    /// Checks the format and loads what the writer checks units against.
    fn load_state(&self) -> Result<()> {
        let snapshot = self.snapshot()?;
        let found = snapshot.check_format()?;
        // Version 1 files become 2 (uncompressed, like 1); 2 and later keep their version.
        let version = found.max(FIRST_COMPRESSED - 1);
        if found < version {
            self.upgrade_format(version)?;
        }
        let mut state = WriterState {
            next_log: snapshot.log_len()?,
            version,
            ..WriterState::default()
        };
        self.version.store(version, Ordering::SeqCst);
        for (name, record) in snapshot.steps()? {
            state.steps.insert(name, (record.batches, record.done));
        }
        drop(snapshot);
        *self.lock() = state;
        Ok(())
    }

    /// Records that the run's process died: a run left `running` by a writer that is gone
    /// (this handle is the only writer) becomes `interrupted`. Nothing else changes.
    pub fn mark_interrupted(&self) -> Result<()> {
        let mut state = self.snapshot()?.run_state()?;
        if state.status != RunStatus::Running {
            return Ok(());
        }
        state.status = RunStatus::Interrupted;
        state.updated_ms = now_ms();
        self.commit(Progress::new().run(state)).map(|_| ())
    }

    /// Marks a version 1 file version 2 before anything new is written to it (version 1 reads
    /// unchanged as 2; see [`FORMAT_VERSION`]).
    fn upgrade_format(&self, version: u32) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(META)
            .map_err(|e| map(&self.path, "upgrade format", e))?
            .insert(KEY_FORMAT, version.to_le_bytes().as_slice())
            .map_err(|e| map(&self.path, "upgrade format", e))?;
        txn.commit().map_err(|e| map(&self.path, "commit", e))
    }

    /// Opens the run database at `path`, creating it when the file is missing or empty.
    /// Returns the handle and whether it was created.
    pub fn open_or_create(path: impl AsRef<Path>, run: NewRun) -> Result<(Self, bool)> {
        Self::open_or_create_with(path, run, LogOptions::default())
    }

    /// [`RunLog::open_or_create`] with options.
    pub fn open_or_create_with(
        path: impl AsRef<Path>,
        run: NewRun,
        options: LogOptions,
    ) -> Result<(Self, bool)> {
        let path = path.as_ref();
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            Ok((Self::open_with(path, options)?, false))
        } else {
            Ok((Self::create_with(path, run, options)?, true))
        }
    }

    /// The stored form of a batch's rows (and whether it is its step's last), in this file's
    /// format, for [`Progress::encoded_batch`]: callers encode on their own threads, so the
    /// single committer only writes.
    pub fn encode_rows(&self, rows: &[Row], last: bool, life: BatchLife) -> Result<EncodedRows> {
        let compression = Compression::of_format(self.version.load(Ordering::SeqCst));
        let what = "a batch";
        let bytes = encode(&(rows, last), what)?;
        let encoded_len = bytes.len();
        let stored = match life {
            BatchLife::Kept => compression.pack(bytes, what)?,
            BatchLife::Transient => compression.pack_transient(bytes),
        };
        Ok(EncodedRows {
            stored,
            encoded_len,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent view of everything committed so far.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let txn = self.db.begin_read().map_err(|e| {
            // After a failed commit redb refuses reads with "previous I/O error": the failure
            // that poisoned the log says what happened.
            match &self.lock().poisoned {
                Some(cause) => Error::Poisoned {
                    cause: cause.clone(),
                },
                None => map(&self.path, "begin read", e),
            }
        })?;
        Ok(Snapshot::new(txn, &self.path))
    }

    /// The run's metadata.
    pub fn meta(&self) -> Result<RunMeta> {
        self.snapshot()?.meta()
    }

    /// Commits one unit durably, in its own transaction.
    pub fn commit(&self, unit: Progress) -> Result<Receipt> {
        self.commit_group(vec![unit])
            .pop()
            .unwrap_or(Err(Error::CommitterStopped))
    }

    /// Commits several units in one durable transaction (group commit). A unit that fails its
    /// checks gets its error and is left out; the others are committed. A storage failure fails
    /// every unit and poisons the handle.
    pub fn commit_group(&self, units: Vec<Progress>) -> Vec<Result<Receipt>> {
        let mut state = self.lock();
        if let Some(cause) = &state.poisoned {
            let cause = cause.clone();
            return units
                .iter()
                .map(|_| {
                    Err(Error::Poisoned {
                        cause: cause.clone(),
                    })
                })
                .collect();
        }
        let mut tentative = state.clone();
        let result = self.write_group(&units, &mut tentative);
        match result {
            Ok(receipts) => {
                *state = tentative;
                receipts
            }
            Err(fatal) => {
                state.poisoned = Some(fatal.to_string());
                let mut out: Vec<Result<Receipt>> = units
                    .iter()
                    .skip(1)
                    .map(|_| Err(fatal.for_group()))
                    .collect();
                out.insert(0, Err(fatal));
                out
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn initialise(&self, run: NewRun) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let t = |e: redb::TableError| map(&self.path, "initialise", e);
            let version = FORMAT_VERSION.to_le_bytes();
            txn.open_table(META)
                .map_err(t)?
                .insert(KEY_FORMAT, version.as_slice())
                .map_err(|e| map(&self.path, "initialise", e))?;
            txn.open_table(BATCHES).map_err(t)?;
            for table in [STEPS, RECORDS] {
                txn.open_table(table).map_err(t)?;
            }
            for table in [CURSORS, OFFSETS] {
                txn.open_table(table).map_err(t)?;
            }
            txn.open_table(CACHE).map_err(t)?;
            txn.open_table(RECLAIMED).map_err(t)?;
            self.write_run_header(&txn, run, 0, FORMAT_VERSION)?;
        }
        txn.commit().map_err(|e| map(&self.path, "commit", e))?;
        let mut state = self.lock();
        state.next_log = 1;
        state.version = FORMAT_VERSION;
        Ok(())
    }

    /// Writes a run's metadata (of a file of format `version`), its initial state and the log
    /// entry `log_seq` announcing it.
    fn write_run_header(
        &self,
        txn: &WriteTransaction,
        run: NewRun,
        log_seq: u64,
        version: u32,
    ) -> Result<()> {
        let e = |e: redb::StorageError| map(&self.path, "write run header", e);
        let t = |e: redb::TableError| map(&self.path, "write run header", e);
        let now = now_ms();
        let meta = RunMeta {
            format_version: version,
            signature: run.signature.clone(),
            pipeline: run.pipeline,
            created_ms: now,
            created_by: run.created_by,
        };
        let state = RunState {
            updated_ms: now,
            ..RunState::default()
        };
        let mut table = txn.open_table(META).map_err(t)?;
        table
            .insert(KEY_META, encode(&meta, "run metadata")?.as_slice())
            .map_err(e)?;
        table
            .insert(KEY_STATE, encode(&state, "run state")?.as_slice())
            .map_err(e)?;
        let entry = LogEntry {
            seq: log_seq,
            at_ms: now,
            event: Event::Created {
                signature: run.signature,
            },
        };
        txn.open_table(LOG)
            .map_err(t)?
            .insert(log_seq, encode(&entry, "log entry")?.as_slice())
            .map_err(e)?;
        Ok(())
    }

    fn begin_write(&self) -> Result<WriteTransaction> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| map(&self.path, "begin write", e))?;
        if !self.durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| Error::Database {
                    path: self.path.clone(),
                    context: "set durability",
                    detail: e.to_string(),
                })?;
        }
        Ok(txn)
    }

    /// Writes every valid unit in one transaction. `Err` only for storage failures.
    fn write_group(
        &self,
        units: &[Progress],
        state: &mut WriterState,
    ) -> Result<Vec<Result<Receipt>>> {
        let txn = self.begin_write()?;
        let now = now_ms();
        let mut receipts = Vec::with_capacity(units.len());
        {
            let mut w = Writer::open(&txn, &self.path, state.version)?;
            for unit in units {
                match check(unit, state) {
                    Ok(()) => receipts.push(Ok(w.apply(unit, state, now)?)),
                    Err(invalid) => receipts.push(Err(invalid)),
                }
            }
        }
        txn.commit().map_err(|e| map(&self.path, "commit", e))?;
        Ok(receipts)
    }
}

/// Checks a unit's batches against the committed ones, without writing.
fn check(unit: &Progress, state: &WriterState) -> Result<()> {
    let mut next: HashMap<&str, (u64, bool)> = HashMap::new();
    for batch in &unit.batches {
        let (seq, done) = next
            .get(batch.step())
            .copied()
            .or_else(|| state.steps.get(batch.step()).copied())
            .unwrap_or((0, false));
        if done {
            return Err(Error::StepAlreadyDone {
                step: batch.step().to_owned(),
                seq: batch.seq(),
            });
        }
        if batch.seq() != seq {
            return Err(Error::BatchOutOfOrder {
                step: batch.step().to_owned(),
                expected: seq,
                got: batch.seq(),
            });
        }
        next.insert(batch.step(), (seq + 1, batch.last()));
    }
    Ok(())
}

fn write_err(path: &Path) -> impl Fn(redb::StorageError) -> Error + '_ {
    move |e| map(path, "write", e)
}

/// A batch's rows as [`RunLog::encode_rows`] gives them.
#[derive(Debug)]
pub struct EncodedRows {
    /// The stored form, for [`Progress::encoded_batch`].
    pub stored: Vec<u8>,
    /// Bytes of the rows encoded, before compression: a measure of the batch's size.
    pub encoded_len: usize,
}

/// The tables of one write transaction.
struct Writer<'t> {
    path: &'t Path,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    batches: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    steps: redb::Table<'t, &'static str, &'static [u8]>,
    cursors: redb::Table<'t, &'static str, u64>,
    log: redb::Table<'t, u64, &'static [u8]>,
    cache: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
    offsets: redb::Table<'t, &'static str, u64>,
    records: redb::Table<'t, &'static str, &'static [u8]>,
    /// Absent in files of a format before 3, which never reclaim.
    reclaimed: Option<redb::Table<'t, &'static str, (u64, u64)>>,
    compression: Compression,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction, path: &'t Path, version: u32) -> Result<Self> {
        let e = |e| map(path, "open table", e);
        Ok(Self {
            path,
            compression: Compression::of_format(version),
            reclaimed: if version >= FIRST_COMPRESSED {
                Some(txn.open_table(RECLAIMED).map_err(e)?)
            } else {
                None
            },
            meta: txn.open_table(META).map_err(e)?,
            batches: txn.open_table(BATCHES).map_err(e)?,
            steps: txn.open_table(STEPS).map_err(e)?,
            cursors: txn.open_table(CURSORS).map_err(e)?,
            log: txn.open_table(LOG).map_err(e)?,
            cache: txn.open_table(CACHE).map_err(e)?,
            offsets: txn.open_table(OFFSETS).map_err(e)?,
            records: txn.open_table(RECORDS).map_err(e)?,
        })
    }

    fn append_log(&mut self, state: &mut WriterState, now: u64, event: Event) -> Result<()> {
        let entry = LogEntry {
            seq: state.next_log,
            at_ms: now,
            event,
        };
        self.log
            .insert(state.next_log, encode(&entry, "log entry")?.as_slice())
            .map_err(write_err(self.path))?;
        state.next_log += 1;
        Ok(())
    }

    fn step_record(&self, step: &str) -> Result<StepRecord> {
        let raw = self.steps.get(step).map_err(write_err(self.path))?;
        match raw {
            Some(v) => decode(v.value(), &format!("state of step '{step}'")),
            None => Ok(StepRecord::default()),
        }
    }

    fn put_step(&mut self, step: &str, record: &StepRecord) -> Result<()> {
        let bytes = encode(record, &format!("state of step '{step}'"))?;
        self.steps
            .insert(step, bytes.as_slice())
            .map_err(write_err(self.path))?;
        Ok(())
    }

    /// Deletes a step's batches its consumers are all past (see [`Progress::reclaim`]);
    /// anything short of that deletes nothing.
    fn reclaim(&mut self, reclaim: &Reclaim, state: &WriterState) -> Result<()> {
        let err = write_err(self.path);
        let Some(table) = self.reclaimed.as_mut() else {
            return Ok(());
        };
        let step = reclaim.step.as_str();
        let (from, _) = table.get(step).map_err(&err)?.map_or((0, 0), |v| v.value());
        let committed = state.steps.get(step).map_or(0, |s| s.0);
        if reclaim.batches <= from || reclaim.batches > committed || reclaim.consumers.is_empty() {
            return Ok(());
        }
        for consumer in &reclaim.consumers {
            let at = self.cursors.get(consumer.as_str()).map_err(&err)?;
            if at.is_none_or(|v| v.value() < reclaim.rows) {
                return Ok(());
            }
        }
        for seq in from..reclaim.batches {
            self.batches.remove((step, seq)).map_err(&err)?;
        }
        table
            .insert(step, (reclaim.batches, reclaim.rows))
            .map_err(&err)?;
        Ok(())
    }

    fn apply(&mut self, unit: &Progress, state: &mut WriterState, now: u64) -> Result<Receipt> {
        let first = state.next_log;
        if let Some(run) = &unit.run {
            let run = RunState {
                updated_ms: now,
                ..run.clone()
            };
            self.meta
                .insert(KEY_STATE, encode(&run, "run state")?.as_slice())
                .map_err(write_err(self.path))?;
            let event = Event::Run {
                status: run.status,
                stage: run.stage,
            };
            self.append_log(state, now, event)?;
        }
        for (step, new_state, error) in &unit.states {
            let mut record = self.step_record(step)?;
            // A step unloaded after it finished or failed keeps that outcome as its state (the
            // log still records the unload).
            let outcome = matches!(record.state, StepState::Finished | StepState::Failed);
            if !(outcome && *new_state == StepState::Unloaded) {
                record.state = *new_state;
            }
            if error.is_some() {
                record.error = error.clone();
            } else if matches!(new_state, StepState::Loading | StepState::Running) {
                // The step runs again (a fixed pipeline resumed): its old error is history.
                record.error = None;
            }
            record.updated_ms = now;
            self.put_step(step, &record)?;
            let event = Event::Step {
                step: step.clone(),
                state: *new_state,
                error: error.clone(),
            };
            self.append_log(state, now, event)?;
        }
        for (step, name, delta) in &unit.counters {
            let mut record = self.step_record(step)?;
            *record.counters.entry(name.clone()).or_default() += delta;
            record.updated_ms = now;
            self.put_step(step, &record)?;
        }
        for batch in &unit.batches {
            let (step, seq, last) = (batch.step(), batch.seq(), batch.last());
            let encoded;
            let body = match batch {
                PendingBatch::Rows(b) => {
                    let what = format!("batch {seq} of step '{step}'");
                    encoded = self
                        .compression
                        .pack(encode(&(&b.rows, b.last), &what)?, &what)?;
                    encoded.as_slice()
                }
                PendingBatch::Encoded(b) => b.payload.as_slice(),
            };
            self.batches
                .insert((step, seq), body)
                .map_err(write_err(self.path))?;
            let mut record = self.step_record(step)?;
            record.batches = seq + 1;
            record.rows += batch.rows();
            record.done = last;
            record.updated_ms = now;
            self.put_step(step, &record)?;
            state.steps.insert(step.to_owned(), (seq + 1, last));
            let event = Event::Batch {
                step: step.to_owned(),
                seq,
                rows: batch.rows(),
                last,
            };
            self.append_log(state, now, event)?;
        }
        for (name, position) in &unit.cursors {
            self.cursors
                .insert(name.as_str(), *position)
                .map_err(write_err(self.path))?;
        }
        for (key, response) in &unit.cache {
            let stored = match self.compression {
                Compression::None => std::borrow::Cow::Borrowed(response.as_slice()),
                c => std::borrow::Cow::Owned(c.pack(response.clone(), "a cached answer")?),
            };
            self.cache
                .insert(key, stored.as_ref())
                .map_err(write_err(self.path))?;
        }
        for (key, value) in &unit.records {
            match value {
                Some(bytes) => self.records.insert(key.as_str(), bytes.as_slice()),
                None => self.records.remove(key.as_str()),
            }
            .map_err(write_err(self.path))?;
        }
        for (consumer, offset) in &unit.offsets {
            self.offsets
                .insert(consumer.as_str(), *offset)
                .map_err(write_err(self.path))?;
            let event = Event::Offset {
                consumer: consumer.clone(),
                offset: *offset,
            };
            self.append_log(state, now, event)?;
        }
        for reclaim in &unit.reclaims {
            self.reclaim(reclaim, state)?;
        }
        Ok(Receipt {
            log: first..state.next_log,
        })
    }
}
