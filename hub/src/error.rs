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
    /// Loading a dataset from the Hub failed: a call was refused, or failed after the retries
    /// allowed.
    #[error("load_hub {repo} ({scope}): {source}{}", load_advice(source, repo))]
    Load {
        /// The repository.
        repo: String,
        /// What was being read: the config, split and revision, or the file.
        scope: String,
        /// The call's failure.
        source: distill_http::Error,
    },
    /// The repository has no data files for the config and split asked for.
    #[error("load_hub {repo}: {detail}")]
    Layout {
        /// The repository.
        repo: String,
        /// What is missing, with what there is.
        detail: String,
    },
    /// A downloaded file is not the one the Hub lists (its size or its sha256 differ).
    #[error("load_hub {repo}: {path}: {detail}")]
    Download {
        /// The repository.
        repo: String,
        /// The file in the repository.
        path: String,
        /// What differs.
        detail: String,
    },
    /// The download cache (`DISTILL_CACHE`) could not be written or read.
    #[error("load_hub cache {path}: {source}")]
    Cache {
        /// The cache file or directory.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A downloaded data file could not be read.
    #[error("load_hub {repo}: {path}: {source}")]
    DataFile {
        /// The repository.
        repo: String,
        /// The file in the repository.
        path: String,
        /// The reader's error (naming the local copy, the line or the column).
        source: distill_engine::step::StepError,
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
            Error::Hub { .. }
            | Error::PushedByTheRun { .. }
            | Error::Load { .. }
            | Error::Download { .. } => ErrorKind::Remote,
            Error::Layout { .. } => ErrorKind::Invalid,
            Error::Cache { .. } | Error::DataFile { .. } => ErrorKind::Io,
            Error::BadRecord { .. } | Error::Storage(_) => ErrorKind::Storage,
            Error::Shard { .. } | Error::Thread { .. } => ErrorKind::Io,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Pipeline(e) => e.kind(),
        }
    }
}

/// What to do about a failed read of `repo`, by its status.
fn load_advice(source: &distill_http::Error, repo: &str) -> String {
    match source.status() {
        Some(401) => format!(
            "; the Hub wants a valid token for {repo} (a private repository, or one that does not exist): set HF_TOKEN to a token that can read it"
        ),
        Some(403) => format!(
            "; HF_TOKEN may not read {repo} (a gated dataset whose terms are not accepted, or a token without access to it)"
        ),
        Some(404) => "; no such dataset repository, revision or file: check `repo`, `revision` and HF_ENDPOINT".to_owned(),
        _ => String::new(),
    }
}

/// Result with the Hub [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
