//! The one error type of the HTTP layer, and how failures are classified.

use std::time::Duration;

/// What kind of failure an [`Error`] is: it decides whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// May succeed later: a connection refused or dropped, a timeout, HTTP 429 or 5xx.
    Transient,
    /// The credentials were refused (HTTP 401 or 403): a new key or token is needed.
    Auth,
    /// The server refused the request (another 4xx): the request itself must change.
    Refused,
    /// The answer does not follow the protocol (not JSON, missing fields, too large).
    Protocol,
    /// The caller asked to stop while the call waited.
    Interrupted,
}

/// A failed HTTP call. The message names the call and the status, never a header.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure that may go away: connection, timeout, 429 or 5xx (after the retries allowed).
    #[error("{call}: {detail}")]
    Transient {
        /// The call (`POST http://host/v1/chat/completions`).
        call: String,
        /// What happened last.
        detail: String,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
        /// The HTTP status (429, 5xx), or none when no answer came.
        status: Option<u16>,
    },
    /// No answer came within the time allowed (transient: may succeed later).
    #[error("{call}: timed out after {after:?}{note}")]
    Timeout {
        /// The call.
        call: String,
        /// The time allowed.
        after: Duration,
        /// Advice or context appended to the message.
        note: String,
    },
    /// HTTP 401 or 403.
    #[error("{call}: HTTP {status}: {detail}")]
    Auth {
        /// The call.
        call: String,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// Another HTTP 4xx (or a status the caller does not accept).
    #[error("{call}: HTTP {status}: {detail}")]
    Refused {
        /// The call.
        call: String,
        /// The status.
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// The answer cannot be used: not JSON, a missing field, too large.
    #[error("{call}: {detail}")]
    Protocol {
        /// The call.
        call: String,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The wait before a retry was cut short because the caller is stopping.
    #[error("{call}: stopped while waiting to retry")]
    Interrupted {
        /// The call.
        call: String,
    },
    /// The HTTP client could not be built (TLS setup, for instance).
    #[error("cannot build the HTTP client: {detail}")]
    Setup {
        /// The library's message.
        detail: String,
    },
}

impl Error {
    /// The failure's kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            Error::Transient { .. } | Error::Timeout { .. } => FailureKind::Transient,
            Error::Auth { .. } => FailureKind::Auth,
            Error::Refused { .. } | Error::Setup { .. } => FailureKind::Refused,
            Error::Protocol { .. } => FailureKind::Protocol,
            Error::Interrupted { .. } => FailureKind::Interrupted,
        }
    }

    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        self.kind() == FailureKind::Transient
    }

    /// Whether no answer came within the time allowed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Auth { status, .. } | Error::Refused { status, .. } => Some(*status),
            Error::Transient { status, .. } => *status,
            _ => None,
        }
    }

    /// The server's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A protocol error about `call`.
    pub fn protocol(call: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Protocol {
            call: call.into(),
            detail: detail.into(),
        }
    }

    /// The same error with `note` appended to its message (advice for the user).
    pub fn with_note(mut self, note: &str) -> Self {
        match &mut self {
            Error::Transient { detail, .. }
            | Error::Auth { detail, .. }
            | Error::Refused { detail, .. }
            | Error::Protocol { detail, .. }
            | Error::Timeout { note: detail, .. } => {
                detail.push_str(note);
            }
            Error::Interrupted { .. } | Error::Setup { .. } => {}
        }
        self
    }
}

/// Result with the HTTP [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
