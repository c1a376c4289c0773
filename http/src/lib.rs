//! The HTTP layer every distill client shares (the LLM client, the Hub client).
//!
//! One [`RetryPolicy`] (exponential backoff with jitter, `Retry-After` honoured, a cap on the
//! delay, an interruptible wait), one classification of failures ([`FailureKind`]: transient,
//! auth, refused, protocol), and answers read with a size cap so a runaway server cannot fill
//! memory. Messages name the call and the status; they never hold a header, so keys and tokens
//! stay out of them.
//!
//! ```no_run
//! use distill_http::{Http, RetryPolicy};
//! let http = Http::new(RetryPolicy::default())?;
//! let reply = http.send("GET /models", &[], || http.client().get("http://127.0.0.1:8080/v1/models"))?;
//! assert!(reply.status < 300);
//! # Ok::<(), distill_http::Error>(())
//! ```
#![deny(missing_docs)]

mod client;
mod error;
mod retry;

pub use client::{DEFAULT_MAX_BODY, Http, Reply, transient};
pub use error::{Error, FailureKind, Result};
pub use retry::{MAX_RETRY_AFTER, RetryPolicy, Stop};

/// The HTTP client library underneath, for building requests.
pub use reqwest;
