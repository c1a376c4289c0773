//! A Hugging Face Hub on 127.0.0.1 for dataset repos: the plain HTTP + Git LFS upload protocol
//! (create, preupload, LFS batch, upload, verify, NDJSON commit) and the reads the official
//! client makes (repo info, tree, paths-info, commits, resolve with `HEAD`/`GET`/`Range`), as
//! described in the project's hub-protocol note.
//!
//! State lives in memory: repos with every commit's file set, LFS objects by sha256, scripted
//! faults, and a log of every request. Only the `main` branch exists; a revision may also be
//! any commit oid of the repo. Commit oids are 40 hex characters (blake3, truncated), as are
//! blob oids (blake3 of the git blob, not git's SHA-1). A new repo has one hidden root commit
//! with no files (not listed by [`MockHub::commits`]) so that it always has a `sha`.
//!
//! LFS upload URLs (`/__lfs/{oid}`) take no token, like the real Hub's signed storage URLs;
//! every other call needs `authorization: Bearer <token>` when [`HubBehaviour::token`] is set.

use crate::http::{self, Incoming, Request, Response, form_pairs, percent_decode};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Files over this size go to LFS (the Hub's limit for regular files, 10 MB).
const LFS_THRESHOLD: u64 = 10_000_000;
/// The user every token belongs to, and the namespace of repos created without one.
const USER: &str = "mock-user";

/// Who may do what.
#[derive(Debug, Clone, Default)]
pub struct HubBehaviour {
    /// Token with write access. Requests without `authorization: Bearer <token>` get 401
    /// (`X-Error-Code: Unauthorized`, JSON `{"error": "..."}`) when Some.
    pub token: Option<String>,
    /// A token that can read but not write: writes answer 403.
    pub read_only_token: Option<String>,
    /// LFS objects larger than this are uploaded in parts of this size (Git LFS "multipart":
    /// numbered part URLs and `chunk_size` in the upload action's header, then a completion
    /// call listing each part's ETag), as the real Hub asks for large files.
    pub multipart_chunk_size: Option<usize>,
    /// Reads of public repos (repo info, tree, resolve) need no token, as on the real Hub;
    /// private repos still answer 401 to a request without a valid token. Off: every request
    /// needs a token when one is set.
    pub public_reads: bool,
}

/// Scripted failures, counted down as they strike.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The next N LFS object uploads (PUT) answer 500 without storing.
    pub fail_uploads: u32,
    /// The next N commits answer 500 without applying.
    pub fail_commits: u32,
    /// The next N commits answer 200 with `{"ok": true}` (no commit id) without applying.
    pub commits_without_oid: u32,
    /// The next N commits hang (never answer, connection held) without applying.
    pub hang_commits: u32,
    /// The next N commits are applied, then the answer is delayed by `delay` (a client killed
    /// meanwhile has committed on the Hub without knowing it).
    pub delay_after_commit: u32,
    /// How long a delayed commit's answer waits.
    pub delay: Duration,
    /// The next N downloads of LFS files (`GET .../resolve/...`) send their headers with the
    /// full length, then half the body, and close the connection.
    pub cut_downloads: u32,
    /// The next N downloads of LFS files send their bytes with the last one changed.
    pub corrupt_downloads: u32,
}

/// One applied commit.
#[derive(Debug, Clone)]
pub struct HubCommit {
    /// `ns/name`.
    pub repo: String,
    /// The header's summary (commit title).
    pub summary: String,
    /// Paths added or replaced (regular and LFS files), in request order.
    pub added: Vec<String>,
    /// Paths deleted (each file of a deleted folder), in request order.
    pub deleted: Vec<String>,
    /// The commit oid, 40 hex characters.
    pub oid: String,
}

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct HubRequest {
    /// `GET`, `HEAD`, `POST`, `PUT`, ...
    pub method: String,
    /// The path, percent-encoded as sent, without the query.
    pub path: String,
    /// Status answered; 0 for a commit left hanging.
    pub status: u16,
    /// The `authorization` header, as sent.
    pub authorization: Option<String>,
    /// Bytes in the (de-chunked) body.
    pub body_len: usize,
    /// The `range` header, as sent.
    pub range: Option<String>,
}

/// A file of a revision.
#[derive(Debug, Clone)]
enum Blob {
    /// Stored in git.
    Regular(Arc<Vec<u8>>),
    /// An LFS pointer to an object of the store.
    Lfs { sha256: String, size: u64 },
}

/// A commit and the files it leaves.
#[derive(Debug, Clone)]
struct Revision {
    commit: HubCommit,
    date: String,
    files: BTreeMap<String, Blob>,
}

#[derive(Debug)]
struct Repo {
    private: bool,
    created: String,
    /// The hidden root commit first, then the applied ones.
    revisions: Vec<Revision>,
}

impl Repo {
    fn head(&self) -> &Revision {
        // Never empty: the root commit is pushed at creation.
        &self.revisions[self.revisions.len() - 1]
    }

    /// `main` or a commit oid.
    fn revision(&self, rev: &str) -> Option<&Revision> {
        if rev == "main" {
            return Some(self.head());
        }
        self.revisions.iter().find(|r| r.commit.oid == rev)
    }
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    /// LFS objects by sha256.
    objects: HashMap<String, Arc<Vec<u8>>>,
    /// Parts of multipart uploads not completed yet, by (oid, part number).
    parts: HashMap<(String, u32), Vec<u8>>,
    faults: Faults,
    requests: Vec<HubRequest>,
    bodies: Vec<Vec<u8>>,
    serial: u64,
}

