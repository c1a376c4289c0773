//! The one error type of the LLM crate.

use distill_engine::ErrorKind;

/// What can go wrong with an LLM task. Messages name the endpoint, the parameter or the row,
/// never the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A task parameter is wrong.
    #[error("{detail}")]
    Params {
        /// What is wrong, naming the parameter.
        detail: String,
    },
    /// The environment variable that should hold the API key is not set.
    #[error("the API key variable `{var}` is not set in the environment")]
    ApiKeyMissing {
        /// The variable's name.
        var: String,
    },
    /// An endpoint failed its check at load (unreachable, key refused, wrong path).
    #[error("endpoint {endpoint} {detail}")]
    Endpoint {
        /// The base URL.
        endpoint: String,
        /// What happened.
        detail: String,
    },
    /// A request failed for good (after the retries allowed).
    #[error(transparent)]
    Request(#[from] distill_http::Error),
    /// The endpoint answered, but the answer cannot be used (no choices, an error object, no
    /// text); it is not cached, so a later run asks again.
    #[error("unusable answer from {call}: {detail}")]
    Answer {
        /// The call.
        call: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A row cannot be turned into a request.
    #[error("row {row}: {detail}")]
    Row {
        /// Index of the row in its batch.
        row: usize,
        /// What is wrong.
        detail: String,
    },
    /// The request cache could not be read or written: the task stops rather than pay again.
    #[error("the request cache: {0}")]
    Cache(#[from] distill_storage::Error),
    /// A record of the request cache is not an answer at all (not JSON): the run database is
    /// damaged; the task stops rather than pay for the answer again.
    #[error("the request cache holds a damaged answer under key {key}: {detail}")]
    DamagedCache {
        /// The record's key, in hex.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// No request fits in what is left of the pipeline's budget (or reserving failed).
    #[error(transparent)]
    Budget(distill_engine::Error),
    /// A request was made before `load`.
    #[error("the task is not loaded")]
    NotLoaded,
    /// Batch mode: a job could not be submitted or collected (the provider refused it, its
    /// results do not follow the protocol, or the run database holds a damaged job record).
    #[error("batch mode: {detail}")]
    Batch {
        /// What happened.
        detail: String,
    },
    /// Batch mode: a job failed this request for good (`on_batch_failure: mark`, or
    /// resubmitted too often).
    #[error("the batch job failed this request: {detail}")]
    BatchRequest {
        /// Why, as the provider said.
        detail: String,
    },
}

impl Error {
    /// The error's kind, in the engine's classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Params { .. } | Error::ApiKeyMissing { .. } => ErrorKind::Invalid,
            Error::Cache(_) | Error::DamagedCache { .. } => ErrorKind::Storage,
            Error::NotLoaded => ErrorKind::Bug,
            Error::Endpoint { .. }
            | Error::Request(_)
            | Error::Answer { .. }
            | Error::Batch { .. }
            | Error::BatchRequest { .. } => ErrorKind::Remote,
            Error::Row { .. } => ErrorKind::StepFailed,
            Error::Budget(e) => e.kind(),
        }
    }

    /// This error as a step's error: classified when it is not the step's failure (a bug, a
    /// failing request cache), so the run ends with the right exit code.
    pub fn into_step_error(self) -> distill_engine::step::StepError {
        match self.kind() {
            kind @ (ErrorKind::Bug | ErrorKind::Budget | ErrorKind::Storage) => {
                distill_engine::classified(kind, self)
            }
            _ => Box::new(self),
        }
    }

    /// A parameter error.
    pub(crate) fn params(detail: impl Into<String>) -> Self {
        Error::Params {
            detail: detail.into(),
        }
    }
}

/// Result with the LLM [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
