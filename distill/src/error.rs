//! The one error type of the `distill` crate: any of its parts' errors, classified.

use distill_engine::ErrorKind;

/// An error of any part of distill.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Defining or running a pipeline failed.
    #[error(transparent)]
    Engine(#[from] distill_engine::Error),
    /// Exporting the distiset failed.
    #[error(transparent)]
    Distiset(#[from] distill_distiset::Error),
    /// Pushing to the Hub failed.
    #[error(transparent)]
    Hub(#[from] distill_hub::Error),
    /// The run log failed.
    #[error(transparent)]
    Storage(#[from] distill_storage::Error),
    /// An LLM task's provider (batch jobs) failed.
    #[error(transparent)]
    Llm(#[from] distill_llm::Error),
    /// Taking, uploading or restoring a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] distill_checkpoint::Error),
}

impl Error {
    /// The error's kind (what the CLI's exit code says).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Engine(e) => e.kind(),
            Error::Distiset(e) => e.kind(),
            Error::Hub(e) => e.kind(),
            Error::Storage(_) => ErrorKind::Storage,
            Error::Llm(e) => match e {
                distill_llm::Error::Cache(_) => ErrorKind::Storage,
                e => e.kind(),
            },
            Error::Checkpoint(e) => e.kind(),
        }
    }
}

/// Result with the `distill` [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