struct Shared {
    behaviour: HubBehaviour,
    port: u16,
    stop: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running double; stops when dropped.
pub struct MockHub {
    shared: Arc<Shared>,
    _server: http::Server,
}

impl MockHub {
    /// Starts a double on a free loopback port.
    pub fn start(behaviour: HubBehaviour) -> MockHub {
        Self::start_on(0, behaviour)
    }

    /// Starts a double on `port` (0: any free port).
    pub fn start_on(port: u16, behaviour: HubBehaviour) -> MockHub {
        let (listener, port) = http::Server::bind(port);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            behaviour,
            port,
            stop: stop.clone(),
            state: Mutex::new(State::default()),
        });
        let server = {
            let shared = shared.clone();
            http::Server::start(listener, stop, move |stream| serve(&shared, stream))
        };
        MockHub {
            shared,
            _server: server,
        }
    }

    /// The endpoint, `http://127.0.0.1:PORT` (what `HF_ENDPOINT` takes).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Replaces the fault counters.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.state().faults = faults;
    }

    /// The faults not yet struck.
    pub fn faults(&self) -> Faults {
        self.shared.state().faults.clone()
    }

    /// Dataset repos, `ns/name`, sorted.
    pub fn repos(&self) -> Vec<String> {
        self.shared.state().repos.keys().cloned().collect()
    }

    /// Whether `repo` is private; None when it does not exist.
    pub fn is_private(&self, repo: &str) -> Option<bool> {
        self.shared.state().repos.get(repo).map(|r| r.private)
    }

    /// The files at the head of `main`, LFS pointers resolved to their bytes (empty when the
    /// repo does not exist).
    pub fn files(&self, repo: &str) -> BTreeMap<String, Vec<u8>> {
        let state = self.shared.state();
        let Some(repo) = state.repos.get(repo) else {
            return BTreeMap::new();
        };
        repo.head()
            .files
            .iter()
            .map(|(path, blob)| (path.clone(), blob_bytes(&state, blob).unwrap_or_default()))
            .collect()
    }

    /// The commits applied to `repo`, oldest first (the hidden root commit excluded).
    pub fn commits(&self, repo: &str) -> Vec<HubCommit> {
        let state = self.shared.state();
        state.repos.get(repo).map_or_else(Vec::new, |r| {
            r.revisions[1..].iter().map(|r| r.commit.clone()).collect()
        })
    }

    /// Every request received, in the order they were answered (a hanging or delayed commit
    /// is logged when its fate is decided, before the wait).
    pub fn requests(&self) -> Vec<HubRequest> {
        self.shared.state().requests.clone()
    }

    /// Every request body received, in the same order as [`MockHub::requests`].
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.shared.state().bodies.clone()
    }
}

/// What to do with a request.
enum Outcome {
    Answer(Response),
    /// Hold the connection without answering until the double stops.
    Hang,
    /// Answer after a while.
    Late(Response, Duration),
    /// Send this (a body shorter than its `Content-Length`), then close the connection.
    Cut(Response),
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
                let _ = http::write_response(&mut writer, &error(400, None, &why), false);
                return;
            }
        };
        let outcome = handle(shared, &request);
        let status = match &outcome {
            Outcome::Answer(r) | Outcome::Late(r, _) | Outcome::Cut(r) => r.status,
            Outcome::Hang => 0,
        };
        {
            let mut state = shared.state();
            state.requests.push(HubRequest {
                method: request.method.clone(),
                path: request.path().to_owned(),
                status,
                authorization: request.header("authorization").map(str::to_owned),
                body_len: request.body.len(),
                range: request.header("range").map(str::to_owned),
            });
            state.bodies.push(request.body.clone());
        }
        let response = match outcome {
            Outcome::Answer(r) => r,
            Outcome::Cut(r) => {
                let _ = http::write_response(&mut writer, &r, false);
                return;
            }
            Outcome::Late(r, delay) => {
                std::thread::sleep(delay);
                r
            }
            Outcome::Hang => {
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        };
        let head_only = request.method == "HEAD";
        if http::write_response(&mut writer, &response, head_only).is_err() || request.wants_close()
        {
            return;
        }
    }
}

/// A JSON error with an optional `X-Error-Code`.
fn error(status: u16, code: Option<&str>, message: &str) -> Response {
    let mut response = Response::json(status, &serde_json::json!({ "error": message }));
    if let Some(code) = code {
        response = response.with("X-Error-Code", code);
    }
    // Header values must stay on one line.
    response.with("X-Error-Message", message.replace(['\r', '\n'], " "))
}

