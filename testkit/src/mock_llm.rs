//! An OpenAI-compatible chat-completions server on 127.0.0.1 with scripted behaviour: fixed
//! latency, a share of 500s, 429s with `Retry-After`, hangs, a required API key, and a log of
//! every request received (its body's hash and the status answered).
//!
//! Answers are deterministic: the text is `echo: ` followed by the last message's content, and
//! `usage` counts whitespace-separated words. A request whose `response_format` asks for JSON
//! gets `{"answer": "<last message>", "score": 3}` as its content.
//!
//! The same server speaks the OpenAI Batch protocol (files and batches, see
//! [`crate::mock_batch`]), answering a job's requests as the chat endpoint does.

use crate::http::{self, Incoming, Request, Response};
use crate::mock_batch::{self, BatchBehaviour, BatchLog, Hold};
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Time taken by every chat answer (the endpoint check takes `models_latency`).
    pub latency: Duration,
    /// Every Nth request (1-based) answers 500.
    pub fail_every: Option<u64>,
    /// Every Nth request answers 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_every: Option<u64>,
    /// Seconds in the `Retry-After` of a 429.
    pub retry_after_secs: u64,
    /// Every Nth request never answers (until the server stops).
    pub hang_every: Option<u64>,
    /// The API key required in `Authorization: Bearer`, if any.
    pub api_key: Option<String>,
    /// Chat requests after the first N answer 500 (the endpoint check still passes).
    pub fail_chats_after: Option<u64>,
    /// What a chat request that gets through answers (a good completion by default).
    pub answer: AnswerKind,
    /// Every `GET /models` (the endpoint check) waits this long before answering.
    pub models_latency: Duration,
}

/// The body of a 200 answer to a chat request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AnswerKind {
    /// A good completion (see the module's doc).
    #[default]
    Good,
    /// `{"id": ..., "object": "chat.completion"}`: no `choices`.
    NoChoices,
    /// `{"error": {"message": "model overloaded"}}` with status 200.
    ErrorBody,
    /// A choice whose `content` is null.
    NullContent,
    /// A choice whose `content` is "".
    EmptyContent,
    /// A good completion padded with this many bytes of whitespace.
    Huge(usize),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// blake3 of the body, hex.
    pub body_hash: String,
    /// The body.
    pub body: String,
    /// Status answered (0 for a hang).
    pub status: u16,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    count: AtomicU64,
    chats: AtomicU64,
    in_flight: AtomicU64,
    peak: AtomicU64,
    log: Mutex<Vec<Received>>,
    batch: mock_batch::State,
}

/// A running server; stops when dropped.
pub struct MockLlm {
    shared: Arc<Shared>,
    server: http::Server,
}

impl MockLlm {
    /// Starts a server on a free loopback port.
    pub fn start(behaviour: Behaviour) -> MockLlm {
        Self::start_on(0, behaviour)
    }

    /// Starts a server on `port` (0: any free port).
    pub fn start_on(port: u16, behaviour: Behaviour) -> MockLlm {
        let (listener, _) = http::Server::bind(port);
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            count: AtomicU64::new(0),
            chats: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            batch: mock_batch::State::default(),
        });
        let server = {
            let shared = shared.clone();
            let stop = Arc::new(AtomicBool::new(false));
            http::Server::start(listener, stop, move |stream| serve(&shared, stream))
        };
        MockLlm { shared, server }
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.server.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Replaces the behaviour for the requests to come.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        if let Ok(mut b) = self.shared.behaviour.lock() {
            *b = behaviour;
        }
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Most requests ever in progress at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Number of requests received so far.
    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Replaces the batch side's behaviour (a job that became due completes at its next look).
    pub fn set_batch_behaviour(&self, behaviour: BatchBehaviour) {
        self.shared.batch.set_behaviour(behaviour);
    }

    /// What the batch side saw: jobs created (with their request lines), uploads, lists,
    /// cancels, downloads.
    pub fn batch_log(&self) -> BatchLog {
        self.shared.batch.log()
    }

    /// Waits until the server holds its answer at `hold` (at most `timeout`); false if it did
    /// not get there.
    pub fn wait_held(&self, hold: Hold, timeout: Duration) -> bool {
        self.shared.batch.wait_held(hold, timeout)
    }

    /// Lets held answers go and ends holding.
    pub fn release(&self) {
        self.shared.batch.release();
    }

    /// Chat requests answered with 200 so far.
    pub fn chats_answered(&self) -> usize {
        self.received()
            .iter()
            .filter(|r| r.status == 200 && r.path.ends_with("/chat/completions"))
            .count()
    }
}

