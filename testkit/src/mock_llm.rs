//! An OpenAI-compatible server on 127.0.0.1 (`/chat/completions`, `/completions`,
//! `/embeddings`, `/models`) with scripted behaviour: fixed latency, a share of 500s, 429s with
//! `Retry-After`, hangs, a required API key, a provider's rate limit (N requests per window,
//! announced in `x-ratelimit-*` headers, 429 without `Retry-After` beyond it), a cap on
//! requests in progress (429 beyond it), and a log of every request received (its body's hash
//! and the status answered).
//!
//! Answers are deterministic: a chat answer's text is `echo: ` followed by the last message's
//! content, a completion's is `completion: ` followed by the prompt, and `usage` counts
//! whitespace-separated words. A request whose `response_format` asks for JSON gets
//! `{"answer": "<last message>", "score": 3}` as its content. An input's embedding is
//! [`mock_embedding`] (`dimensions` numbers, 4 by default), as floats or, when asked, base64.
//!
//! The same server speaks the OpenAI Batch protocol (files and batches, see
//! [`crate::mock_batch`]), answering a job's requests as the chat endpoint does.
//!
//! A test scripts answers by request content with [`Behaviour::script`], and holds API requests
//! after the first N unanswered until it opens the gate ([`Behaviour::hold_after`]).

use crate::http::{self, Incoming, Request, Response};
use crate::mock_batch::{self, BatchBehaviour, BatchLog, Hold};
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// A provider's rate limit: at most this many API requests per window (fixed windows
    /// from the server's start); beyond it, 429 without `Retry-After`.
    pub requests_per_window: Option<(u64, Duration)>,
    /// Send `x-ratelimit-limit/remaining/reset-requests` headers with every API answer (with
    /// `requests_per_window`).
    pub rate_headers: bool,
    /// At most this many API requests in progress at once; beyond it, 429 without
    /// `Retry-After`.
    pub max_in_flight: Option<u64>,
    /// Scripted answers by request content: the first rule whose `contains` occurs in the
    /// request's text (its messages' contents joined by newlines, or its prompt) gives the
    /// answer's text, for chat and completions alike (JSON requests too). Requests that no
    /// rule matches get the default answers.
    pub script: Vec<Scripted>,
    /// API requests after the first N wait, unanswered, until [`MockLlm::open_gate`]: a run
    /// that stays in progress for as long as a test needs.
    pub hold_after: Option<u64>,
}

/// One scripted answer: the text to answer when a request's text contains `contains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripted {
    /// What the request's text must contain.
    pub contains: String,
    /// The answer's text.
    pub answer: String,
}

impl Scripted {
    /// A rule: answer `answer` to requests containing `contains`.
    pub fn new(contains: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            contains: contains.into(),
            answer: answer.into(),
        }
    }
}

/// The scripted answer to a request whose text is `text`, if a rule matches.
fn scripted(script: &[Scripted], text: &str) -> Option<String> {
    script
        .iter()
        .find(|rule| text.contains(&rule.contains))
        .map(|rule| rule.answer.clone())
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
    /// Embeddings: one vector fewer than the inputs.
    MissingVector,
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
    api_requests: AtomicU64,
    gate_open: Mutex<bool>,
    gate: Condvar,
    in_flight: AtomicU64,
    peak: AtomicU64,
    accepted: AtomicU64,
    accepted_peak: AtomicU64,
    started: std::time::Instant,
    windows: Mutex<Vec<u64>>,
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
            api_requests: AtomicU64::new(0),
            gate_open: Mutex::new(false),
            gate: Condvar::new(),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            accepted_peak: AtomicU64::new(0),
            started: std::time::Instant::now(),
            windows: Mutex::new(Vec::new()),
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

    /// Answers the requests held by [`Behaviour::hold_after`], and every later one at once.
    pub fn open_gate(&self) {
        *self
            .shared
            .gate_open
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.gate.notify_all();
    }

    /// Chat requests answered with 200 so far.
    pub fn chats_answered(&self) -> usize {
        self.received()
            .iter()
            .filter(|r| r.status == 200 && r.path.ends_with("/chat/completions"))
            .count()
    }

    /// Most API requests in progress at once among those let through the limits
    /// (`max_in_flight`, `requests_per_window`).
    pub fn peak_accepted(&self) -> u64 {
        self.shared.accepted_peak.load(Ordering::SeqCst)
    }

    /// API requests let through in each window of `requests_per_window` so far.
    pub fn served_per_window(&self) -> Vec<u64> {
        self.shared
            .windows
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Requests answered with `status` so far.
    pub fn answered(&self, status: u16) -> usize {
        self.received()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

/// The mock's embedding of `text`: `dimensions` numbers from blake3 of the text, each a
/// multiple of 1/256 in [-0.5, 0.5) (exact as float32, so JSON and base64 agree).
pub fn mock_embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut bytes = vec![0u8; dimensions];
    blake3::Hasher::new()
        .update(text.as_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    bytes.iter().map(|b| f32::from(*b) / 256.0 - 0.5).collect()
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
        let Some(Answer {
            status,
            text,
            headers,
        }) = answer
        else {
            // A hang: hold the connection without answering.
            std::thread::sleep(Duration::from_secs(3600));
            return;
        };
        let mut response = Response::new(status, "application/json", text);
        for (name, value) in headers {
            response = response.with(&name, value);
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

/// An answer: status, body and extra headers.
struct Answer {
    status: u16,
    text: String,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn new(status: u16, text: String) -> Self {
        Self {
            status,
            text,
            headers: Vec::new(),
        }
    }
}

/// The API a path is under, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
    Embeddings,
}

fn api_of(path: &str) -> Option<Api> {
    if path.ends_with("/chat/completions") {
        Some(Api::Chat)
    } else if path.ends_with("/completions") {
        Some(Api::Completions)
    } else if path.ends_with("/embeddings") {
        Some(Api::Embeddings)
    } else {
        None
    }
}

/// A duration as providers write it in `x-ratelimit-reset-*`: `850ms`, `1.5s`, `2m5s`.
fn provider_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) as f64 / 1000.0)
    }
}