fn ok(value: serde_json::Value) -> Response {
    Response::json(200, &value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Denied,
    Read,
    Write,
}

fn access(behaviour: &HubBehaviour, request: &Request) -> Access {
    if behaviour.token.is_none() && behaviour.read_only_token.is_none() {
        return Access::Write;
    }
    let bearer = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer {
        Some(t) if behaviour.token.as_deref() == Some(t) => Access::Write,
        Some(t) if behaviour.read_only_token.as_deref() == Some(t) => Access::Read,
        _ => Access::Denied,
    }
}

/// The base URL the client used, for the URLs in answers.
fn base_url(shared: &Shared, request: &Request) -> String {
    match request.header("host") {
        Some(host) if !host.is_empty() => format!("http://{host}"),
        _ => format!("http://127.0.0.1:{}", shared.port),
    }
}

fn handle(shared: &Shared, request: &Request) -> Outcome {
    let segments: Vec<String> = request
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method.as_str();
    let base = base_url(shared, request);
    // Storage URLs handed out by the LFS batch call: no Hub token, like a signed URL.
    match (method, s.as_slice()) {
        ("PUT", ["__lfs", oid]) => return Outcome::Answer(put_object(shared, oid, request)),
        ("PUT", ["__lfs", oid, "part", n]) => {
            return Outcome::Answer(put_part(shared, oid, n, request));
        }
        ("POST", ["__lfs", oid, "complete"]) => {
            return Outcome::Answer(complete_parts(shared, oid, request));
        }
        ("GET", ["__lfs", oid]) => {
            let state = shared.state();
            return Outcome::Answer(match state.objects.get(*oid) {
                Some(bytes) => Response::new(200, "application/octet-stream", bytes.to_vec()),
                None => error(404, None, "object not found"),
            });
        }
        _ => {}
    }
    let access = access(&shared.behaviour, request);
    if access == Access::Denied && !public_read(shared, request, &s) {
        return Outcome::Answer(error(
            401,
            Some("Unauthorized"),
            "Invalid credentials in Authorization header",
        ));
    }
    let writes = matches!(
        (method, s.as_slice()),
        ("POST", ["api", "repos", "create"])
            | ("DELETE", ["api", "repos", "delete"])
            | ("POST", ["api", "datasets", _, _, "preupload" | "commit", _])
            | (
                "POST",
                ["datasets", _, _, "info", "lfs", "objects", "batch"]
            )
            | ("POST", ["__lfs", _, "verify"])
    );
    if writes && access != Access::Write {
        return Outcome::Answer(error(
            403,
            None,
            "You don't have the rights to write to this repository (read-only token)",
        ));
    }
    let answer = match (method, s.as_slice()) {
        ("GET", ["api", "whoami-v2"]) => whoami(access),
        ("POST", ["api", "repos", "create"]) => create_repo(shared, &base, &request.body),
        ("DELETE", ["api", "repos", "delete"]) => delete_repo(shared, &request.body),
        ("POST", ["api", "validate-yaml"]) => ok(serde_json::json!({"errors": [], "warnings": []})),
        ("GET", ["api", "datasets", ns, name]) => {
            repo_info(shared, &format!("{ns}/{name}"), "main")
        }
        ("GET", ["api", "datasets", ns, name, "revision", rev]) => {
            repo_info(shared, &format!("{ns}/{name}"), rev)
        }
        ("POST", ["api", "datasets", ns, name, "preupload", rev]) => {
            preupload(shared, &format!("{ns}/{name}"), rev, &request.body)
        }
        ("POST", ["api", "datasets", ns, name, "commit", rev]) => {
            return commit(shared, &base, &format!("{ns}/{name}"), rev, request);
        }
        ("GET", ["api", "datasets", ns, name, "tree", rev, rest @ ..]) => {
            let recursive = form_pairs(request.query())
                .iter()
                .any(|(k, v)| k == "recursive" && (v.eq_ignore_ascii_case("true") || v == "1"));
            tree(
                shared,
                &format!("{ns}/{name}"),
                rev,
                &rest.join("/"),
                recursive,
            )
        }
        ("POST", ["api", "datasets", ns, name, "paths-info", rev]) => {
            paths_info(shared, &format!("{ns}/{name}"), rev, request)
        }
        ("GET", ["api", "datasets", ns, name, "commits", rev]) => {
            list_commits(shared, &format!("{ns}/{name}"), rev)
        }
        ("POST", ["datasets", ns, git, "info", "lfs", "objects", "batch"])
            if git.ends_with(".git") =>
        {
            let name = git.trim_end_matches(".git");
            lfs_batch(shared, &base, &format!("{ns}/{name}"), &request.body)
        }
        ("POST", ["__lfs", oid, "verify"]) => verify_object(shared, oid, &request.body),
        ("GET" | "HEAD", ["datasets", ns, name, "resolve", rev, rest @ ..]) if !rest.is_empty() => {
            return resolve(
                shared,
                &format!("{ns}/{name}"),
                rev,
                &rest.join("/"),
                request,
            );
        }
        _ => {
            eprintln!("mock_hub: unhandled {method} {}", request.target);
            error(
                404,
                None,
                &format!("no route for {method} {}", request.path()),
            )
        }
    };
    Outcome::Answer(answer)
}

/// Whether `request` reads a public repo (repo info, tree, paths-info, commits, resolve) and
/// the double lets such reads go without a token.
fn public_read(shared: &Shared, request: &Request, s: &[&str]) -> bool {
    if !shared.behaviour.public_reads || request.header("authorization").is_some() {
        return false;
    }
    let repo = match (request.method.as_str(), s) {
        ("GET" | "HEAD", ["datasets", ns, name, "resolve", ..])
        | ("GET", ["api", "datasets", ns, name, ..])
        | ("POST", ["api", "datasets", ns, name, "paths-info", _]) => format!("{ns}/{name}"),
        _ => return false,
    };
    shared.state().repos.get(&repo).is_some_and(|r| !r.private)
}

fn whoami(access: Access) -> Response {
    let role = if access == Access::Write {
        "write"
    } else {
        "read"
    };
    ok(serde_json::json!({
        "type": "user",
        "id": "000000000000000000000001",
        "name": USER,
        "fullname": "Mock User",
        "email": null,
        "emailVerified": false,
        "isPro": false,
        "orgs": [],
        "auth": {"type": "access_token", "accessToken": {"displayName": "mock", "role": role}},
    }))
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, Response> {
    serde_json::from_slice(body).map_err(|e| error(400, None, &format!("invalid JSON body: {e}")))
}

/// A repo name part: letters, digits, `-`, `_`, `.`; 1 to 96 characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 96
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// The `ns/name` of a create or delete body, checking the type.
fn repo_id_of(value: &serde_json::Value) -> Result<String, Response> {
    let name = value["name"].as_str().unwrap_or("");
    let namespace = value["organization"].as_str().unwrap_or(USER);
    if !valid_name(name) || !valid_name(namespace) {
        return Err(error(
            400,
            None,
            &format!("invalid repo name {namespace}/{name}"),
        ));
    }
    if value["type"].as_str() != Some("dataset") {
        return Err(error(400, None, "the double only holds dataset repos"));
    }
    Ok(format!("{namespace}/{name}"))
}

fn create_repo(shared: &Shared, base: &str, body: &[u8]) -> Response {
    let value = match parse_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let id = match repo_id_of(&value) {
        Ok(id) => id,
        Err(e) => return e,
    };
    let url = format!("{base}/datasets/{id}");
    let private =
        value["visibility"].as_str() == Some("private") || value["private"].as_bool() == Some(true);
    let mut state = shared.state();
    if state.repos.contains_key(&id) {
        return Response::json(
            409,
            &serde_json::json!({"error": "You already created this dataset repo", "url": url}),
        );
    }
    state.serial += 1;
    let date = iso_now();
    let root = HubCommit {
        repo: id.clone(),
        summary: "initial commit".to_owned(),
        added: Vec::new(),
        deleted: Vec::new(),
        oid: short_hash(&[id.as_bytes(), &state.serial.to_le_bytes(), b"root"]),
    };
    state.repos.insert(
        id.clone(),
        Repo {
            private,
            created: date.clone(),
            revisions: vec![Revision {
                commit: root,
                date,
                files: BTreeMap::new(),
            }],
        },
    );
    ok(serde_json::json!({"url": url, "name": id, "id": id}))
}

fn delete_repo(shared: &Shared, body: &[u8]) -> Response {
    let id = match parse_json(body).and_then(|v| repo_id_of(&v)) {
        Ok(id) => id,
        Err(e) => return e,
    };
    match shared.state().repos.remove(&id) {
        Some(_) => ok(serde_json::json!({})),
        None => repo_not_found(&id),
    }
}

fn repo_not_found(id: &str) -> Response {
    error(
        404,
        Some("RepoNotFound"),
        &format!("Repository not found: {id}"),
    )
}

fn revision_not_found(rev: &str) -> Response {
    error(
        404,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {rev}"),
    )
}

fn entry_not_found(path: &str) -> Response {
    error(
        404,
        Some("EntryNotFound"),
        &format!("Entry not found: {path}"),
    )
}

/// The revision `rev` of repo `id`, or the 404 to answer.
fn find<'a>(state: &'a State, id: &str, rev: &str) -> Result<(&'a Repo, &'a Revision), Response> {
    let repo = state.repos.get(id).ok_or_else(|| repo_not_found(id))?;
    let revision = repo.revision(rev).ok_or_else(|| revision_not_found(rev))?;
    Ok((repo, revision))
}

/// The text of an LFS pointer file.
fn pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// A 40-hex oid: blake3 of the parts, truncated (stands for git's SHA-1).
fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex()[..40].to_owned()
}

