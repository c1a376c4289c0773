//! The one error type of the Hub crate.

use distill_engine::ErrorKind;

/// What can go wrong pushing to the Hub. Messages name the repository and the call, never the
/// token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Hub call failed (after the retries allowed), or its answer cannot be used.
    #[error("push to {repo}: {source}")]
    Hub {
        /// The repository.
        repo: String,
        /// The call's failure.
        source: distill_http::Error,
    },
    /// `distill push` was pointed at the repository a live run pushes to itself.
    #[error(
        "push to {repo}: the live run pushes to this repository itself (its pipeline's push section); `distill status` shows how far it is"
    )]
    PushedByTheRun {
        /// The repository.
        repo: String,
    },
    /// A record of the pusher in the run database cannot be read.
    #[error("the push record '{key}' in the run database is damaged: {detail}")]
    BadRecord {
        /// The record's key.
        key: String,
        /// The decoder's message.
        detail: String,
    },
    /// A shard could not be written.
    #[error("writing a Parquet shard of {leaf}: {source}")]
    Shard {
        /// The leaf.
        leaf: String,
        /// What failed.
        source: distill_distiset::Error,
    },
    /// The push thread could not be started.
    #[error("cannot start the push thread: {detail}")]
    Thread {
        /// The system's message.
        detail: String,
    },
    /// Following a live run was stopped on request.
    #[error("push stopped on request; run it again to go on")]
    Interrupted,
    /// The pipeline stored in the run database cannot be read.
    #[error(transparent)]
    Pipeline(#[from] distill_engine::Error),
    /// The run log failed.
    #[error(transparent)]
    Storage(#[from] distill_storage::Error),
}

impl Error {
    /// Whether trying again later may help (a Hub that is down or slow, not a bad token).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Hub { source, .. } if source.is_transient())
    }

    /// The error's kind, in the engine's classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Hub { .. } | Error::PushedByTheRun { .. } => ErrorKind::Remote,
            Error::BadRecord { .. } | Error::Storage(_) => ErrorKind::Storage,
            Error::Shard { .. } | Error::Thread { .. } => ErrorKind::Io,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Pipeline(e) => e.kind(),
        }
    }
}

/// Result with the Hub [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