/// Holds a place for an API request under the provider's limits (`max_in_flight`,
/// `requests_per_window`): the rate-limit headers to send, or a 429 without `Retry-After`.
fn admit(shared: &Shared, b: &Behaviour) -> Result<Vec<(String, String)>, Answer> {
    let mut headers = Vec::new();
    if let Some((limit, window)) = b.requests_per_window {
        let elapsed = shared.started.elapsed();
        let index = (elapsed.as_nanos() / window.as_nanos().max(1)) as usize;
        let reset = window
            .saturating_mul(index as u32 + 1)
            .saturating_sub(elapsed);
        let mut windows = shared.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() <= index {
            windows.resize(index + 1, 0);
        }
        let over = windows[index] >= limit;
        if !over {
            windows[index] += 1;
        }
        if b.rate_headers {
            headers.push(("x-ratelimit-limit-requests".into(), limit.to_string()));
            headers.push((
                "x-ratelimit-remaining-requests".into(),
                (limit - windows[index].min(limit)).to_string(),
            ));
            headers.push((
                "x-ratelimit-reset-requests".into(),
                provider_duration(reset),
            ));
        }
        if over {
            return Err(Answer {
                status: 429,
                text: error_json("rate limit reached for requests"),
                headers,
            });
        }
    }
    let now = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
    if b.max_in_flight.is_some_and(|max| now > max) {
        shared.accepted.fetch_sub(1, Ordering::SeqCst);
        return Err(Answer::new(
            429,
            error_json("too many requests in progress"),
        ));
    }
    shared.accepted_peak.fetch_max(now, Ordering::SeqCst);
    Ok(headers)
}

/// Waits until the test opens the gate.
fn wait_for_gate(shared: &Shared) {
    let mut open = shared.gate_open.lock().unwrap_or_else(|p| p.into_inner());
    while !*open {
        open = shared.gate.wait(open).unwrap_or_else(|p| p.into_inner());
    }
}