/// The blob oid of a file as git would store it (the pointer for an LFS file).
fn blob_oid(blob: &Blob) -> String {
    match blob {
        Blob::Regular(bytes) => short_hash(&[b"blob", bytes]),
        Blob::Lfs { sha256, size } => short_hash(&[b"blob", pointer(sha256, *size).as_bytes()]),
    }
}

fn blob_size(blob: &Blob) -> u64 {
    match blob {
        Blob::Regular(bytes) => bytes.len() as u64,
        Blob::Lfs { size, .. } => *size,
    }
}

fn blob_bytes(state: &State, blob: &Blob) -> Option<Vec<u8>> {
    match blob {
        Blob::Regular(bytes) => Some(bytes.to_vec()),
        Blob::Lfs { sha256, .. } => state.objects.get(sha256).map(|b| b.to_vec()),
    }
}

fn file_entry(path: &str, blob: &Blob) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "type": "file",
        "oid": blob_oid(blob),
        "size": blob_size(blob),
        "path": path,
    });
    if let Blob::Lfs { sha256, size } = blob {
        entry["lfs"] = serde_json::json!({
            "oid": sha256,
            "size": size,
            "pointerSize": pointer(sha256, *size).len(),
        });
    }
    entry
}

fn dir_entry(path: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "directory",
        "oid": short_hash(&[b"tree", path.as_bytes()]),
        "size": 0,
        "path": path,
    })
}

/// Every directory holding a file of `files`.
fn directories(files: &BTreeMap<String, Blob>) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for path in files.keys() {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            dirs.insert(path[..end].to_owned());
            end += 1;
        }
    }
    dirs
}

fn repo_info(shared: &Shared, id: &str, rev: &str) -> Response {
    let state = shared.state();
    let (repo, revision) = match find(&state, id, rev) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let siblings: Vec<serde_json::Value> = revision
        .files
        .iter()
        .map(|(path, blob)| {
            let mut sibling = serde_json::json!({
                "rfilename": path,
                "size": blob_size(blob),
                "blobId": blob_oid(blob),
            });
            if let Blob::Lfs { sha256, size } = blob {
                sibling["lfs"] = serde_json::json!({
                    "sha256": sha256,
                    "size": size,
                    "pointerSize": pointer(sha256, *size).len(),
                });
            }
            sibling
        })
        .collect();
    let used: u64 = revision.files.values().map(blob_size).sum();
    let author = id.split('/').next().unwrap_or(USER);
    ok(serde_json::json!({
        "_id": short_hash(&[id.as_bytes()])[..24],
        "id": id,
        "author": author,
        "sha": revision.commit.oid,
        "lastModified": revision.date,
        "createdAt": repo.created,
        "private": repo.private,
        "gated": false,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "cardData": {},
        "siblings": siblings,
        "usedStorage": used,
    }))
}

