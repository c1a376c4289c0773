//! The OpenAI Batch protocol, as [`crate::mock_llm::MockLlm`] serves it beside chat
//! completions: `POST /v1/files` (multipart, purpose `batch`), `GET /v1/files/{id}/content`,
//! `POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/batches` (newest first, `limit` and
//! `after`), `POST /v1/batches/{id}/cancel`.
//!
//! A job is `validating` when created, `in_progress` from the first look on, and done once its
//! processing time has passed (scripted by [`BatchBehaviour`]): then its answers (the same as
//! the chat endpoint's, in reverse order, so a client must match them by `custom_id`) are in
//! its output file and its failed lines in its error file. Scripted: failing lines, expiry, and
//! holds: the server does an upload, a create or half a download and then holds its answer
//! until released, so that a test can kill the client at that exact point. Every created job
//! and every upload is logged.

use crate::http::{self, Request, Response};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the batch side behaves.
#[derive(Debug, Clone, Default)]
pub struct BatchBehaviour {
    /// Time from a job's creation to its completion; `None`: it stays in progress until the
    /// behaviour changes.
    pub processing: Option<Duration>,
    /// Every Nth request line (1-based, counted over all jobs as they complete) fails: it goes
    /// to the error file with HTTP 500.
    pub fail_line_every: Option<u64>,
    /// Jobs expire instead of completing: their first half of lines is answered, the rest
    /// expire (error file, `batch_expired`).
    pub expire: bool,
    /// The server holds its answer after this step until [`crate::mock_llm::MockLlm::release`].
    pub hold: Option<Hold>,
    /// Uploads are refused with HTTP 400 (a server that does not take batch files).
    pub refuse_uploads: bool,
}

/// A point where the server holds its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// After storing an uploaded file, before answering its id.
    Upload,
    /// After creating a job, before answering its id.
    Create,
    /// After sending half of a file's content.
    Content,
}

/// A job as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedJob {
    /// Its id.
    pub id: String,
    /// Its input file.
    pub input_file_id: String,
    /// The endpoint its requests go to (`/v1/chat/completions`).
    pub endpoint: String,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// The `custom_id` of each request line, in order.
    pub custom_ids: Vec<String>,
    /// Each request line's body.
    pub bodies: Vec<serde_json::Value>,
}

/// What the batch side saw.
#[derive(Debug, Clone, Default)]
pub struct BatchLog {
    /// Every job created, in order.
    pub created: Vec<CreatedJob>,
    /// Files uploaded.
    pub uploads: u64,
    /// Jobs listed (`GET /v1/batches` calls).
    pub lists: u64,
    /// Jobs asked to cancel.
    pub cancels: Vec<String>,
    /// Downloads of file content started.
    pub downloads: u64,
}

impl BatchLog {
    /// How many created jobs held each `custom_id`.
    pub fn submissions(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for job in &self.created {
            for id in &job.custom_ids {
                *out.entry(id.clone()).or_default() += 1;
            }
        }
        out
    }
}

struct File {
    bytes: Vec<u8>,
    filename: String,
    purpose: String,
    created_at: u64,
}

struct Job {
    id: String,
    input_file_id: String,
    endpoint: String,
    metadata: BTreeMap<String, String>,
    created_at: u64,
    created: Instant,
    lines: Vec<(String, serde_json::Value)>,
    status: &'static str,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    completed: u64,
    failed: u64,
    errors: Option<serde_json::Value>,
}

#[derive(Default)]
struct Inner {
    behaviour: BatchBehaviour,
    files: BTreeMap<String, File>,
    jobs: Vec<Job>,
    next_id: u64,
    lines_done: u64,
    log: BatchLog,
    held: Vec<Hold>,
}

