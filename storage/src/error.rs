//! The one error type of the storage crate.

use std::path::PathBuf;

/// Everything that can go wrong with a run database. Messages name the file, step or batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or handle) has the run database open for writing.
    #[error("run database {path} is in use by another writer (is a run still going on?)")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not a run database (not redb, or redb without distill's tables).
    #[error("{path} is not a distill run database: {reason}")]
    NotARunDatabase {
        /// The file.
        path: PathBuf,
        /// Why it was not recognised.
        reason: String,
    },
    /// The file was written by a newer distill.
    #[error(
        "run database {path} has format version {found}, this distill reads up to {supported}; upgrade distill"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The file is damaged (truncated, overwritten...).
    #[error(
        "run database {path} is damaged: {detail}; it cannot be read: restore a copy, or start anew with another --db"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb or the decoder reported.
        detail: String,
    },
    /// The last writer died; the file must be recovered by a writer before it can be read.
    #[error(
        "run database {path} was not closed cleanly and must be recovered by a writer (resume the run, or stop the live writer)"
    )]
    NeedsRecovery {
        /// The file.
        path: PathBuf,
    },
    /// `create` was asked for a file that already holds a run.
    #[error("{path} already holds a run database")]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// `open` was asked for a file that does not exist.
    #[error("run database {path} does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The disk is full; nothing past the last commit was written.
    #[error("disk full while writing {path}; everything committed before is kept")]
    DiskFull {
        /// The file.
        path: PathBuf,
    },
    /// An I/O error from the file system.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Any other error reported by redb.
    #[error("run database {path}: {context}: {detail}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// redb's message.
        detail: String,
    },
    /// A stored record could not be encoded or decoded.
    #[error("cannot {action} {what}: {detail}")]
    Codec {
        /// "encode" or "decode".
        action: &'static str,
        /// The record.
        what: String,
        /// The codec's message.
        detail: String,
    },
    /// A batch does not follow the step's committed batches.
    #[error("step '{step}': batch {got} cannot be committed, the next batch must be {expected}")]
    BatchOutOfOrder {
        /// The step.
        step: String,
        /// The sequence number expected next.
        expected: u64,
        /// The sequence number given.
        got: u64,
    },
    /// A batch was given for a step whose last batch is already committed.
    #[error("step '{step}': batch {seq} comes after the step's last batch")]
    StepAlreadyDone {
        /// The step.
        step: String,
        /// The sequence number given.
        seq: u64,
    },
    /// An earlier commit failed; no more writes are accepted through this handle.
    #[error(
        "run log is poisoned by an earlier failed commit ({cause}); reopen to resume from the last commit"
    )]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// The group committer has stopped.
    #[error("the committer has stopped")]
    CommitterStopped,
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