/// Whether the first bytes of a file look binary (a NUL, or not UTF-8 before a cut character).
fn looks_binary(sample: &[u8]) -> bool {
    if sample.contains(&0) {
        return true;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => false,
        // A multi-byte character cut at the end of the sample is still text.
        Err(e) => e.error_len().is_some(),
    }
}

fn preupload(shared: &Shared, id: &str, rev: &str, body: &[u8]) -> Response {
    let value = match parse_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let state = shared.state();
    let (_, revision) = match find(&state, id, rev) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let Some(files) = value["files"].as_array() else {
        return error(400, None, "`files` must be a list");
    };
    let mut answers = Vec::new();
    for file in files {
        let (Some(path), Some(size)) = (file["path"].as_str(), file["size"].as_u64()) else {
            return error(400, None, "each file needs `path` and `size`");
        };
        let sample = file["sample"].as_str().unwrap_or("");
        let Ok(sample) = base64::engine::general_purpose::STANDARD.decode(sample) else {
            return error(400, None, &format!("{path}: `sample` is not base64"));
        };
        let lfs = path.to_ascii_lowercase().ends_with(".parquet")
            || sample.starts_with(b"PAR1")
            || size > LFS_THRESHOLD
            || looks_binary(&sample);
        let oid = revision.files.get(path).map(|blob| match blob {
            Blob::Lfs { sha256, .. } => sha256.clone(),
            Blob::Regular(_) => blob_oid(blob),
        });
        answers.push(serde_json::json!({
            "path": path,
            "uploadMode": if lfs { "lfs" } else { "regular" },
            "shouldIgnore": false,
            "oid": oid,
        }));
    }
    ok(serde_json::json!({ "files": answers }))
}

fn valid_sha256(oid: &str) -> bool {
    oid.len() == 64
        && oid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn lfs_batch(shared: &Shared, base: &str, id: &str, body: &[u8]) -> Response {
    let value = match parse_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let state = shared.state();
    if !state.repos.contains_key(id) {
        return repo_not_found(id);
    }
    let operation = value["operation"].as_str().unwrap_or("");
    if operation != "upload" && operation != "download" {
        return error(400, None, "`operation` must be upload or download");
    }
    let Some(objects) = value["objects"].as_array() else {
        return error(400, None, "`objects` must be a list");
    };
    let mut answers = Vec::new();
    for object in objects {
        let oid = object["oid"].as_str().unwrap_or("");
        let Some(size) = object["size"].as_u64().filter(|_| valid_sha256(oid)) else {
            answers.push(serde_json::json!({
                "oid": oid, "size": object["size"],
                "error": {"code": 422, "message": "invalid oid or size"},
            }));
            continue;
        };
        let stored = state.objects.get(oid).map(|b| b.len() as u64);
        let answer = match (operation, stored) {
            ("upload", Some(s)) if s == size => serde_json::json!({"oid": oid, "size": size}),
            ("upload", _) => {
                let upload = match shared.behaviour.multipart_chunk_size {
                    Some(chunk) if chunk > 0 && size > chunk as u64 => {
                        let mut header = serde_json::Map::new();
                        header.insert("chunk_size".into(), chunk.to_string().into());
                        for n in 1..=size.div_ceil(chunk as u64) {
                            header.insert(
                                format!("{n:05}"),
                                format!("{base}/__lfs/{oid}/part/{n}").into(),
                            );
                        }
                        serde_json::json!({
                            "href": format!("{base}/__lfs/{oid}/complete?size={size}"),
                            "header": header,
                        })
                    }
                    _ => serde_json::json!({
                        "href": format!("{base}/__lfs/{oid}?size={size}"), "header": {}
                    }),
                };
                serde_json::json!({
                    "oid": oid,
                    "size": size,
                    "authenticated": true,
                    "actions": {
                        "upload": upload,
                        "verify": {"href": format!("{base}/__lfs/{oid}/verify"), "header": {}},
                    },
                })
            }
            (_, Some(s)) if s == size => serde_json::json!({
                "oid": oid,
                "size": size,
                "authenticated": true,
                "actions": {"download": {"href": format!("{base}/__lfs/{oid}"), "header": {}}},
            }),
            _ => serde_json::json!({
                "oid": oid, "size": size,
                "error": {"code": 404, "message": "object does not exist"},
            }),
        };
        answers.push(answer);
    }
    let text = serde_json::json!({"transfer": "basic", "objects": answers}).to_string();
    Response::new(200, "application/vnd.git-lfs+json", text)
}

fn put_object(shared: &Shared, oid: &str, request: &Request) -> Response {
    // Hashed before taking the lock: other connections go on meanwhile.
    let digest = hex(&Sha256::digest(&request.body));
    let mut state = shared.state();
    if state.faults.fail_uploads > 0 {
        state.faults.fail_uploads -= 1;
        return error(500, None, "scripted upload failure");
    }
    if !valid_sha256(oid) {
        return error(400, None, "invalid oid");
    }
    let expected_size = form_pairs(request.query())
        .into_iter()
        .find(|(k, _)| k == "size")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if expected_size.is_some_and(|n| n != request.body.len()) {
        return error(
            400,
            None,
            &format!(
                "size mismatch: announced {expected_size:?}, received {}",
                request.body.len()
            ),
        );
    }
    if digest != oid {
        return error(400, None, &format!("sha256 mismatch: received {digest}"));
    }
    state
        .objects
        .insert(oid.to_owned(), Arc::new(request.body.clone()));
    Response::new(200, "text/plain", "").with("ETag", format!("\"{oid}\""))
}

/// One part of a multipart upload; its ETag is what the completion call must list.
fn put_part(shared: &Shared, oid: &str, number: &str, request: &Request) -> Response {
    let mut state = shared.state();
    if state.faults.fail_uploads > 0 {
        state.faults.fail_uploads -= 1;
        return error(500, None, "scripted upload failure");
    }
    let Some(number) = number.parse::<u32>().ok().filter(|n| *n > 0) else {
        return error(400, None, "bad part number");
    };
    let etag = part_etag(&request.body);
    state
        .parts
        .insert((oid.to_owned(), number), request.body.clone());
    Response::new(200, "text/plain", "").with("ETag", etag)
}

fn part_etag(bytes: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(bytes).to_hex()[..32])
}

