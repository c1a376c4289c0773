//! An OpenAI-compatible client: several endpoints with a concurrency limit each, on the shared
//! HTTP layer (retries with backoff and jitter that honour `Retry-After`, timeouts).

use crate::error::{Error, Result};
use crate::limiter::EndpointPool;
use crate::provider::{ProviderLimits, announced};
use distill_http::{Http, RetryPolicy};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Largest answer body accepted (16 MiB): a larger one is refused, never read whole.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Time the endpoint check at load allows each endpoint's `GET /models` unless told otherwise
/// (`check_timeout_secs`; a dropped connection is tried again twice, a slow answer not): a
/// silent endpoint fails the load in seconds, not after a request's full timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response body, as received.
    pub body: Vec<u8>,
    /// Retries it took.
    pub retries: u32,
}

/// A request that failed for good, and the retries made before.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What happened last (never holds the API key).
    pub error: distill_http::Error,
    /// Retries made.
    pub retries: u32,
}

/// The client of one task.
pub struct Client {
    http: Http,
    endpoints: Vec<String>,
    pool: EndpointPool,
    limits: Vec<ProviderLimits>,
    api_key: Option<String>,
    check_timeout: Duration,
}

impl Client {
    /// A client for `endpoints` (OpenAI-style base URLs ending in `/v1`), each allowing
    /// `per_endpoint` requests at once.
    pub fn new(
        endpoints: Vec<String>,
        per_endpoint: usize,
        api_key: Option<String>,
        retry: RetryPolicy,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::params("set `base_url` or `base_urls`"));
        }
        let http =
            Http::with_idle_connections(retry, per_endpoint)?.with_max_body(MAX_ANSWER_BYTES);
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_owned())
            .collect();
        Ok(Self {
            http,
            pool: EndpointPool::new(vec![per_endpoint; endpoints.len()]),
            limits: endpoints
                .iter()
                .map(|_| ProviderLimits::default())
                .collect(),
            endpoints,
            api_key,
            check_timeout: CHECK_TIMEOUT,
        })
    }

    /// The same client with the endpoint check allowing `timeout` per attempt.
    pub fn with_check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Checks every endpoint with `GET /models`: reachable, and the key accepted. Each attempt
    /// takes at most the check timeout ([`CHECK_TIMEOUT`] by default); only a connection dropped without an answer is tried
    /// again (twice).
    pub fn check(&self) -> Result<()> {
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}/models");
            let call = format!("GET {url}");
            let attempt = || {
                let request = self
                    .authorised(self.http.client().get(&url))
                    .timeout(self.check_timeout);
                self.http.once(&call, &[], request)
            };
            let fail = |detail: String| Error::Endpoint {
                endpoint: endpoint.clone(),
                detail,
            };
            // A connection the server closed while idle in the pool fails at once with no
            // answer: such a failure is tried again, twice, on a new connection.
            let mut outcome = attempt();
            for _ in 0..2 {
                match &outcome {
                    Err(e) if e.status().is_none() && !e.is_timeout() => {
                        std::thread::sleep(Duration::from_millis(200));
                        outcome = attempt();
                    }
                    _ => break,
                }
            }
            match outcome {
                Ok(_) => {}
                Err(distill_http::Error::Auth { status, .. }) => {
                    return Err(fail(format!("refused the API key (HTTP {status})")));
                }
                Err(e) => match e.status() {
                    Some(status) => {
                        return Err(fail(format!("answered HTTP {status} to GET /models")));
                    }
                    None if e.is_timeout() => {
                        return Err(fail(format!(
                            "did not answer GET /models within {} s (a busy server may need a longer `check_timeout_secs`)",
                            self.check_timeout.as_secs_f64()
                        )));
                    }
                    None => return Err(fail(format!("is unreachable: {e}"))),
                },
            }
        }
        Ok(())
    }

    fn authorised(
        &self,
        request: distill_http::reqwest::blocking::RequestBuilder,
    ) -> distill_http::reqwest::blocking::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Posts a chat-completions request, retrying transient failures.
    pub fn chat(&self, body: &serde_json::Value) -> std::result::Result<Answer, Failure> {
        self.post("chat/completions", body, None)
    }

    /// Posts `body` to `path` under an endpoint (the least loaded one with room, again for
    /// each attempt), retrying transient failures; a wait before a retry ends when `stop` is
    /// set (the failure is then [`distill_http::FailureKind::Interrupted`]). Each attempt first
    /// waits for room under the rate limits the endpoint announced (`x-ratelimit-*`
    /// headers); a 429 without `Retry-After` lowers the endpoint's concurrency for a while.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        stop: Option<Arc<AtomicBool>>,
    ) -> std::result::Result<Answer, Failure> {
        let mut retries = 0;
        let mut policy = self.http.policy().clone();
        if stop.is_some() {
            policy.stop = stop;
        }
        let tokens = crate::api::rate_tokens(body);
        let result = policy.run(
            path,
            || {
                let slot = self.pool.acquire();
                let url = format!("{}/{path}", self.endpoints[slot.endpoint]);
                let call = format!("POST {url}");
                let limits = &self.limits[slot.endpoint];
                let Some(ticket) = limits.before(tokens, policy.stop.as_deref()) else {
                    return Err(distill_http::Error::Interrupted { call });
                };
                let request = self.authorised(self.http.client().post(&url)).json(body);
                let mut said = (None, None);
                let reply = self.http.once_observed(&call, &[], request, |reply| {
                    said = announced(&reply.headers);
                });
                limits.after(ticket, said);
                match &reply {
                    Ok(_) => self.pool.answered(slot.endpoint),
                    Err(e) if e.status() == Some(429) && e.retry_after().is_none() => {
                        self.pool.throttled(slot.endpoint, slot.since);
                    }
                    Err(_) => {}
                }
                reply
            },
            |_, _| retries += 1,
        );
        match result {
            Ok(reply) => Ok(Answer {
                body: reply.body,
                retries,
            }),
            Err(error) => Err(Failure { error, retries }),
        }
    }
}