/// The answer to one request, or `None` for a hang.
fn respond(shared: &Shared, request: &Request) -> Option<Answer> {
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
    let api = api_of(path);
    let mut headers = Vec::new();
    if authorised && api.is_some() {
        match admit(shared, &b) {
            Ok(h) => headers = h,
            Err(refused) => {
                log(shared, path, body, refused.status);
                return Some(refused);
            }
        }
        std::thread::sleep(b.latency);
        let seen = shared.api_requests.fetch_add(1, Ordering::SeqCst) + 1;
        if b.hold_after.is_some_and(|n| seen > n) {
            wait_for_gate(shared);
        }
    }
    let answer = if !authorised {
        Answer::new(401, error_json("invalid api key"))
    } else if path.ends_with("/models") {
        std::thread::sleep(b.models_latency);
        Answer::new(
            200,
            r#"{"object":"list","data":[{"id":"mock-model","object":"model"}]}"#.to_owned(),
        )
    } else if let Some(api) = api {
        let answer = if every(b.hang_every, count) {
            None
        } else if every(b.rate_limit_every, count) {
            Some(Answer {
                status: 429,
                text: error_json("rate limited"),
                headers: vec![("Retry-After".into(), b.retry_after_secs.to_string())],
            })
        } else if every(b.fail_every, count)
            || b.fail_chats_after
                .is_some_and(|n| shared.chats.fetch_add(1, Ordering::SeqCst) >= n)
        {
            Some(Answer::new(500, error_json("internal error")))
        } else {
            let good = match api {
                Api::Chat => completion(body, &b.script),
                Api::Completions => text_completion(body, &b.script),
                Api::Embeddings => embeddings(body),
            };
            Some(match good {
                Some(json) => Answer::new(200, shaped(api, &b.answer, json)),
                None => Answer::new(400, error_json("bad request body")),
            })
        };
        shared.accepted.fetch_sub(1, Ordering::SeqCst);
        let Some(mut answer) = answer else {
            log(shared, path, body, 0);
            return None;
        };
        answer.headers.extend(headers);
        answer
    } else {
        Answer::new(404, error_json("not found"))
    };
    log(shared, path, body, answer.status);
    Some(answer)
}

/// A good answer's JSON reshaped as `kind` asks.
fn shaped(api: Api, kind: &AnswerKind, good: String) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap_or_default();
    let text = match api {
        Api::Chat => "/choices/0/message/content",
        Api::Completions => "/choices/0/text",
        Api::Embeddings => "/data/0/embedding",
    };
    match kind {
        AnswerKind::Good => return good,
        AnswerKind::Huge(pad) => return format!("{good}{}", " ".repeat(*pad)),
        AnswerKind::NoChoices => {
            json.as_object_mut().map(|o| {
                o.remove("choices");
                o.remove("data")
            });
        }
        AnswerKind::ErrorBody => {
            json = serde_json::json!({"error": {"message": "model overloaded", "type": "mock"}});
        }
        AnswerKind::NullContent => {
            if let Some(v) = json.pointer_mut(text) {
                *v = serde_json::Value::Null;
            }
        }
        AnswerKind::EmptyContent => {
            if let Some(v) = json.pointer_mut(text) {
                *v = if api == Api::Embeddings {
                    serde_json::json!([])
                } else {
                    "".into()
                };
            }
        }
        AnswerKind::MissingVector => {
            if let Some(data) = json.get_mut("data").and_then(|d| d.as_array_mut()) {
                data.pop();
            }
        }
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

/// The good answer a request to `path` (`/v1/chat/completions`, `/v1/completions` or
/// `/v1/embeddings`) gets: a batch job's answer to one of its lines (unscripted).
pub(crate) fn good_answer(path: &str, body: &str) -> Option<String> {
    match api_of(path)? {
        Api::Chat => completion(body, &[]),
        Api::Completions => text_completion(body, &[]),
        Api::Embeddings => embeddings(body),
    }
}

fn completion(body: &str, script: &[Scripted]) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(body).ok()?;
    let model = request["model"].as_str()?.to_owned();
    let messages = request["messages"].as_array()?;
    let last = messages.last()?["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let n = request["n"].as_u64().unwrap_or(1).max(1);
    let wants_json = request.get("response_format").is_some_and(|f| !f.is_null());
    let all: Vec<&str> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    let content = if let Some(answer) = scripted(script, &all.join("\n")) {
        answer
    } else if wants_json {
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

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn text_completion(body: &str, script: &[Scripted]) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(body).ok()?;
    let model = request["model"].as_str()?.to_owned();
    let prompt = request["prompt"].as_str()?;
    let text = scripted(script, prompt).unwrap_or_else(|| format!("completion: {prompt}"));
    let (input, output) = (words(prompt), words(&text));
    Some(
        serde_json::json!({
            "id": "cmpl-mock",
            "object": "text_completion",
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
        })
        .to_string(),
    )
}

fn embeddings(body: &str) -> Option<String> {
    use base64::Engine;
    let request: serde_json::Value = serde_json::from_str(body).ok()?;
    let model = request["model"].as_str()?.to_owned();
    let inputs: Vec<String> = match &request["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    if inputs.is_empty() {
        return None;
    }
    let dimensions = request["dimensions"].as_u64().unwrap_or(4) as usize;
    let base64 = request["encoding_format"].as_str() == Some("base64");
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = mock_embedding(text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::Value::from(v.iter().map(|f| f64::from(*f)).collect::<Vec<f64>>())
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t)).sum();
    Some(
        serde_json::json!({
            "object": "list",
            "model": model,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        })
        .to_string(),
    )
}
