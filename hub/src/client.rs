//! The Hugging Face Hub's HTTP protocol for dataset repositories: create, list, preupload, Git
//! LFS upload and verify, and the NDJSON commit. Transient failures (429, 5xx, timeouts, dropped
//! connections) are retried by the shared HTTP layer; the token never appears in a message.

use crate::error::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use distill_http::reqwest::blocking::RequestBuilder;
use distill_http::{Http, Reply, RetryPolicy};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

/// The media type of Git LFS API calls.
const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

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
    pub(crate) http: Http,
    pub(crate) endpoint: String,
    pub(crate) token: Option<String>,
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
    pub fn new(endpoint: &str, token: Option<String>, retry: RetryPolicy) -> Result<Self> {
        let http = Http::new(retry).map_err(|source| Error::Hub {
            repo: endpoint.to_owned(),
            source,
        })?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates dataset repository `repo` (`namespace/name`); an existing one is fine.
    pub fn create_repo(&self, repo: &str, private: bool) -> Result<()> {
        let (namespace, name) = split_repo(repo)?;
        let body = json!({
            "name": name,
            "organization": namespace,
            "type": "dataset",
            "visibility": if private { "private" } else { "public" },
        });
        let url = format!("{}/api/repos/create", self.endpoint);
        self.call("create repo", repo, &[409], || {
            self.http.client().post(&url).json(&body)
        })?;
        Ok(())
    }

    /// Paths of every file at `revision` (empty when the repository has no commit yet).
    pub fn list_files(&self, repo: &str, revision: &str) -> Result<Vec<String>> {
        let mut url = Some(format!(
            "{}/api/datasets/{repo}/tree/{}?recursive=true",
            self.endpoint,
            quote(revision)
        ));
        let mut paths = Vec::new();
        while let Some(page) = url.take() {
            let response = self.call("list files", repo, &[], || self.http.client().get(&page))?;
            url = next_link(&response);
            let entries: Json = read_json(repo, "list files", &response)?;
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
    ) -> Result<String> {
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
                .client()
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(ndjson.clone())
        })?;
        let answer: Json = read_json(repo, "commit", &response)?;
        // Only a commit id says the Hub applied the commit: anything else records nothing.
        match answer["commitOid"].as_str() {
            Some(oid) if !oid.trim().is_empty() => Ok(oid.to_owned()),
            _ => Err(protocol(
                repo,
                "commit",
                format!(
                    "the answer has no commit id: {}",
                    answer.to_string().chars().take(200).collect::<String>()
                ),
            )),
        }
    }

    /// Asks the Hub which files go through LFS.
    fn preupload(&self, repo: &str, revision: &str, files: &[UploadFile]) -> Result<Vec<bool>> {
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
        let response = self.call("preupload", repo, &[], || {
            self.http.client().post(&url).json(&body)
        })?;
        let answer: Json = read_json(repo, "preupload", &response)?;
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
    ) -> Result<()> {
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
                .client()
                .post(&url)
                .header("accept", LFS_JSON)
                .header("content-type", LFS_JSON)
                .body(body.to_string())
        })?;
        let answer: Json = read_json(repo, "LFS batch", &response)?;
        for (oid, file) in objects {
            let Some(object) = answer["objects"]
                .as_array()
                .and_then(|all| all.iter().find(|o| o["oid"] == oid.as_str()))
            else {
                return Err(protocol(
                    repo,
                    "LFS batch",
                    format!("the Hub did not answer for {}", file.path),
                ));
            };
            if let Some(error) = object.get("error") {
                return Err(protocol(
                    repo,
                    "LFS batch",
                    format!("refused {}: {error}", file.path),
                ));
            }
            let Some(upload) = object["actions"].get("upload") else {
                continue; // the Hub has it already
            };
            let href = upload["href"].as_str().unwrap_or_default().to_owned();
            let headers = upload["header"].as_object().cloned().unwrap_or_default();
            if headers.contains_key("chunk_size") {
                self.upload_parts(repo, oid, file, &href, &headers)?;
            } else {
                self.call_without_token("LFS upload", repo, &file.path, || {
                    let mut put = self.http.client().put(&href).body(file.bytes.clone());
                    for (name, value) in &headers {
                        put = put.header(name.as_str(), value.as_str().unwrap_or_default());
                    }
                    put
                })?;
            }
            if let Some(verify) = object["actions"]["verify"]["href"].as_str() {
                let body = json!({"oid": oid, "size": file.bytes.len()});
                self.call("LFS verify", repo, &[], || {
                    self.http.client().post(verify).json(&body)
                })?;
            }
        }
        Ok(())
    }

    /// A multipart LFS upload: `chunk_size` bytes to each numbered part URL of `header`, then
    /// the completion call to `href` with every part's ETag.
    fn upload_parts(
        &self,
        repo: &str,
        oid: &str,
        file: &UploadFile,
        href: &str,
        header: &serde_json::Map<String, Json>,
    ) -> Result<()> {
        let chunk = header["chunk_size"]
            .as_str()
            .and_then(|c| c.parse::<usize>().ok())
            .or_else(|| header["chunk_size"].as_u64().map(|c| c as usize))
            .filter(|c| *c > 0)
            .ok_or_else(|| {
                protocol(
                    repo,
                    "LFS upload",
                    format!("bad chunk_size for {}", file.path),
                )
            })?;
        let mut urls: Vec<(u32, &str)> = header
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u32>().ok()?, v.as_str()?)))
            .collect();
        urls.sort_unstable();
        if urls.len() != file.bytes.len().div_ceil(chunk) {
            return Err(protocol(
                repo,
                "LFS upload",
                format!(
                    "the Hub gave {} part URLs for {} bytes of {} in parts of {chunk}",
                    urls.len(),
                    file.bytes.len(),
                    file.path
                ),
            ));
        }
        let mut parts = Vec::with_capacity(urls.len());
        for ((number, url), bytes) in urls.iter().zip(file.bytes.chunks(chunk)) {
            let what = format!("LFS part {number} of");
            let response = self.call_without_token(&what, repo, &file.path, || {
                self.http.client().put(*url).body(bytes.to_vec())
            })?;
            let etag = response.header("etag").unwrap_or_default().to_owned();
            parts.push(json!({"partNumber": number, "etag": etag}));
        }
        let body = json!({"oid": oid, "parts": parts}).to_string();
        self.call_without_token("LFS completion of", repo, &file.path, || {
            self.http
                .client()
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
    ) -> Result<Reply> {
        let call = format!("{what} {repo}");
        self.http
            .send(&call, also_ok, || match &self.token {
                Some(token) => request().bearer_auth(token),
                None => request(),
            })
            .map_err(|e| {
                let note = match e.status() {
                    Some(401) => "; check HF_TOKEN".to_owned(),
                    Some(403) => format!("; the token lacks write permission on {repo}"),
                    _ => String::new(),
                };
                hub_error(repo, e.with_note(&note))
            })
    }

    /// Sends a request to a storage URL the Hub handed out: no Hub token goes there.
    fn call_without_token(
        &self,
        what: &str,
        repo: &str,
        path: &str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Reply> {
        self.http
            .send(&format!("{what} {path}"), &[], request)
            .map_err(|e| hub_error(repo, e))
    }
}

fn hub_error(repo: &str, source: distill_http::Error) -> Error {
    Error::Hub {
        repo: repo.to_owned(),
        source,
    }
}

/// An answer of the Hub that does not follow the protocol.
fn protocol(repo: &str, what: &str, detail: String) -> Error {
    hub_error(repo, distill_http::Error::protocol(what, detail))
}

fn split_repo(repo: &str) -> Result<(&str, &str)> {
    match repo.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(protocol(
            repo,
            "create repo",
            format!("repository '{repo}' is not of the form namespace/name"),
        )),
    }
}

fn read_json(repo: &str, what: &str, reply: &Reply) -> Result<Json> {
    reply.json(what).map_err(|e| hub_error(repo, e))
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
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
pub(crate) fn quote(revision: &str) -> String {
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
            assert!(!split_repo(bad).unwrap_err().is_transient(), "{bad}");
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