/// The batch side's state.
#[derive(Default)]
pub(crate) struct State {
    inner: Mutex<Inner>,
    released: Condvar,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &serde_json::json!({"error": {"message": message, "type": "invalid_request_error"}}),
    )
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_behaviour(&self, behaviour: BatchBehaviour) {
        self.lock().behaviour = behaviour;
        self.released.notify_all();
    }

    pub fn log(&self) -> BatchLog {
        self.lock().log.clone()
    }

    /// Waits until the server holds at `hold`, at most `timeout`.
    pub fn wait_held(&self, hold: Hold, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut inner = self.lock();
        while !inner.held.contains(&hold) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .released
                .wait_timeout(inner, left.min(Duration::from_millis(50)))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
        true
    }

    /// Stops holding: held answers go out, and no new hold happens.
    pub fn release(&self) {
        let mut inner = self.lock();
        inner.behaviour.hold = None;
        inner.held.clear();
        drop(inner);
        self.released.notify_all();
    }

    /// Holds here while the behaviour says so (and notes it).
    fn hold(&self, at: Hold) {
        let mut inner = self.lock();
        if inner.behaviour.hold != Some(at) {
            return;
        }
        inner.held.push(at);
        self.released.notify_all();
        while inner.behaviour.hold == Some(at) {
            inner = self.released.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether `path` is the batch side's.
    pub fn serves(path: &str) -> bool {
        path.contains("/files") || path.contains("/batches")
    }

    /// Answers a batch request, writing the response itself (holds may split it). Returns
    /// false when the connection is to close.
    pub fn handle(&self, request: &Request, writer: &mut impl Write) -> bool {
        let path = request.path().trim_end_matches('/');
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let response = match (request.method.as_str(), parts.as_slice()) {
            ("POST", ["files"]) => self.upload(request),
            ("GET", ["files", id, "content"]) => return self.content(id, writer),
            ("GET", ["files", id]) => self.file(id),
            ("POST", ["batches"]) => self.create(request),
            ("GET", ["batches"]) => self.list(request.query()),
            ("GET", ["batches", id]) => self.get(id),
            ("POST", ["batches", id, "cancel"]) => self.cancel(id),
            _ => error(404, "no such route"),
        };
        http::write_response(writer, &response, false).is_ok()
    }

    fn upload(&self, request: &Request) -> Response {
        if self.lock().behaviour.refuse_uploads {
            return error(400, "this server does not take batch files");
        }
        let Some(fields) = multipart(request) else {
            return error(400, "expected a multipart/form-data body");
        };
        let purpose = fields.iter().find(|f| f.name == "purpose");
        let file = fields.iter().find(|f| f.name == "file");
        let (Some(purpose), Some(file)) = (purpose, file) else {
            return error(400, "a file upload needs `purpose` and `file`");
        };
        let purpose = String::from_utf8_lossy(&purpose.data).into_owned();
        if purpose != "batch" {
            return error(400, "only purpose `batch` is served here");
        }
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = format!("file-{:06}", inner.next_id);
        let created_at = now();
        let object = file_object(&id, file.data.len(), &file.filename, &purpose, created_at);
        inner.files.insert(
            id,
            File {
                bytes: file.data.clone(),
                filename: file.filename.clone(),
                purpose,
                created_at,
            },
        );
        inner.log.uploads += 1;
        drop(inner);
        self.hold(Hold::Upload);
        Response::json(200, &object)
    }

    fn file(&self, id: &str) -> Response {
        let inner = self.lock();
        match inner.files.get(id) {
            Some(f) => Response::json(
                200,
                &file_object(id, f.bytes.len(), &f.filename, &f.purpose, f.created_at),
            ),
            None => error(404, "no such file"),
        }
    }

    fn content(&self, id: &str, writer: &mut impl Write) -> bool {
        let bytes = {
            let mut inner = self.lock();
            inner.log.downloads += 1;
            match inner.files.get(id) {
                Some(f) => f.bytes.clone(),
                None => {
                    drop(inner);
                    return http::write_response(writer, &error(404, "no such file"), false)
                        .is_ok();
                }
            }
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        );
        let half = bytes.len() / 2;
        let mut ok = writer.write_all(head.as_bytes()).is_ok()
            && writer.write_all(&bytes[..half]).is_ok()
            && writer.flush().is_ok();
        if ok {
            self.hold(Hold::Content);
            ok = writer.write_all(&bytes[half..]).is_ok() && writer.flush().is_ok();
        }
        ok
    }

    fn create(&self, request: &Request) -> Response {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
            return error(400, "the body is not JSON");
        };
        let (Some(file_id), Some(endpoint), Some(window)) = (
            body["input_file_id"].as_str(),
            body["endpoint"].as_str(),
            body["completion_window"].as_str(),
        ) else {
            return error(
                400,
                "`input_file_id`, `endpoint` and `completion_window` are required",
            );
        };
        if window != "24h" {
            return error(400, "completion_window must be 24h");
        }
        let mut metadata = BTreeMap::new();
        if let Some(map) = body["metadata"].as_object() {
            if map.len() > 16 {
                return error(400, "metadata holds at most 16 pairs");
            }
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return error(400, "metadata values must be strings");
                };
                if k.len() > 64 || v.len() > 512 {
                    return error(400, "metadata keys are at most 64 characters, values 512");
                }
                metadata.insert(k.clone(), v.to_owned());
            }
        }
        let mut inner = self.lock();
        let Some(file) = inner.files.get(file_id) else {
            return error(404, "no such input file");
        };
        let (lines, errors) = validate(&file.bytes, endpoint);
        inner.next_id += 1;
        let id = format!("batch_{:06}", inner.next_id);
        let job = Job {
            id: id.clone(),
            input_file_id: file_id.to_owned(),
            endpoint: endpoint.to_owned(),
            metadata: metadata.clone(),
            created_at: now(),
            created: Instant::now(),
            status: if errors.is_some() {
                "failed"
            } else {
                "validating"
            },
            lines: lines.clone(),
            output_file_id: None,
            error_file_id: None,
            completed: 0,
            failed: 0,
            errors,
        };
        let object = batch_object(&job);
        inner.log.created.push(CreatedJob {
            id,
            input_file_id: file_id.to_owned(),
            endpoint: endpoint.to_owned(),
            metadata,
            custom_ids: lines.iter().map(|(c, _)| c.clone()).collect(),
            bodies: lines.into_iter().map(|(_, b)| b).collect(),
        });
        inner.jobs.push(job);
        drop(inner);
        self.hold(Hold::Create);
        Response::json(200, &object)
    }

    fn get(&self, id: &str) -> Response {
        let mut inner = self.lock();
        let Some(i) = inner.jobs.iter().position(|j| j.id == id) else {
            return error(404, "no such batch");
        };
        advance(&mut inner, i);
        Response::json(200, &batch_object(&inner.jobs[i]))
    }

    fn list(&self, query: &str) -> Response {
        let pairs = http::form_pairs(query);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let limit = get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(20)
            .clamp(1, 100);
        let mut inner = self.lock();
        inner.log.lists += 1;
        for i in 0..inner.jobs.len() {
            advance(&mut inner, i);
        }
        let newest: Vec<&Job> = inner.jobs.iter().rev().collect();
        let start = match get("after") {
            Some(after) => newest
                .iter()
                .position(|j| j.id == after)
                .map_or(newest.len(), |p| p + 1),
            None => 0,
        };
        let page: Vec<serde_json::Value> = newest
            .iter()
            .skip(start)
            .take(limit)
            .map(|j| batch_object(j))
            .collect();
        let has_more = start + page.len() < newest.len();
        Response::json(
            200,
            &serde_json::json!({
                "object": "list",
                "data": page,
                "first_id": page.first().map(|b| b["id"].clone()),
                "last_id": page.last().map(|b| b["id"].clone()),
                "has_more": has_more,
            }),
        )
    }

    fn cancel(&self, id: &str) -> Response {
        let mut inner = self.lock();
        let Some(i) = inner.jobs.iter().position(|j| j.id == id) else {
            return error(404, "no such batch");
        };
        advance(&mut inner, i);
        let job = &mut inner.jobs[i];
        if matches!(job.status, "validating" | "in_progress" | "finalizing") {
            job.status = "cancelling";
        }
        let object = batch_object(job);
        inner.log.cancels.push(id.to_owned());
        Response::json(200, &object)
    }
}

