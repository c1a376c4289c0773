//! What every LLM task takes as parameters: where to send requests, how, and how many.

use crate::batch::{Mode, OnBatchFailure, OnBatchWait};
use crate::client::Client;
use crate::error::{Error, Result};
use distill_engine::Price;
use distill_http::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Generation settings sent with every request (absent ones are not sent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// What happens to a row whose request fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The row's outputs are null and the error is kept in `<task>_error`; the run goes on.
    #[default]
    Null,
    /// The step fails (everything committed is kept).
    Fail,
}

/// Connection and concurrency parameters shared by every LLM task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmParams {
    /// One OpenAI-style base URL (ending in `/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Several base URLs; requests are spread over them.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// The model name sent with each request.
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself is never a
    /// parameter, so it is never stored).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests in flight per endpoint.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most requests started per minute (all endpoints together).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Most tokens (prompt and completion) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Attempts per request, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Seconds allowed for one request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Seconds the endpoint check at load waits for `GET /models`. A busy server that serves
    /// one request at a time (llama.cpp) answers it only after the completion it is working on.
    #[serde(default = "default_check_timeout")]
    pub check_timeout_secs: f64,
    /// Generation settings.
    #[serde(default)]
    pub generation: Generation,
    /// Generations per input row.
    #[serde(default = "one")]
    pub num_generations: u32,
    /// Keep the raw response in `raw_response`.
    #[serde(default)]
    pub keep_raw: bool,
    /// What a request that fails for good does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// What tokens cost (dollars per million), for spend in `status` and the budget.
    #[serde(default)]
    pub price: Option<Price>,
    /// `online` (each request sent as rows come) or `batch` (provider batch jobs).
    #[serde(default)]
    pub mode: Mode,
    /// Batch mode: rows per provider job (the job's lines are its rows' requests).
    #[serde(default = "default_batch_window")]
    pub batch_window: u64,
    /// Batch mode: seconds between two looks at an open job.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// Batch mode: what a run whose only work left is at the provider does.
    #[serde(default)]
    pub on_batch_wait: OnBatchWait,
    /// Batch mode: what becomes of a request a job failed, expired or cancelled.
    #[serde(default)]
    pub on_batch_failure: OnBatchFailure,
    /// Batch mode: jobs of the step open at the provider at once.
    #[serde(default = "default_max_open_jobs")]
    pub max_open_jobs: u64,
}

/// Most requests in flight per endpoint.
pub const MAX_CONCURRENCY: u64 = 1024;
/// Most generations per input row.
pub const MAX_GENERATIONS: u64 = 1024;
/// Most attempts per request.
pub const MAX_ATTEMPTS: u64 = 100;
/// Most seconds allowed for one request (one day).
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// Largest `generation.max_tokens` accepted (far above any model's context).
pub const MAX_TOKENS: u64 = 10_000_000;
/// Most seconds between two polls of a batch job (a day: jobs finish within one).
pub const MAX_POLL_SECS: u64 = 86_400;
/// Most batch jobs of one step open at once.
pub const MAX_OPEN_JOBS: u64 = 100;

/// `value` of `name` within `min..=max`, or a parameter error naming it.
fn bounded(name: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(Error::params(if max == u64::MAX {
        format!("`{name}` must be at least {min}, not {value}")
    } else {
        format!("`{name}` must be from {min} to {max}, not {value}")
    }))
}

/// `value` of `name` is a number of seconds above 0 and at most [`MAX_TIMEOUT_SECS`].
fn seconds(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 && value <= MAX_TIMEOUT_SECS {
        return Ok(());
    }
    Err(Error::params(format!(
        "`{name}` must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS} (one day), not {value}"
    )))
}

/// `url` (the parameter `name`) must be an http or https URL with a host.
fn check_url(name: &str, url: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::params(format!("{name}: `{url}` {why}")));
    match distill_http::reqwest::Url::parse(url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            bad("is not an http(s) URL (e.g. http://127.0.0.1:8080/v1)")
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => bad("has no host"),
        Ok(_) => Ok(()),
        Err(e) => bad(&format!(
            "is not a URL ({e}); e.g. http://127.0.0.1:8080/v1"
        )),
    }
}

/// Requests in flight per endpoint when a task does not say (`concurrency`).
pub const DEFAULT_CONCURRENCY: usize = 16;

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}
fn default_attempts() -> u32 {
    6
}
fn default_timeout() -> f64 {
    120.0
}
fn default_check_timeout() -> f64 {
    30.0
}
fn one() -> u32 {
    1
}
fn default_batch_window() -> u64 {
    1000
}
fn default_poll_secs() -> u64 {
    30
}
fn default_max_open_jobs() -> u64 {
    4
}

impl LlmParams {
    /// The parameters that change how requests are made but never an answer: where they go,
    /// with which key, how many at once, how fast, how long they may take, how often they
    /// are tried, and whether they go one by one or in provider batch jobs. They are outside a
    /// task's step signature.
    pub const OPERATIONAL: &[&str] = &[
        "base_url",
        "base_urls",
        "api_key_env",
        "concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "timeout_secs",
        "check_timeout_secs",
        "max_attempts",
        "price",
        "mode",
        "batch_window",
        "poll_secs",
        "on_batch_wait",
        "on_batch_failure",
        "max_open_jobs",
    ];

