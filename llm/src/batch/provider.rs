//! The provider's side of batch mode: the OpenAI Batch protocol over HTTP (files and batches).
//!
//! `POST /files` (multipart, purpose `batch`), `POST /batches`, `GET /batches/{id}`,
//! `GET /batches` (newest first, by pages), `POST /batches/{id}/cancel` and
//! `GET /files/{id}/content`, read line by line. Creating a batch is never retried blindly: it
//! has no idempotency key, so the manager looks for the job before trying again.

use crate::error::{Error, Result};
use crate::settings::LlmParams;
use distill_http::reqwest::blocking::{RequestBuilder, multipart};
use distill_http::{Http, RetryPolicy, Stop};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

/// Longest line of an output or error file read (one answer).
const MAX_LINE_BYTES: usize = crate::client::MAX_ANSWER_BYTES;
/// Least time allowed for downloading a result file.
const MIN_DOWNLOAD_SECS: f64 = 600.0;
/// Batches listed per page when looking for a job.
const PAGE: u32 = 100;
/// Most pages read when looking for a job (the newest 10,000 batches of the account).
const MAX_PAGES: usize = 100;

/// Where a batch job stands at the provider. Serialized in snake case, as the provider
/// writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// The input file is being checked.
    Validating,
    /// The input file was refused; no request ran.
    Failed,
    /// Requests are running.
    InProgress,
    /// The results are being written.
    Finalizing,
    /// Done: the output and error files hold every request's result.
    Completed,
    /// The completion window passed: finished requests are in the output file.
    Expired,
    /// A cancel was asked for.
    Cancelling,
    /// Cancelled: finished requests are in the output file.
    Cancelled,
    /// A status this version does not know (polled again, like a running job).
    #[serde(other)]
    Unknown,
}

impl BatchStatus {
    /// Lower-case name, as the provider writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
            BatchStatus::Unknown => "unknown",
        }
    }

    /// Whether the job will not change any more (its results can be collected).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file object, as `POST /files` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct FileObject {
    /// The file's id.
    pub id: String,
    /// When the provider stored it (Unix seconds, the provider's clock).
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// Requests of a job by outcome, as the provider counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Requests in the job.
    #[serde(default)]
    pub total: u64,
    /// Requests answered.
    #[serde(default)]
    pub completed: u64,
    /// Requests failed.
    #[serde(default)]
    pub failed: u64,
}

/// A batch object, as the provider answers.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchObject {
    /// The job's id.
    pub id: String,
    /// Its status.
    pub status: BatchStatus,
    /// The input file's id.
    #[serde(default)]
    pub input_file_id: Option<String>,
    /// The output file (answers), once there is one.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// The error file (failed requests), once there is one.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Requests by outcome.
    #[serde(default)]
    pub request_counts: Option<RequestCounts>,
    /// The metadata given at creation.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    /// When the job was created (Unix seconds, the provider's clock).
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Why the job failed validation, when it did.
    #[serde(default)]
    pub errors: Option<serde_json::Value>,
}

impl BatchObject {
    /// A metadata value, when it is text.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }

    /// The provider's reasons for a failed job, in one line.
    pub fn error_text(&self) -> String {
        let Some(errors) = &self.errors else {
            return "no reason given".into();
        };
        let items = errors["data"].as_array().cloned().unwrap_or_default();
        let texts: Vec<String> = items
            .iter()
            .map(|e| {
                let code = e["code"].as_str().unwrap_or("error");
                let message = e["message"].as_str().unwrap_or("");
                match e["line"].as_u64() {
                    Some(line) => format!("{code} (line {line}): {message}"),
                    None => format!("{code}: {message}"),
                }
            })
            .collect();
        if texts.is_empty() {
            errors.to_string()
        } else {
            texts.join("; ")
        }
    }
}

/// One page of `GET /batches`.
#[derive(Debug, Clone, Deserialize)]
struct BatchPage {
    data: Vec<BatchObject>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

/// Where a task's batch jobs go and how they are asked: what [`Provider`] needs of a task's
/// parameters. Read leniently from a stored pipeline (`distill cancel` knows no task types).
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    /// One base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Several base URLs: batch jobs go to the first.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// The variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Attempts per call.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Seconds allowed per call.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
}

fn default_attempts() -> u32 {
    6
}
fn default_timeout() -> f64 {
    120.0
}

impl Connection {
    /// The connection part of a task's parameters (other keys are ignored).
    pub fn from_params(params: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(params.clone())
            .map_err(|e| Error::params(format!("the task's connection parameters: {e}")))
    }

    /// The connection of checked task parameters.
    pub fn of(params: &LlmParams) -> Self {
        Self {
            base_url: params.base_url.clone(),
            base_urls: params.base_urls.clone(),
            api_key_env: params.api_key_env.clone(),
            max_attempts: params.max_attempts,
            timeout_secs: params.timeout_secs,
        }
    }
}

/// A client of one provider's files and batches.
pub struct Provider {
    http: Http,
    base: String,
    api_key: Option<String>,
    download_timeout: Duration,
}