/// Moves job `i` on as time and the behaviour say.
fn advance(inner: &mut Inner, i: usize) {
    let behaviour = inner.behaviour.clone();
    let job = &mut inner.jobs[i];
    match job.status {
        "validating" => job.status = "in_progress",
        "cancelling" => {
            job.status = "cancelled";
            return;
        }
        _ => {}
    }
    if job.status != "in_progress" {
        return;
    }
    let due = behaviour
        .processing
        .is_some_and(|d| job.created.elapsed() >= d);
    if !due {
        return;
    }
    let mut output = Vec::new();
    let mut errors = Vec::new();
    let half = job.lines.len().div_ceil(2);
    let lines = job.lines.clone();
    for (n, (custom_id, body)) in lines.iter().enumerate() {
        inner.lines_done += 1;
        let request_id = format!("req_{:08}", inner.lines_done);
        let line_id = format!("batch_req_{:08}", inner.lines_done);
        if behaviour.expire && n >= half {
            errors.push(serde_json::json!({
                "id": line_id, "custom_id": custom_id, "response": null,
                "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}
            }));
        } else if behaviour
            .fail_line_every
            .is_some_and(|k| k > 0 && inner.lines_done.is_multiple_of(k))
        {
            errors.push(serde_json::json!({
                "id": line_id, "custom_id": custom_id,
                "response": {"status_code": 500, "request_id": request_id,
                             "body": {"error": {"message": "the server had an error", "type": "server_error"}}},
                "error": null
            }));
        } else {
            let answer = crate::mock_llm::good_answer(&job.endpoint, &body.to_string())
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            match answer {
                Some(answer) => output.push(serde_json::json!({
                    "id": line_id, "custom_id": custom_id,
                    "response": {"status_code": 200, "request_id": request_id, "body": answer},
                    "error": null
                })),
                None => errors.push(serde_json::json!({
                    "id": line_id, "custom_id": custom_id,
                    "response": {"status_code": 400, "request_id": request_id,
                                 "body": {"error": {"message": "bad request body", "type": "invalid_request_error"}}},
                    "error": null
                })),
            }
        }
    }
    // In no particular order, as the protocol says: here, reversed.
    output.reverse();
    let (completed, failed) = (output.len() as u64, errors.len() as u64);
    let mut file_of = |lines: Vec<serde_json::Value>, name: &str| {
        if lines.is_empty() {
            return None;
        }
        inner.next_id += 1;
        let id = format!("file-{:06}", inner.next_id);
        let bytes = lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes();
        inner.files.insert(
            id.clone(),
            File {
                bytes,
                filename: name.to_owned(),
                purpose: "batch_output".into(),
                created_at: now(),
            },
        );
        Some(id)
    };
    let output_file_id = file_of(output, "output.jsonl");
    let error_file_id = file_of(errors, "errors.jsonl");
    let job = &mut inner.jobs[i];
    job.output_file_id = output_file_id;
    job.error_file_id = error_file_id;
    job.completed = completed;
    job.failed = failed;
    job.status = if behaviour.expire {
        "expired"
    } else {
        "completed"
    };
}

