//! The one error type of the checkpoint crate.

use distill_engine::ErrorKind;
use std::path::PathBuf;

/// What can go wrong taking, uploading or restoring a snapshot. Messages name the target and
/// the snapshot; never a credential (object store messages are scrubbed of URL queries and of
/// the values of the credential variables, see [`crate::secrets`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The checkpoint URL cannot be used.
    #[error("checkpoint target '{url}': {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The object store failed or refused a call (after its own retries).
    #[error("checkpoint {url}: {action}: {detail}")]
    Store {
        /// The target.
        url: String,
        /// What was being done (`upload data/NAME.redb.zst`).
        action: String,
        /// The store's message, scrubbed.
        detail: String,
        /// Whether trying again later may help (not a refusal: auth, a missing bucket).
        transient: bool,
    },
    /// A Hub call failed (after the retries allowed).
    #[error("checkpoint {url}: {source}")]
    Hub {
        /// The target.
        url: String,
        /// The Hub's failure.
        source: Box<distill_hub::Error>,
    },
    /// A Hub read failed (after the retries allowed).
    #[error("checkpoint {url}: {source}")]
    HubRead {
        /// The target.
        url: String,
        /// The call's failure.
        source: Box<distill_http::Error>,
    },
    /// The run database failed.
    #[error(transparent)]
    Storage(#[from] distill_storage::Error),
    /// A local file (the copy, the compressed snapshot, the restored database) could not be
    /// written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// There is no snapshot of this run at the target.
    #[error(
        "no snapshot of this run at {url} (looked under '{prefix}'){hint}; run without --resume-from to start it, or check the URL"
    )]
    NoSnapshot {
        /// The target.
        url: String,
        /// Where in it the run's snapshots would be.
        prefix: String,
        /// What else was seen, if anything helps.
        hint: String,
    },
    /// Snapshots are there, but none verifies.
    #[error("no usable snapshot at {url}: {detail}")]
    BadSnapshot {
        /// The target.
        url: String,
        /// Each snapshot tried and why it was refused.
        detail: String,
    },
    /// The newest snapshot was written by a newer distill; older snapshots are not tried, so
    /// that progress is not silently lost.
    #[error(
        "snapshot {name} at {url} has {what} {found}, this distill reads up to {supported}; upgrade distill to resume from it"
    )]
    NewerSnapshot {
        /// The target.
        url: String,
        /// The snapshot.
        name: String,
        /// Which version: the snapshot format or the run database format.
        what: &'static str,
        /// Version found.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The pipeline stored in the run database cannot be read.
    #[error("{0}")]
    Pipeline(#[from] distill_engine::Error),
    /// A thread or the I/O runtime could not be started.
    #[error("cannot start the checkpoint {what}: {detail}")]
    Start {
        /// The thread or the runtime.
        what: &'static str,
        /// The system's message.
        detail: String,
    },
    /// The process is being stopped.
    #[error("the checkpoint was stopped")]
    Interrupted,
}

impl Error {
    /// Whether trying again later may help (a store or Hub that is down or slow).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store { transient, .. } => *transient,
            Error::Hub { source, .. } => source.is_transient(),
            Error::HubRead { source, .. } => source.is_transient(),
            Error::Io { .. } => true,
            _ => false,
        }
    }

    /// The error's kind, in the engine's classification (the CLI's exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadUrl { .. } => ErrorKind::Invalid,
            Error::Store { .. } | Error::Hub { .. } | Error::HubRead { .. } => ErrorKind::Remote,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Io { .. } | Error::Start { .. } => ErrorKind::Io,
            Error::NoSnapshot { .. } => ErrorKind::NoSnapshot,
            Error::BadSnapshot { .. } | Error::NewerSnapshot { .. } => ErrorKind::BadSnapshot,
            Error::Pipeline(e) => e.kind(),
            Error::Interrupted => ErrorKind::Interrupted,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Result with the checkpoint [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