/// Completes a multipart upload: the parts listed, in order, with their ETags, must make the
/// object (its sha256 and size).
fn complete_parts(shared: &Shared, oid: &str, request: &Request) -> Response {
    let value = match parse_json(&request.body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if value["oid"].as_str() != Some(oid) {
        return error(400, None, "oid mismatch");
    }
    let Some(listed) = value["parts"].as_array() else {
        return error(400, None, "`parts` must be a list");
    };
    let mut state = shared.state();
    let mut bytes = Vec::new();
    for (i, part) in listed.iter().enumerate() {
        let number = part["partNumber"].as_u64().unwrap_or(0) as u32;
        if number as usize != i + 1 {
            return error(400, None, "parts must be listed in order from 1");
        }
        let Some(data) = state.parts.get(&(oid.to_owned(), number)) else {
            return error(400, None, &format!("part {number} was not uploaded"));
        };
        if part["etag"].as_str() != Some(part_etag(data).as_str()) {
            return error(400, None, &format!("part {number}: ETag mismatch"));
        }
        bytes.extend_from_slice(data);
    }
    let expected_size = form_pairs(request.query())
        .into_iter()
        .find(|(k, _)| k == "size")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if expected_size.is_some_and(|n| n != bytes.len()) || hex(&Sha256::digest(&bytes)) != oid {
        return error(400, None, "the parts do not make the announced object");
    }
    state.parts.retain(|(o, _), _| o != oid);
    state.objects.insert(oid.to_owned(), Arc::new(bytes));
    ok(serde_json::json!({"success": true}))
}

fn verify_object(shared: &Shared, oid: &str, body: &[u8]) -> Response {
    let value = match parse_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let state = shared.state();
    match state.objects.get(oid) {
        None => error(404, None, &format!("object {oid} not found")),
        Some(bytes) if value["size"].as_u64() != Some(bytes.len() as u64) => {
            error(400, None, "size does not match the stored object")
        }
        Some(_) if value["oid"].as_str() != Some(oid) => error(400, None, "oid mismatch"),
        Some(_) => ok(serde_json::json!({"success": true})),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path a commit may write: relative, no empty, `.` or `..` segment.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// A commit body checked and applied to a copy of the head's files.
struct Change {
    summary: String,
    parent: Option<String>,
    files: BTreeMap<String, Blob>,
    added: Vec<String>,
    deleted: Vec<String>,
}

/// Checks every line of an NDJSON commit against `files` (the head's) and returns the result,
/// or the error to answer; nothing is applied here.
fn check_commit(
    state: &State,
    body: &[u8],
    mut files: BTreeMap<String, Blob>,
) -> Result<Change, Response> {
    let bad = |message: String| error(400, None, &message);
    let text = std::str::from_utf8(body).map_err(|_| bad("the commit body is not UTF-8".into()))?;
    let mut change = Change {
        summary: String::new(),
        parent: None,
        files: BTreeMap::new(),
        added: Vec::new(),
        deleted: Vec::new(),
    };
    let mut has_header = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let item: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("bad NDJSON line: {e}")))?;
        let value = &item["value"];
        let key = item["key"].as_str().unwrap_or("");
        if key == "header" {
            change.summary = value["summary"].as_str().unwrap_or("").to_owned();
            change.parent = value["parentCommit"].as_str().map(str::to_owned);
            has_header = true;
            continue;
        }
        let path = value["path"].as_str().unwrap_or("").trim_end_matches('/');
        if !valid_path(path) {
            return Err(bad(format!("invalid path {path:?}")));
        }
        match key {
            "file" => {
                let content = value["content"].as_str().unwrap_or("");
                let bytes = match value["encoding"].as_str() {
                    Some("base64") => base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .map_err(|_| bad(format!("{path}: content is not base64")))?,
                    _ => content.as_bytes().to_vec(),
                };
                if looks_binary(&bytes) || bytes.len() as u64 > LFS_THRESHOLD {
                    return Err(bad(format!(
                        "Your push was rejected because it contains binary files: {path}. \
                         Please use LFS to store binary files."
                    )));
                }
                files.insert(path.to_owned(), Blob::Regular(Arc::new(bytes)));
                change.added.push(path.to_owned());
            }
            "lfsFile" => {
                let oid = value["oid"].as_str().unwrap_or("");
                let stored = state.objects.get(oid).map(|b| b.len() as u64);
                let size = value["size"].as_u64();
                if value["algo"].as_str().is_some_and(|a| a != "sha256") {
                    return Err(bad(format!("{path}: unsupported algo")));
                }
                let Some(stored) = stored.filter(|s| size.is_none_or(|n| n == *s)) else {
                    return Err(bad(format!(
                        "Your push was rejected because an LFS pointer pointed to a file that \
                         does not exist: {path} (oid {oid})"
                    )));
                };
                let blob = Blob::Lfs {
                    sha256: oid.to_owned(),
                    size: stored,
                };
                files.insert(path.to_owned(), blob);
                change.added.push(path.to_owned());
            }
            "deletedFile" => {
                if files.remove(path).is_none() {
                    return Err(error(
                        404,
                        Some("EntryNotFound"),
                        &format!("A file with this name doesn't exist: {path}"),
                    ));
                }
                change.deleted.push(path.to_owned());
            }
            "deletedFolder" => {
                let prefix = format!("{path}/");
                let gone: Vec<String> = files
                    .keys()
                    .filter(|p| p.starts_with(&prefix))
                    .cloned()
                    .collect();
                if gone.is_empty() {
                    return Err(error(
                        404,
                        Some("EntryNotFound"),
                        &format!("A folder with this name doesn't exist: {path}"),
                    ));
                }
                for p in gone {
                    files.remove(&p);
                    change.deleted.push(p);
                }
            }
            other => return Err(bad(format!("unknown commit operation {other:?}"))),
        }
    }
    if !has_header {
        return Err(bad("the commit has no header line".into()));
    }
    // A path cannot be both a file and a directory.
    let dirs = directories(&files);
    if let Some(clash) = files.keys().find(|p| dirs.contains(*p)) {
        return Err(bad(format!("{clash} is both a file and a directory")));
    }
    change.files = files;
    Ok(change)
}

