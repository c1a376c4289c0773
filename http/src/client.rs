//! An HTTP client whose calls are retried by the policy, classified, and read with a size cap.

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use std::io::Read;
use std::time::Duration;

/// Largest answer body read by default (64 MiB); a larger one is a protocol error.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// Characters of an error body kept in a message.
const SNIPPET_CHARS: usize = 200;

/// An answer read whole: status, headers and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON; a body that is not JSON is a protocol error about `call`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, call: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::protocol(
                call,
                format!(
                    "the answer is not the JSON expected ({e}): {}",
                    snippet(&self.body)
                ),
            )
        })
    }
}

/// A blocking HTTP client with a retry policy and a cap on answer sizes.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
    policy: RetryPolicy,
    max_body: usize,
}

impl Http {
    /// A client whose attempts each get `policy.timeout`.
    pub fn new(policy: RetryPolicy) -> Result<Self> {
        Self::with_idle_connections(policy, usize::MAX)
    }

    /// A client keeping at most `idle` idle connections per host.
    pub fn with_idle_connections(policy: RetryPolicy, idle: usize) -> Result<Self> {
        let client = Client::builder()
            .timeout(policy.timeout)
            .pool_max_idle_per_host(idle)
            .build()
            .map_err(|e| Error::Setup { detail: plain(e) })?;
        Ok(Self {
            client,
            policy,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Refuses answer bodies larger than `bytes`.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The underlying client, to build requests.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Sends a request built by `request` (once per attempt), retrying transient failures.
    /// `also_ok` lists statuses accepted besides 2xx.
    pub fn send(
        &self,
        call: &str,
        also_ok: &[u16],
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Reply> {
        self.send_counting(call, also_ok, request, |_, _| {})
    }

    /// [`Http::send`], telling `on_retry` of each retry and its wait.
    pub fn send_counting(
        &self,
        call: &str,
        also_ok: &[u16],
        request: impl Fn() -> RequestBuilder,
        on_retry: impl FnMut(&Error, Duration),
    ) -> Result<Reply> {
        self.policy
            .run(call, || self.once(call, also_ok, request()), on_retry)
    }

    /// One attempt, classified: connection failures, timeouts, 429 and 5xx are transient,
    /// 401 and 403 auth, other statuses refused, an oversized answer a protocol error.
    pub fn once(&self, call: &str, also_ok: &[u16], request: RequestBuilder) -> Result<Reply> {
        self.once_observed(call, also_ok, request, |_| {})
    }

    /// [`Http::once`], showing `observe` every answer read whole, whatever its status, before
    /// it is classified (rate-limit headers come with 200s and 429s alike).
    pub fn once_observed(
        &self,
        call: &str,
        also_ok: &[u16],
        request: RequestBuilder,
        observe: impl FnOnce(&Reply),
    ) -> Result<Reply> {
        let transient = |detail: String, retry_after| Error::Transient {
            call: call.to_owned(),
            detail,
            retry_after,
            status: None,
        };
        let timeout = request
            .try_clone()
            .and_then(|r| r.build().ok())
            .and_then(|r| r.timeout().copied())
            .unwrap_or(self.policy.timeout);
        let response = request.send().map_err(|e| {
            if e.is_timeout() {
                Error::Timeout {
                    call: call.to_owned(),
                    after: timeout,
                    note: String::new(),
                }
            } else {
                transient(plain(e), None)
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        response
            .take(self.max_body as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| transient(format!("connection dropped while reading: {e}"), None))?;
        if body.len() > self.max_body {
            return Err(Error::protocol(
                call,
                format!(
                    "the answer is larger than the {} bytes allowed (HTTP {status})",
                    self.max_body
                ),
            ));
        }
        let reply = Reply {
            status,
            headers,
            body,
        };
        observe(&reply);
        if (200..300).contains(&status) || also_ok.contains(&status) {
            return Ok(reply);
        }
        let code = reply
            .header("x-error-code")
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let detail = format!("{}{code}", snippet(&reply.body));
        Err(match status {
            429 | 500..=599 => Error::Transient {
                call: call.to_owned(),
                detail: format!("HTTP {status}{code}: {}", snippet(&reply.body)),
                retry_after: retry_after(&reply.headers),
                status: Some(status),
            },
            401 | 403 => Error::Auth {
                call: call.to_owned(),
                status,
                detail,
            },
            _ => Error::Refused {
                call: call.to_owned(),
                status,
                detail,
            },
        })
    }
}

/// A reqwest error with its causes (never a header: keys and tokens stay out of it).
fn plain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// The `Retry-After` of a response, when given in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The first characters of a body, for messages.
fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(SNIPPET_CHARS)
        .collect()
}