/// Serves one connection's requests in turn (keep-alive) until the client closes it.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match http::read_request(&mut reader) {
            Incoming::Request(request) => request,
            Incoming::Closed => return,
            Incoming::Malformed(why) => {
                let answer = Response::new(400, "application/json", error_json(&why));
                let _ = http::write_response(&mut writer, &answer, false);
                return;
            }
        };
        if mock_batch::State::serves(request.path()) && authorised(shared, &request) {
            if !shared.batch.handle(&request, &mut writer) || request.wants_close() {
                return;
            }
            continue;
        }
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        let answer = respond(shared, &request);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Some((status, text, retry_after)) = answer else {
            // A hang: hold the connection without answering.
            std::thread::sleep(Duration::from_secs(3600));
            return;
        };
        let mut response = Response::new(status, "application/json", text);
        if let Some(secs) = retry_after {
            response = response.with("Retry-After", secs.to_string());
        }
        if http::write_response(&mut writer, &response, false).is_err() {
            return;
        }
    }
}

/// Whether `request` carries the key the behaviour requires (if any).
fn authorised(shared: &Shared, request: &Request) -> bool {
    let key = shared
        .behaviour
        .lock()
        .map(|b| b.api_key.clone())
        .unwrap_or_default();
    key.is_none_or(|key| request.header("authorization") == Some(&format!("Bearer {key}")))
}

fn every(n: Option<u64>, count: u64) -> bool {
    n.is_some_and(|n| n > 0 && count.is_multiple_of(n))
}

/// The answer to one request: status, body and `Retry-After`, or `None` for a hang.
fn respond(shared: &Shared, request: &Request) -> Option<(u16, String, Option<u64>)> {
    let b = shared
        .behaviour
        .lock()
        .map(|b| b.clone())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&request.body);
    let (path, body) = (&request.target, body.as_ref());
    let count = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    let authorised = b.api_key.as_ref().is_none_or(|key| {
        request
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && *v == format!("Bearer {key}"))
    });
    if path.ends_with("/chat/completions") {
        std::thread::sleep(b.latency);
    }
    let (status, text, retry_after) = if !authorised {
        (401, error_json("invalid api key"), None)
    } else if path.ends_with("/models") {
        std::thread::sleep(b.models_latency);
        (
            200,
            r#"{"object":"list","data":[{"id":"mock-model","object":"model"}]}"#.to_owned(),
            None,
        )
    } else if !path.ends_with("/chat/completions") {
        (404, error_json("not found"), None)
    } else if every(b.hang_every, count) {
        log(shared, path, body, 0);
        return None;
    } else if every(b.rate_limit_every, count) {
        (429, error_json("rate limited"), Some(b.retry_after_secs))
    } else if every(b.fail_every, count)
        || b.fail_chats_after
            .is_some_and(|n| shared.chats.fetch_add(1, Ordering::SeqCst) >= n)
    {
        (500, error_json("internal error"), None)
    } else {
        match completion(body) {
            Some(json) => (200, shaped(&b.answer, json), None),
            None => (400, error_json("bad request body"), None),
        }
    };
    log(shared, path, body, status);
    Some((status, text, retry_after))
}

/// A good completion's JSON reshaped as `kind` asks.
fn shaped(kind: &AnswerKind, good: String) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap_or_default();
    match kind {
        AnswerKind::Good => return good,
        AnswerKind::Huge(pad) => return format!("{good}{}", " ".repeat(*pad)),
        AnswerKind::NoChoices => {
            json.as_object_mut().map(|o| o.remove("choices"));
        }
        AnswerKind::ErrorBody => {
            json = serde_json::json!({"error": {"message": "model overloaded", "type": "mock"}});
        }
        AnswerKind::NullContent => {
            json["choices"][0]["message"]["content"] = serde_json::Value::Null
        }
        AnswerKind::EmptyContent => json["choices"][0]["message"]["content"] = "".into(),
    }
    json.to_string()
}

fn log(shared: &Shared, path: &str, body: &str, status: u16) {
    if let Ok(mut log) = shared.log.lock() {
        log.push(Received {
            path: path.to_owned(),
            body_hash: blake3::hash(body.as_bytes()).to_hex().to_string(),
            body: body.to_owned(),
            status,
        });
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": "mock"}}).to_string()
}

/// The good completion a chat request gets (also a batch job's answer to a line).
pub(crate) fn completion(body: &str) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(body).ok()?;
    let model = request["model"].as_str()?.to_owned();
    let messages = request["messages"].as_array()?;
    let last = messages.last()?["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let n = request["n"].as_u64().unwrap_or(1).max(1);
    let wants_json = request.get("response_format").is_some_and(|f| !f.is_null());
    let content = if wants_json {
        serde_json::json!({"answer": last, "score": 3}).to_string()
    } else {
        format!("echo: {last}")
    };
    let prompt_tokens: usize = messages
        .iter()
        .map(|m| {
            m["content"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .sum();
    let completion_tokens = content.split_whitespace().count() as u64 * n;
    let choices: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "index": i,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            })
        })
        .collect();
    Some(
        serde_json::json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens as u64 + completion_tokens
            }
        })
        .to_string(),
    )
}