impl Provider {
    /// A client of the first endpoint of `connection` (batch jobs go there), with its key and
    /// retries; waits before retries end when `stop` is set.
    pub fn new(connection: &Connection, stop: Option<Stop>) -> Result<Self> {
        let base = connection
            .base_url
            .iter()
            .chain(&connection.base_urls)
            .next()
            .ok_or_else(|| Error::params("set `base_url` or `base_urls`"))?
            .trim_end_matches('/')
            .to_owned();
        let api_key = match &connection.api_key_env {
            Some(var) => {
                Some(std::env::var(var).map_err(|_| Error::ApiKeyMissing { var: var.clone() })?)
            }
            None => None,
        };
        let timeout = if connection.timeout_secs.is_finite() && connection.timeout_secs > 0.0 {
            connection.timeout_secs
        } else {
            default_timeout()
        };
        let policy = RetryPolicy {
            max_attempts: connection.max_attempts.max(1),
            timeout: Duration::from_secs_f64(timeout),
            stop,
            ..RetryPolicy::default()
        };
        Ok(Self {
            http: Http::with_idle_connections(policy, 2)?,
            base,
            api_key,
            download_timeout: Duration::from_secs_f64(timeout.max(MIN_DOWNLOAD_SECS)),
        })
    }

    /// The base URL the jobs go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The retry policy of the provider's calls.
    pub fn policy(&self) -> &RetryPolicy {
        self.http.policy()
    }

    fn authorised(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Uploads `jsonl` as a batch input file named `name` (retried: an orphan file costs
    /// nothing).
    pub fn upload(&self, name: &str, jsonl: &[u8]) -> Result<FileObject> {
        let url = format!("{}/files", self.base);
        let call = format!("POST {url}");
        let reply = self.http.send(&call, &[], || {
            let file = multipart::Part::bytes(jsonl.to_vec())
                .file_name(name.to_owned())
                .mime_str("application/jsonl")
                .expect("a valid MIME type");
            let form = multipart::Form::new()
                .text("purpose", "batch")
                .part("file", file);
            self.authorised(self.http.client().post(&url))
                .multipart(form)
        })?;
        Ok(reply.json(&call)?)
    }

    /// Creates a batch of `file_id`'s requests to `endpoint` (`/v1/chat/completions`), once:
    /// a failure is not retried here (see the module's doc).
    pub fn create_once(
        &self,
        file_id: &str,
        endpoint: &str,
        metadata: &BTreeMap<String, String>,
    ) -> distill_http::Result<BatchObject> {
        let url = format!("{}/batches", self.base);
        let call = format!("POST {url}");
        let body = serde_json::json!({
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": metadata,
        });
        let request = self.authorised(self.http.client().post(&url)).json(&body);
        self.http.once(&call, &[], request)?.json(&call)
    }

    /// The batch `id`, as it stands.
    pub fn get(&self, id: &str) -> Result<BatchObject> {
        let url = format!("{}/batches/{id}", self.base);
        let call = format!("GET {url}");
        let reply = self
            .http
            .send(&call, &[], || self.authorised(self.http.client().get(&url)))?;
        Ok(reply.json(&call)?)
    }

    /// Asks the provider to cancel batch `id`.
    pub fn cancel(&self, id: &str) -> Result<BatchObject> {
        let url = format!("{}/batches/{id}/cancel", self.base);
        let call = format!("POST {url}");
        let reply = self.http.send(&call, &[], || {
            self.authorised(self.http.client().post(&url))
        })?;
        Ok(reply.json(&call)?)
    }

    /// The newest batch for which `matches` holds, listing newest first and stopping at jobs
    /// created before `since` (Unix seconds of the provider's clock) or after
    /// [`MAX_PAGES`] pages.
    pub fn find(
        &self,
        since: Option<i64>,
        matches: impl Fn(&BatchObject) -> bool,
    ) -> Result<Option<BatchObject>> {
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = format!("{}/batches?limit={PAGE}", self.base);
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let call = format!("GET {url}");
            let reply = self
                .http
                .send(&call, &[], || self.authorised(self.http.client().get(&url)))?;
            let page: BatchPage = reply.json(&call)?;
            let mut older = false;
            for batch in page.data.iter() {
                if matches(batch) {
                    return Ok(Some(batch.clone()));
                }
                // Listed newest first: a job created before the input file was cannot be ours.
                older |= matches!((since, batch.created_at), (Some(s), Some(c)) if c < s);
            }
            after = page
                .last_id
                .or_else(|| page.data.last().map(|b| b.id.clone()));
            if !page.has_more || older || after.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// Reads file `id`'s content line by line, handing each non-empty line to `line`. A
    /// dropped connection, a timeout, 429 or 5xx is a transient failure (the caller tries the
    /// whole file again later); another status is refused.
    pub fn lines(&self, id: &str, mut line: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let url = format!("{}/files/{id}/content", self.base);
        let call = format!("GET {url}");
        let transient = |detail: String, status: Option<u16>| {
            Error::Request(distill_http::Error::Transient {
                call: call.clone(),
                detail,
                retry_after: None,
                status,
            })
        };
        let response = self
            .authorised(self.http.client().get(&url))
            .timeout(self.download_timeout)
            .send()
            .map_err(|e| transient(format!("the download failed: {}", e.without_url()), None))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let mut text = String::new();
            let _ = response.take(2000).read_to_string(&mut text);
            let detail = format!("HTTP {status}: {}", text.trim());
            return Err(match status {
                429 | 500..=599 => transient(detail, Some(status)),
                401 | 403 => Error::Request(distill_http::Error::Auth {
                    call,
                    status,
                    detail,
                }),
                _ => Error::Request(distill_http::Error::Refused {
                    call,
                    status,
                    detail,
                }),
            });
        }
        let mut reader = BufReader::new(response);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let read = (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buffer)
                .map_err(|e| transient(format!("the download failed: {e}"), None))?;
            if read == 0 {
                return Ok(());
            }
            if buffer.len() > MAX_LINE_BYTES {
                return Err(Error::Request(distill_http::Error::protocol(
                    &call,
                    format!("a line is longer than {MAX_LINE_BYTES} bytes"),
                )));
            }
            let text = buffer.trim_ascii();
            if !text.is_empty() {
                line(text)?;
            }
        }
    }
}