/// The request lines of an input file, or the validation errors that fail the job.
#[allow(clippy::type_complexity)]
fn validate(
    bytes: &[u8],
    endpoint: &str,
) -> (Vec<(String, serde_json::Value)>, Option<serde_json::Value>) {
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut errors = Vec::new();
    for (n, line) in String::from_utf8_lossy(bytes).lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fail = |code: &str, message: &str| {
            errors.push(serde_json::json!({"code": code, "message": message, "line": n + 1}));
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            fail("invalid_json_line", "the line is not JSON");
            continue;
        };
        let custom_id = value["custom_id"].as_str().unwrap_or_default().to_owned();
        if custom_id.is_empty() {
            fail("missing_custom_id", "each line needs a custom_id");
        } else if !seen.insert(custom_id.clone()) {
            fail("duplicate_custom_id", "custom_id is used twice");
        } else if value["method"] != "POST" {
            fail("invalid_method", "the method must be POST");
        } else if value["url"].as_str() != Some(endpoint) {
            fail(
                "mismatched_url",
                "the line's url is not the batch's endpoint",
            );
        } else if !value["body"].is_object() {
            fail("missing_body", "each line needs a body");
        } else {
            lines.push((custom_id, value["body"].clone()));
        }
    }
    if lines.len() > 50_000 {
        errors.push(
            serde_json::json!({"code": "too_many_requests", "message": "at most 50,000 requests", "line": null}),
        );
    }
    let errors =
        (!errors.is_empty()).then(|| serde_json::json!({"object": "list", "data": errors}));
    (lines, errors)
}

fn file_object(
    id: &str,
    bytes: usize,
    filename: &str,
    purpose: &str,
    created: u64,
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "object": "file", "bytes": bytes, "created_at": created,
        "filename": filename, "purpose": purpose, "status": "processed",
    })
}

fn batch_object(job: &Job) -> serde_json::Value {
    let at = |status: &str| (job.status == status).then_some(job.created_at);
    serde_json::json!({
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint,
        "errors": job.errors,
        "input_file_id": job.input_file_id,
        "completion_window": "24h",
        "status": job.status,
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "created_at": job.created_at,
        "in_progress_at": null,
        "expires_at": job.created_at + 86_400,
        "finalizing_at": null,
        "completed_at": at("completed"),
        "failed_at": at("failed"),
        "expired_at": at("expired"),
        "cancelling_at": at("cancelling"),
        "cancelled_at": at("cancelled"),
        "request_counts": {
            "total": job.lines.len(),
            "completed": job.completed,
            "failed": job.failed,
        },
        "metadata": job.metadata,
    })
}

/// One field of a multipart form.
struct Field {
    name: String,
    filename: String,
    data: Vec<u8>,
}

/// The fields of a `multipart/form-data` body.
fn multipart(request: &Request) -> Option<Vec<Field>> {
    let content_type = request.header("content-type")?;
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let body = &request.body;
    let mut fields = Vec::new();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(fields);
        }
        at += 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", at)?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let next = find(body, &delimiter, head_end)?;
        let data = body[head_end + 4..next.saturating_sub(2)].to_vec();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let param = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_owned())
        };
        fields.push(Field {
            name: param("name")?,
            filename: param("filename").unwrap_or_default(),
            data,
        });
        at = next + delimiter.len();
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}