    /// Parses the connection parameters from a task's parameters, leaving out the task's
    /// `own` keys (which it reads itself), and checks them.
    pub fn from_params(params: &serde_json::Value, own: &[&str]) -> Result<Self> {
        let mut rest = params.as_object().cloned().unwrap_or_default();
        for key in own {
            rest.remove(*key);
        }
        let parsed: Self = distill_engine::step::from_json(serde_json::Value::Object(rest))
            .map_err(|e| Error::params(e.to_string()))?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks values that serde cannot: every bound names its parameter.
    pub fn validate(&self) -> Result<()> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Err(Error::params("set `base_url` or `base_urls`"));
        }
        for (i, url) in endpoints.iter().enumerate() {
            let name = match (&self.base_url, i) {
                (Some(_), 0) => "`base_url`".to_owned(),
                (Some(_), i) => format!("`base_urls[{}]`", i - 1),
                (None, i) => format!("`base_urls[{i}]`"),
            };
            check_url(&name, url)?;
        }
        bounded("concurrency", self.concurrency as u64, 1, MAX_CONCURRENCY)?;
        bounded(
            "num_generations",
            u64::from(self.num_generations),
            1,
            MAX_GENERATIONS,
        )?;
        bounded(
            "max_attempts",
            u64::from(self.max_attempts),
            1,
            MAX_ATTEMPTS,
        )?;
        if let Some(rpm) = self.requests_per_minute {
            bounded("requests_per_minute", u64::from(rpm), 1, u64::MAX)?;
        }
        if let Some(tpm) = self.tokens_per_minute {
            bounded("tokens_per_minute", tpm, 1, u64::MAX)?;
        }
        if let Some(max) = self.generation.max_tokens {
            bounded("generation.max_tokens", max, 1, MAX_TOKENS)?;
        }
        seconds("timeout_secs", self.timeout_secs)?;
        seconds("check_timeout_secs", self.check_timeout_secs)?;
        if let Some(price) = &self.price {
            price.check().map_err(|e| Error::params(e.to_string()))?;
        }
        let lines = crate::batch::MAX_LINES;
        bounded("batch_window", self.batch_window, 1, lines)?;
        if self.batch_window * u64::from(self.num_generations) > lines {
            return Err(Error::params(format!(
                "`batch_window` ({}) times `num_generations` ({}) must be at most {lines}, the most requests a provider takes in one job",
                self.batch_window, self.num_generations
            )));
        }
        bounded("poll_secs", self.poll_secs, 1, MAX_POLL_SECS)?;
        bounded("max_open_jobs", self.max_open_jobs, 1, MAX_OPEN_JOBS)
    }

    /// Whether every request's cost is bounded before it is sent, as a budget needs: a task
    /// whose completion tokens cost something needs `generation.max_tokens`.
    pub fn check_budgeted(&self) -> Result<()> {
        match &self.price {
            Some(price) if price.charges_output() && self.generation.max_tokens.is_none() => {
                Err(Error::params(
                    "with a `price` and the pipeline's `budget_usd`, `generation.max_tokens` is needed: it bounds what each answer may cost",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The base URLs.
    pub fn endpoints(&self) -> Vec<String> {
        let mut all: Vec<String> = self.base_url.iter().cloned().collect();
        all.extend(self.base_urls.iter().cloned());
        all
    }

    /// A chat-completions body: the model, `messages` and the generation settings.
    pub fn body(&self, messages: Vec<serde_json::Value>) -> serde_json::Value {
        let mut body = serde_json::json!({"model": self.model, "messages": messages});
        if let (Some(obj), Ok(serde_json::Value::Object(settings))) =
            (body.as_object_mut(), serde_json::to_value(&self.generation))
        {
            obj.extend(settings);
        }
        body
    }

    /// A completions body: the model, `prompt` and the generation settings.
    pub fn completion_body(&self, prompt: String) -> serde_json::Value {
        let mut body = serde_json::json!({"model": self.model, "prompt": prompt});
        if let (Some(obj), Ok(serde_json::Value::Object(settings))) =
            (body.as_object_mut(), serde_json::to_value(&self.generation))
        {
            obj.extend(settings);
        }
        body
    }

    /// A chat-completions body whose answer must be JSON matching `schema`, asked for through
    /// `response_format` (what llama.cpp's server and others enforce while generating).
    pub fn json_body(
        &self,
        messages: Vec<serde_json::Value>,
        schema: &serde_json::Value,
    ) -> serde_json::Value {
        let mut body = self.body(messages);
        if let Some(obj) = body.as_object_mut() {
            obj.insert(
                "response_format".into(),
                serde_json::json!({"type": "json_object", "schema": schema}),
            );
        }
        body
    }

    /// Builds the client, reading the API key from the environment.
    pub fn client(&self) -> Result<Client> {
        let api_key = match &self.api_key_env {
            Some(var) => {
                Some(std::env::var(var).map_err(|_| Error::ApiKeyMissing { var: var.clone() })?)
            }
            None => None,
        };
        let retry = RetryPolicy {
            max_attempts: self.max_attempts,
            timeout: Duration::from_secs_f64(self.timeout_secs),
            ..RetryPolicy::default()
        };
        Ok(
            Client::new(self.endpoints(), self.concurrency, api_key, retry)?
                .with_check_timeout(Duration::from_secs_f64(self.check_timeout_secs)),
        )
    }
}
