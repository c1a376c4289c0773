//! Runs a task's requests: the cache first, then the endpoints, concurrently, with every paid
//! response committed to the run log before it is used.

use super::Client;
use super::rate::RateLimit;
use super::settings::{LlmParams, OnFailure};
use crate::task::TaskContext;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The request cache key: blake3 of the request's canonical JSON (sorted keys) and the
/// generation index. The endpoint is not part of it, so any endpoint's answer serves.
pub fn cache_key(body: &serde_json::Value, generation: u32) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(canonical(body).to_string().as_bytes());
    hasher.update(&generation.to_le_bytes());
    *hasher.finalize().as_bytes()
}

fn canonical(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical).collect())
        }
        other => other.clone(),
    }
}

/// One request of a batch: the body and which generation of its row it is.
pub struct Request {
    /// The chat-completions body.
    pub body: serde_json::Value,
    /// Generation index within its row.
    pub generation: u32,
}

/// A task's connection to its LLM, alive between `load` and `unload`.
pub struct Runner {
    /// The task's parameters.
    pub params: LlmParams,
    client: Option<Client>,
    rate: RateLimit,
}

impl Runner {
    /// A runner, not yet connected.
    pub fn new(params: LlmParams) -> Self {
        let rate = RateLimit::new(params.requests_per_minute, params.tokens_per_minute);
        Self {
            params,
            client: None,
            rate,
        }
    }

    /// Builds the client and checks every endpoint (reachable, key accepted).
    pub fn load(&mut self) -> Result<(), String> {
        let client = self.params.client()?;
        client.check()?;
        self.client = Some(client);
        Ok(())
    }

    /// Drops the client.
    pub fn unload(&mut self) {
        self.client = None;
    }

    /// Runs `requests` concurrently (up to the task's concurrency over all endpoints); each
    /// result is the parsed response or the final error. With `on_failure: fail`, the first
    /// final error is returned as the batch's error.
    pub fn run(
        &self,
        requests: &[Request],
        ctx: &dyn TaskContext,
    ) -> Result<Vec<Result<serde_json::Value, String>>, String> {
        let workers = (self.params.concurrency * self.params.endpoints().len())
            .min(requests.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let mut results: Vec<Option<Result<serde_json::Value, String>>> =
            (0..requests.len()).map(|_| None).collect();
        let slots: Vec<std::sync::Mutex<&mut Option<Result<serde_json::Value, String>>>> =
            results.iter_mut().map(std::sync::Mutex::new).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(request) = requests.get(i) else {
                            break;
                        };
                        let result = self.one(request, ctx);
                        if let Ok(mut slot) = slots[i].lock() {
                            **slot = Some(result);
                        }
                    }
                });
            }
        });
        drop(slots);
        let results: Vec<Result<serde_json::Value, String>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("request not run".into())))
            .collect();
        if self.params.on_failure == OnFailure::Fail
            && let Some(Err(e)) = results.iter().find(|r| r.is_err())
        {
            return Err(e.clone());
        }
        Ok(results)
    }

    fn one(&self, request: &Request, ctx: &dyn TaskContext) -> Result<serde_json::Value, String> {
        let key = cache_key(&request.body, request.generation);
        if let Some(bytes) = ctx.cached(&key) {
            ctx.count("cache_hits", 1);
            return serde_json::from_slice(&bytes).map_err(|e| format!("cached response: {e}"));
        }
        let client = self.client.as_ref().ok_or("the task is not loaded")?;
        self.rate.before_request();
        let answer = client.chat(&request.body);
        ctx.count("requests", 1);
        match answer {
            Ok(answer) => {
                if answer.retries > 0 {
                    ctx.count("retries", u64::from(answer.retries));
                }
                let json: serde_json::Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("the response is not JSON: {e}"))?;
                // Paid for: durable before anything else happens with it.
                ctx.store(key, answer.body).map_err(|e| e.to_string())?;
                let usage = &json["usage"];
                let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
                let output = usage["completion_tokens"].as_u64().unwrap_or(0);
                ctx.count("input_tokens", input);
                ctx.count("output_tokens", output);
                self.rate.record_tokens(input + output);
                Ok(json)
            }
            Err(failure) => {
                if failure.retries > 0 {
                    ctx.count("retries", u64::from(failure.retries));
                }
                ctx.count("failures", 1);
                Err(failure.message)
            }
        }
    }
}