fn commit(shared: &Shared, base: &str, id: &str, rev: &str, request: &Request) -> Outcome {
    let mut state = shared.state();
    let head = match find(&state, id, rev) {
        Ok((_, head)) if rev == "main" => head.clone(),
        Ok(_) => return Outcome::Answer(revision_not_found(rev)),
        Err(e) => return Outcome::Answer(e),
    };
    if form_pairs(request.query())
        .iter()
        .any(|(k, v)| k == "create_pr" && v == "1")
    {
        return Outcome::Answer(error(400, None, "the double has no pull requests"));
    }
    if state.faults.fail_commits > 0 {
        state.faults.fail_commits -= 1;
        return Outcome::Answer(error(500, None, "scripted commit failure"));
    }
    if state.faults.commits_without_oid > 0 {
        state.faults.commits_without_oid -= 1;
        return Outcome::Answer(ok(serde_json::json!({"ok": true})));
    }
    if state.faults.hang_commits > 0 {
        state.faults.hang_commits -= 1;
        return Outcome::Hang;
    }
    let change = match check_commit(&state, &request.body, head.files.clone()) {
        Ok(change) => change,
        Err(e) => return Outcome::Answer(e),
    };
    if change
        .parent
        .as_ref()
        .is_some_and(|p| *p != head.commit.oid)
    {
        return Outcome::Answer(error(
            412,
            None,
            "A commit has happened since. Please refresh and try again.",
        ));
    }
    state.serial += 1;
    let oid = short_hash(&[
        head.commit.oid.as_bytes(),
        &state.serial.to_le_bytes(),
        &request.body,
    ]);
    let commit = HubCommit {
        repo: id.to_owned(),
        summary: change.summary.clone(),
        added: change.added,
        deleted: change.deleted,
        oid: oid.clone(),
    };
    if let Some(repo) = state.repos.get_mut(id) {
        repo.revisions.push(Revision {
            commit,
            date: iso_now(),
            files: change.files,
        });
    }
    let answer = ok(serde_json::json!({
        "success": true,
        "commitOid": oid,
        "commitUrl": format!("{base}/datasets/{id}/commit/{oid}"),
        "commitMessage": change.summary,
        "hookOutput": "",
        "pullRequestUrl": null,
    }));
    if state.faults.delay_after_commit > 0 {
        state.faults.delay_after_commit -= 1;
        return Outcome::Late(answer, state.faults.delay);
    }
    Outcome::Answer(answer)
}

