//! The Hugging Face Hub's HTTP protocol for dataset repositories: create, list, preupload, Git
//! LFS upload and verify, and the NDJSON commit. Transient failures (429, 5xx, timeouts, dropped
//! connections) are retried with backoff; the token never appears in a message.

use crate::llm::{RetryPolicy, plain, retry_after, snippet};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

/// The media type of Git LFS API calls.
const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A failed Hub call. `transient` failures may succeed later; the others (a bad token, a
/// missing permission, a refused request) will not without a change.
#[derive(Debug, Clone, PartialEq)]
pub struct HubFailure {
    /// What failed: the call, the status and the Hub's message.
    pub message: String,
    /// Whether trying again later may help.
    pub transient: bool,
}

type Call<T> = std::result::Result<T, HubFailure>;

/// A file of a commit.
#[derive(Debug, Clone)]
pub struct UploadFile {
    /// Path in the repository.
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// A client for one Hub endpoint and token.
pub struct HubClient {
    http: reqwest::blocking::Client,
    endpoint: String,
    token: Option<String>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl HubClient {
    /// A client for `endpoint` (e.g. `https://huggingface.co`) with `token`.
    pub fn new(endpoint: &str, token: Option<String>, retry: RetryPolicy) -> Call<Self> {
        let http = reqwest::blocking::Client::builder()
            .timeout(retry.timeout)
            .build()
            .map_err(|e| fatal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            retry,
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates dataset repository `repo` (`namespace/name`); an existing one is fine.
    pub fn create_repo(&self, repo: &str, private: bool) -> Call<()> {
        let (namespace, name) = split_repo(repo)?;
        let body = json!({
            "name": name,
            "organization": namespace,
            "type": "dataset",
            "visibility": if private { "private" } else { "public" },
        });
        let url = format!("{}/api/repos/create", self.endpoint);
        self.call("create repo", repo, &[409], || {
            self.http.post(&url).json(&body)
        })?;
        Ok(())
    }

    /// Paths of every file at `revision` (empty when the repository has no commit yet).
    pub fn list_files(&self, repo: &str, revision: &str) -> Call<Vec<String>> {
        let mut url = Some(format!(
            "{}/api/datasets/{repo}/tree/{}?recursive=true",
            self.endpoint,
            quote(revision)
        ));
        let mut paths = Vec::new();
        while let Some(page) = url.take() {
            let response = self.call("list files", repo, &[], || self.http.get(&page))?;
            url = next_link(&response);
            let entries: Json = read_json("list files", response)?;
            for entry in entries.as_array().into_iter().flatten() {
                if entry["type"] == "file"
                    && let Some(path) = entry["path"].as_str()
                {
                    paths.push(path.to_owned());
                }
            }
        }
        Ok(paths)
    }

    /// Uploads `files` and commits them, with `deleted` paths removed, in one commit on
    /// `revision`. Returns the commit's id once the Hub has confirmed it.
    pub fn commit(
        &self,
        repo: &str,
        revision: &str,
        summary: &str,
        files: &[UploadFile],
        deleted: &[String],
    ) -> Call<String> {
        let lfs = self.preupload(repo, revision, files)?;
        let mut lines =
            vec![json!({"key": "header", "value": {"summary": summary, "description": ""}})];
        let mut objects = Vec::new();
        for (file, lfs) in files.iter().zip(&lfs) {
            if *lfs {
                let oid = hex_sha256(&file.bytes);
                lines.push(json!({"key": "lfsFile", "value": {
                    "path": file.path, "algo": "sha256", "oid": oid, "size": file.bytes.len()}}));
                objects.push((oid, file));
            } else {
                lines.push(json!({"key": "file", "value": {
                    "path": file.path, "content": BASE64.encode(&file.bytes), "encoding": "base64"}}));
            }
        }
        for path in deleted {
            lines.push(json!({"key": "deletedFile", "value": {"path": path}}));
        }
        self.upload_lfs(repo, revision, &objects)?;
        let mut ndjson = String::new();
        for line in &lines {
            ndjson.push_str(&line.to_string());
            ndjson.push('\n');
        }
        let url = format!(
            "{}/api/datasets/{repo}/commit/{}",
            self.endpoint,
            quote(revision)
        );
        let response = self.call("commit", repo, &[], || {
            self.http
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(ndjson.clone())
        })?;
        let answer: Json = read_json("commit", response)?;
        Ok(answer["commitOid"].as_str().unwrap_or_default().to_owned())
    }

    /// Asks the Hub which files go through LFS.
    fn preupload(&self, repo: &str, revision: &str, files: &[UploadFile]) -> Call<Vec<bool>> {
        let body = json!({"files": files.iter().map(|f| json!({
            "path": f.path,
            "sample": BASE64.encode(&f.bytes[..f.bytes.len().min(512)]),
            "size": f.bytes.len(),
        })).collect::<Vec<_>>()});
        let url = format!(
            "{}/api/datasets/{repo}/preupload/{}",
            self.endpoint,
            quote(revision)
        );
        let response = self.call("preupload", repo, &[], || self.http.post(&url).json(&body))?;
        let answer: Json = read_json("preupload", response)?;
        let modes = answer["files"].as_array().cloned().unwrap_or_default();
        Ok(files
            .iter()
            .map(|f| {
                modes
                    .iter()
                    .find(|m| m["path"] == f.path.as_str())
                    .is_some_and(|m| m["uploadMode"] == "lfs")
            })
            .collect())
    }

    /// The LFS batch call, then an upload and a verify for each object the Hub lacks.
    fn upload_lfs(
        &self,
        repo: &str,
        revision: &str,
        objects: &[(String, &UploadFile)],
    ) -> Call<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let body = json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": objects.iter().map(|(oid, f)| json!({"oid": oid, "size": f.bytes.len()})).collect::<Vec<_>>(),
            "hash_algo": "sha256",
            "ref": {"name": revision},
        });
        let url = format!(
            "{}/datasets/{repo}.git/info/lfs/objects/batch",
            self.endpoint
        );
        let response = self.call("LFS batch", repo, &[], || {
            self.http
                .post(&url)
                .header("accept", LFS_JSON)
                .header("content-type", LFS_JSON)
                .body(body.to_string())
        })?;
        let answer: Json = read_json("LFS batch", response)?;
        for (oid, file) in objects {
            let Some(object) = answer["objects"]
                .as_array()
                .and_then(|all| all.iter().find(|o| o["oid"] == oid.as_str()))
            else {
                return Err(fatal(format!(
                    "LFS batch: the Hub did not answer for {}",
                    file.path
                )));
            };
            if let Some(error) = object.get("error") {
                return Err(fatal(format!("LFS batch refused {}: {error}", file.path)));
            }
            let Some(upload) = object["actions"].get("upload") else {
                continue; // the Hub has it already
            };
            let href = upload["href"].as_str().unwrap_or_default().to_owned();
            let headers = upload["header"].as_object().cloned().unwrap_or_default();
            if headers.contains_key("chunk_size") {
                self.upload_parts(oid, file, &href, &headers)?;
            } else {
                self.call_without_token("LFS upload", &file.path, || {
                    let mut put = self.http.put(&href).body(file.bytes.clone());
                    for (name, value) in &headers {
                        put = put.header(name.as_str(), value.as_str().unwrap_or_default());
                    }
                    put
                })?;
            }
            if let Some(verify) = object["actions"]["verify"]["href"].as_str() {
                let body = json!({"oid": oid, "size": file.bytes.len()});
                self.call("LFS verify", repo, &[], || {
                    self.http.post(verify).json(&body)
                })?;
            }
        }
        Ok(())
    }

    /// A multipart LFS upload: `chunk_size` bytes to each numbered part URL of `header`, then
    /// the completion call to `href` with every part's ETag.
    fn upload_parts(
        &self,
        oid: &str,
        file: &UploadFile,
        href: &str,
        header: &serde_json::Map<String, Json>,
    ) -> Call<()> {
        let chunk = header["chunk_size"]
            .as_str()
            .and_then(|c| c.parse::<usize>().ok())
            .or_else(|| header["chunk_size"].as_u64().map(|c| c as usize))
            .filter(|c| *c > 0)
            .ok_or_else(|| fatal(format!("LFS upload of {}: bad chunk_size", file.path)))?;
        let mut urls: Vec<(u32, &str)> = header
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u32>().ok()?, v.as_str()?)))
            .collect();
        urls.sort_unstable();
        if urls.len() != file.bytes.len().div_ceil(chunk) {
            return Err(fatal(format!(
                "LFS upload of {}: the Hub gave {} part URLs for {} bytes in parts of {chunk}",
                file.path,
                urls.len(),
                file.bytes.len()
            )));
        }
        let mut parts = Vec::with_capacity(urls.len());
        for ((number, url), bytes) in urls.iter().zip(file.bytes.chunks(chunk)) {
            let what = format!("LFS part {number} of");
            let response = self.call_without_token(&what, &file.path, || {
                self.http.put(*url).body(bytes.to_vec())
            })?;
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            parts.push(json!({"partNumber": number, "etag": etag}));
        }
        let body = json!({"oid": oid, "parts": parts}).to_string();
        self.call_without_token("LFS completion of", &file.path, || {
            self.http
                .post(href)
                .header("accept", LFS_JSON)
                .header("content-type", LFS_JSON)
                .body(body.clone())
        })?;
        Ok(())
    }

    /// Sends a request with the token, retrying transient failures. `also_ok` lists statuses
    /// accepted besides 2xx.
    fn call(
        &self,
        what: &str,
        repo: &str,
        also_ok: &[u16],
        request: impl Fn() -> RequestBuilder,
    ) -> Call<Response> {
        self.retrying(what, repo, also_ok, || match &self.token {
            Some(token) => request().bearer_auth(token),
            None => request(),
        })
    }

    /// Sends a request to a storage URL the Hub handed out: no Hub token goes there.
    fn call_without_token(
        &self,
        what: &str,
        path: &str,
        request: impl Fn() -> RequestBuilder,
    ) -> Call<Response> {
        self.retrying(what, path, &[], request)
    }

    fn retrying(
        &self,
        what: &str,
        subject: &str,
        also_ok: &[u16],
        request: impl Fn() -> RequestBuilder,
    ) -> Call<Response> {
        let mut retries = 0;
        loop {
            let (message, retry_after) = match request().send() {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if response.status().is_success() || also_ok.contains(&status) {
                        return Ok(response);
                    }
                    let retry_after = retry_after(&response);
                    let code = response
                        .headers()
                        .get("x-error-code")
                        .and_then(|v| v.to_str().ok())
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    let body = response.bytes().map(|b| snippet(&b)).unwrap_or_default();
                    let message = format!("{what} {subject}: HTTP {status}{code}: {body}");
                    match status {
                        429 | 500..=599 => (message, retry_after),
                        401 => return Err(fatal(format!("{message}; check HF_TOKEN"))),
                        403 => {
                            return Err(fatal(format!(
                                "{message}; the token lacks write permission on {subject}"
                            )));
                        }
                        _ => return Err(fatal(message)),
                    }
                }
                Err(e) if e.is_timeout() => (
                    format!("{what} {subject}: timed out after {:?}", self.retry.timeout),
                    None,
                ),
                Err(e) => (format!("{what} {subject}: {}", plain(&e)), None),
            };
            if retries + 1 >= self.retry.max_attempts {
                return Err(HubFailure {
                    message: format!("{message} (gave up after {} attempts)", retries + 1),
                    transient: true,
                });
            }
            std::thread::sleep(self.retry.delay(retries, retry_after));
            retries += 1;
        }
    }
}

fn fatal(message: String) -> HubFailure {
    HubFailure {
        message,
        transient: false,
    }
}

fn split_repo(repo: &str) -> Call<(&str, &str)> {
    match repo.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(fatal(format!(
            "repository '{repo}' is not of the form namespace/name"
        ))),
    }
}

fn read_json(what: &str, response: Response) -> Call<Json> {
    let bytes = response.bytes().map_err(|e| HubFailure {
        message: format!(
            "{what}: connection dropped while reading the answer: {}",
            plain(&e)
        ),
        transient: true,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| HubFailure {
        message: format!(
            "{what}: the Hub's answer is not JSON ({e}): {}",
            snippet(&bytes)
        ),
        transient: true,
    })
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(response: &Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// A revision in a URL path (`refs/pr/1` keeps working).
fn quote(revision: &str) -> String {
    revision.replace('/', "%2F")
}

/// sha256 of `bytes`, hex: the LFS object id.
pub fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_checked() {
        assert_eq!(split_repo("ns/name").unwrap(), ("ns", "name"));
        for bad in ["name", "/name", "ns/", "a/b/c"] {
            assert!(!split_repo(bad).unwrap_err().transient, "{bad}");
        }
    }

    #[test]
    fn sha256_is_the_lfs_oid() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
