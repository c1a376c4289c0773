//! An OpenAI-compatible chat-completions client: several endpoints with a concurrency limit
//! each, retries with exponential backoff and jitter that honour `Retry-After`, timeouts.

use super::limiter::EndpointPool;
use std::time::Duration;

/// When and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Longest delay between attempts (a longer `Retry-After` is honoured up to this).
    pub max_delay: Duration,
    /// Time allowed for one request.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retries + 1`: `Retry-After` when given, else exponential
    /// with full jitter between half and all of it; never more than `max_delay`.
    pub fn delay(&self, retries: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retries.min(16))
            .min(self.max_delay);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response body, as received.
    pub body: Vec<u8>,
    /// Retries it took.
    pub retries: u32,
}

/// Why a request failed for good. Messages never contain the API key.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What happened last, with the endpoint and the status.
    pub message: String,
    /// Retries made.
    pub retries: u32,
}

/// The client of one task.
pub struct Client {
    http: reqwest::blocking::Client,
    endpoints: Vec<String>,
    pool: EndpointPool,
    api_key: Option<String>,
    retry: RetryPolicy,
}

enum Outcome {
    Done(Vec<u8>),
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Fatal(String),
}

impl Client {
    /// A client for `endpoints` (OpenAI-style base URLs ending in `/v1`), each allowing
    /// `per_endpoint` requests at once.
    pub fn new(
        endpoints: Vec<String>,
        per_endpoint: usize,
        api_key: Option<String>,
        retry: RetryPolicy,
    ) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("no endpoint given".into());
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(retry.timeout)
            .pool_max_idle_per_host(per_endpoint)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_owned())
            .collect();
        Ok(Self {
            http,
            pool: EndpointPool::new(vec![per_endpoint; endpoints.len()]),
            endpoints,
            api_key,
            retry,
        })
    }

    /// Checks every endpoint with `GET /models`: reachable, and the key accepted.
    pub fn check(&self) -> Result<(), String> {
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}/models");
            let response = self
                .authorised(self.http.get(&url))
                .send()
                .map_err(|e| format!("endpoint {endpoint} is unreachable: {}", plain(&e)))?;
            match response.status().as_u16() {
                200..=299 => {}
                401 | 403 => {
                    return Err(format!(
                        "endpoint {endpoint} refused the API key (HTTP {})",
                        response.status().as_u16()
                    ));
                }
                status => {
                    return Err(format!(
                        "endpoint {endpoint} answered HTTP {status} to GET /models"
                    ));
                }
            }
        }
        Ok(())
    }

    fn authorised(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Posts a chat-completions request, retrying transient failures.
    pub fn chat(&self, body: &serde_json::Value) -> Result<Answer, Failure> {
        let mut retries = 0;
        loop {
            let outcome = {
                let slot = self.pool.acquire();
                self.attempt(&self.endpoints[slot.endpoint], body)
            };
            match outcome {
                Outcome::Done(body) => return Ok(Answer { body, retries }),
                Outcome::Fatal(message) => return Err(Failure { message, retries }),
                Outcome::Retry { why, after } => {
                    if retries + 1 >= self.retry.max_attempts {
                        return Err(Failure {
                            message: format!("{why} (gave up after {} attempts)", retries + 1),
                            retries,
                        });
                    }
                    std::thread::sleep(self.retry.delay(retries, after));
                    retries += 1;
                }
            }
        }
    }

    fn attempt(&self, endpoint: &str, body: &serde_json::Value) -> Outcome {
        let url = format!("{endpoint}/chat/completions");
        let response = match self.authorised(self.http.post(&url)).json(body).send() {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::Retry {
                    why: format!("{url}: timed out after {:?}", self.retry.timeout),
                    after: None,
                };
            }
            Err(e) => {
                return Outcome::Retry {
                    why: format!("{url}: {}", plain(&e)),
                    after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let bytes = match response.bytes() {
            Ok(b) => b.to_vec(),
            Err(e) => {
                return Outcome::Retry {
                    why: format!("{url}: connection dropped while reading: {}", plain(&e)),
                    after: None,
                };
            }
        };
        match status {
            200..=299 => Outcome::Done(bytes),
            429 | 500..=599 => Outcome::Retry {
                why: format!("{url}: HTTP {status}: {}", snippet(&bytes)),
                after: retry_after,
            },
            _ => Outcome::Fatal(format!("{url}: HTTP {status}: {}", snippet(&bytes))),
        }
    }
}

/// A reqwest error with its causes (never a header: keys and tokens stay out of it).
pub(crate) fn plain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// The `Retry-After` of a response, when given in seconds.
pub(crate) fn retry_after(response: &reqwest::blocking::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The first 200 characters of a response body.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(200).collect()
}