fn tree(shared: &Shared, id: &str, rev: &str, path: &str, recursive: bool) -> Response {
    let state = shared.state();
    let (_, revision) = match find(&state, id, rev) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let path = path.trim_matches('/');
    let dirs = directories(&revision.files);
    if !path.is_empty() && !dirs.contains(path) {
        return entry_not_found(path);
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    // Under the prefix, and directly under it unless recursive.
    let wanted = |p: &str| {
        p.strip_prefix(&prefix)
            .is_some_and(|rest| recursive || !rest.contains('/'))
    };
    let mut entries: Vec<serde_json::Value> = dirs
        .iter()
        .filter(|d| wanted(d))
        .map(|d| dir_entry(d))
        .collect();
    entries.extend(
        revision
            .files
            .iter()
            .filter(|(p, _)| wanted(p))
            .map(|(p, blob)| file_entry(p, blob)),
    );
    ok(serde_json::Value::Array(entries))
}

fn paths_info(shared: &Shared, id: &str, rev: &str, request: &Request) -> Response {
    let is_json = request
        .header("content-type")
        .is_some_and(|t| t.contains("json"));
    let paths: Vec<String> = if is_json {
        match parse_json(&request.body) {
            Ok(v) => v["paths"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => return e,
        }
    } else {
        form_pairs(&String::from_utf8_lossy(&request.body))
            .into_iter()
            .filter(|(k, _)| k == "paths")
            .map(|(_, v)| v)
            .collect()
    };
    let state = shared.state();
    let (_, revision) = match find(&state, id, rev) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let dirs = directories(&revision.files);
    let entries: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter_map(|p| match revision.files.get(p) {
            Some(blob) => Some(file_entry(p, blob)),
            None if dirs.contains(p) => Some(dir_entry(p)),
            None => None,
        })
        .collect();
    ok(serde_json::Value::Array(entries))
}

fn list_commits(shared: &Shared, id: &str, rev: &str) -> Response {
    let state = shared.state();
    let (repo, revision) = match find(&state, id, rev) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let upto = repo
        .revisions
        .iter()
        .position(|r| r.commit.oid == revision.commit.oid)
        .unwrap_or(0);
    let commits: Vec<serde_json::Value> = repo.revisions[..=upto]
        .iter()
        .rev()
        .map(|r| {
            serde_json::json!({
                "id": r.commit.oid,
                "title": r.commit.summary,
                "message": "",
                "authors": [{"user": USER}],
                "date": r.date,
            })
        })
        .collect();
    ok(serde_json::Value::Array(commits))
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a length: the inclusive range, `Err` when
/// it cannot be satisfied, `Ok(None)` when absent or not understood (serve it all).
fn byte_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let Ok(n) = end.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let Ok(a) = start.parse::<u64>() else {
            return Ok(None);
        };
        let b = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(b) => b.min(len.saturating_sub(1)),
                Err(_) => return Ok(None),
            }
        };
        (a, b)
    };
    if len == 0 || range.0 >= len || range.0 > range.1 {
        return Err(());
    }
    Ok(Some(range))
}

fn resolve(shared: &Shared, id: &str, rev: &str, path: &str, request: &Request) -> Outcome {
    let mut state = shared.state();
    let get = request.method == "GET";
    let cut = get && state.faults.cut_downloads > 0;
    let corrupt = get && !cut && state.faults.corrupt_downloads > 0;
    let response = resolve_in(&state, id, rev, path, request);
    let lfs = find(&state, id, rev)
        .is_ok_and(|(_, r)| matches!(r.files.get(path), Some(Blob::Lfs { .. })));
    if !lfs || response.status >= 300 || response.body.len() < 2 {
        return Outcome::Answer(response);
    }
    if cut {
        state.faults.cut_downloads -= 1;
        let full = response.body.len();
        let mut response = response.with("Content-Length", full.to_string());
        response.body.truncate(full / 2);
        return Outcome::Cut(response);
    }
    if corrupt {
        state.faults.corrupt_downloads -= 1;
        let mut response = response;
        if let Some(last) = response.body.last_mut() {
            *last = last.wrapping_add(1);
        }
        return Outcome::Answer(response);
    }
    Outcome::Answer(response)
}

fn resolve_in(state: &State, id: &str, rev: &str, path: &str, request: &Request) -> Response {
    let (_, revision) = match find(state, id, rev) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let Some(blob) = revision.files.get(path) else {
        return entry_not_found(path);
    };
    let Some(bytes) = blob_bytes(state, blob) else {
        return error(500, None, "LFS object missing from the store");
    };
    let etag = match blob {
        Blob::Lfs { sha256, .. } => sha256.clone(),
        Blob::Regular(_) => blob_oid(blob),
    };
    let len = bytes.len() as u64;
    let (status, body, content_range) = match byte_range(request.header("range"), len) {
        Ok(None) => (200, bytes, None),
        Ok(Some((a, b))) => (
            206,
            bytes[a as usize..=b as usize].to_vec(),
            Some(format!("bytes {a}-{b}/{len}")),
        ),
        Err(()) => {
            return error(416, None, "range not satisfiable")
                .with("Content-Range", format!("bytes */{len}"));
        }
    };
    let mut response = Response::new(status, "application/octet-stream", body)
        .with("ETag", format!("\"{etag}\""))
        .with("X-Repo-Commit", revision.commit.oid.clone())
        .with("Accept-Ranges", "bytes");
    if let Blob::Lfs { sha256, size } = blob {
        response = response
            .with("X-Linked-Etag", format!("\"{sha256}\""))
            .with("X-Linked-Size", size.to_string());
    }
    if let Some(range) = content_range {
        response = response.with("Content-Range", range);
    }
    response
}

/// Now as `2024-01-31T12:00:00.000Z`.
fn iso_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(byte_range(Some("bytes=2-"), 10), Ok(Some((2, 9))));
        assert_eq!(byte_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(byte_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(byte_range(Some("bytes=10-"), 10), Err(()));
    }

    #[test]
    fn binary_detection() {
        assert!(!looks_binary("héllo".as_bytes()));
        assert!(!looks_binary(&"é".as_bytes()[..1]));
        assert!(looks_binary(b"PAR1\0\x15"));
        assert!(looks_binary(b"\xff\xfeab"));
    }

    #[test]
    fn dates_look_iso() {
        let d = iso_now();
        assert_eq!(d.len(), 24, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'), "{d}");
    }

    #[test]
    fn directories_of_files() {
        let mut files = BTreeMap::new();
        files.insert("a/b/c.txt".to_owned(), Blob::Regular(Arc::new(Vec::new())));
        files.insert("d.txt".to_owned(), Blob::Regular(Arc::new(Vec::new())));
        let dirs: Vec<String> = directories(&files).into_iter().collect();
        assert_eq!(dirs, vec!["a".to_owned(), "a/b".to_owned()]);
    }
}
