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
        let response = self.send_once(call, request)?;
        let reply = self.read(call, response)?;
        observe(&reply);
        if accepted(reply.status, also_ok) {
            return Ok(reply);
        }
        Err(classify(call, reply))
    }

    /// One attempt whose answer, when its status is 2xx (or in `also_ok`), is returned unread,
    /// for a body read as a stream (a file download); any other status is read (with the cap)
    /// and classified as [`Http::once`] does. Reads of the body wait at most the policy's
    /// timeout each.
    pub fn open(
        &self,
        call: &str,
        also_ok: &[u16],
        request: RequestBuilder,
    ) -> Result<reqwest::blocking::Response> {
        let response = self.send_once(call, request)?;
        if accepted(response.status().as_u16(), also_ok) {
            return Ok(response);
        }
        Err(classify(call, self.read(call, response)?))
    }

    /// Sends `request`: a failure to get an answer is transient (a timeout typed as one).
    fn send_once(
        &self,
        call: &str,
        request: RequestBuilder,
    ) -> Result<reqwest::blocking::Response> {
        let timeout = request
            .try_clone()
            .and_then(|r| r.build().ok())
            .and_then(|r| r.timeout().copied())
            .unwrap_or(self.policy.timeout);
        request.send().map_err(|e| {
            if e.is_timeout() {
                Error::Timeout {
                    call: call.to_owned(),
                    after: timeout,
                    note: String::new(),
                }
            } else {
                transient(call, plain(e))
            }
        })
    }

    /// The whole answer (the body with the cap).
    fn read(&self, call: &str, response: reqwest::blocking::Response) -> Result<Reply> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = self.read_capped(call, status, response)?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// The body of `response`, refused when larger than the cap.
    fn read_capped(
        &self,
        call: &str,
        status: u16,
        response: reqwest::blocking::Response,
    ) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        response
            .take(self.max_body as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| transient(call, format!("connection dropped while reading: {e}")))?;
        if body.len() > self.max_body {
            return Err(Error::protocol(
                call,
                format!(
                    "the answer is larger than the {} bytes allowed (HTTP {status})",
                    self.max_body
                ),
            ));
        }
        Ok(body)
    }
}

/// A transient failure of `call` with no HTTP status (connection, timeout, dropped body).
pub fn transient(call: &str, detail: String) -> Error {
    Error::Transient {
        call: call.to_owned(),
        detail,
        retry_after: None,
        status: None,
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

/// Whether `status` is a success for a call that also accepts `also_ok`.
fn accepted(status: u16, also_ok: &[u16]) -> bool {
    (200..300).contains(&status) || also_ok.contains(&status)
}

/// The error of an answer that is not a success: 429 and 5xx transient, 401 and 403 auth,
/// any other status refused.
fn classify(call: &str, reply: Reply) -> Error {
    let code = reply
        .header("x-error-code")
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let status = reply.status;
    let detail = format!("{}{code}", snippet(&reply.body));
    match status {
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
    }
}
