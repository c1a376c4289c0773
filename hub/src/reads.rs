//! The Hub's read calls for loading a dataset: the commit a revision points at, the files of a
//! commit, and file downloads through `resolve` URLs (whole, a tail, or resumed with `Range`).
//! Failures are the HTTP layer's, retried by the client's policy; callers add the repository,
//! config and split to them.

use crate::client::{HubClient, next_link, quote};
use distill_http::reqwest::Url;
use distill_http::reqwest::blocking::RequestBuilder;
use distill_http::{Error as HttpError, Result as HttpResult, transient};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// A file of a commit, as the Hub's tree lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Its path in the repository.
    pub path: String,
    /// Its size in bytes (the object's, for an LFS file).
    pub size: u64,
    /// The git blob id.
    pub oid: String,
    /// The sha256 of its content, for a file stored with LFS.
    pub sha256: Option<String>,
}

/// Bytes copied at a time while downloading.
const CHUNK: usize = 1 << 16;

impl HubClient {
    fn with_token(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The URL of `path` at commit `sha` of dataset `repo`.
    fn resolve_url(&self, repo: &str, sha: &str, path: &str) -> HttpResult<Url> {
        let mut url = Url::parse(&self.endpoint)
            .map_err(|e| HttpError::protocol("resolve", format!("bad endpoint: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| HttpError::protocol("resolve", "the endpoint cannot hold a path"))?
            .pop_if_empty()
            .extend(["datasets"])
            .extend(repo.split('/'))
            .extend(["resolve", sha])
            .extend(path.split('/'));
        Ok(url)
    }

    /// The commit `revision` (a branch, a tag or a commit id) of dataset `repo` points at.
    pub fn revision_sha(&self, repo: &str, revision: &str) -> HttpResult<String> {
        let url = format!(
            "{}/api/datasets/{repo}/revision/{}",
            self.endpoint,
            quote(revision)
        );
        let call = format!("GET revision {revision} of {repo}");
        let reply = self
            .http
            .send(&call, &[], || self.with_token(self.http.client().get(&url)))?;
        let info: serde_json::Value = reply.json(&call)?;
        match info["sha"].as_str() {
            Some(sha) if !sha.is_empty() => Ok(sha.to_owned()),
            _ => Err(HttpError::protocol(call, "the answer has no `sha`")),
        }
    }

    /// Every file of dataset `repo` at commit `sha` (all pages of the tree).
    pub fn tree(&self, repo: &str, sha: &str) -> HttpResult<Vec<RepoFile>> {
        let mut next = Some(format!(
            "{}/api/datasets/{repo}/tree/{}?recursive=true",
            self.endpoint,
            quote(sha)
        ));
        let call = format!("GET tree of {repo}");
        let mut files = Vec::new();
        while let Some(page) = next.take() {
            let reply = self.http.send(&call, &[], || {
                self.with_token(self.http.client().get(&page))
            })?;
            next = next_link(&reply);
            let entries: serde_json::Value = reply.json(&call)?;
            let Some(entries) = entries.as_array() else {
                return Err(HttpError::protocol(call, "the tree is not a list"));
            };
            for entry in entries.iter().filter(|e| e["type"] == "file") {
                let (Some(path), Some(size)) = (entry["path"].as_str(), entry["size"].as_u64())
                else {
                    return Err(HttpError::protocol(
                        call,
                        format!("a file entry lacks `path` or `size`: {entry}"),
                    ));
                };
                files.push(RepoFile {
                    path: path.to_owned(),
                    size: entry["lfs"]["size"].as_u64().unwrap_or(size),
                    oid: entry["oid"].as_str().unwrap_or_default().to_owned(),
                    sha256: entry["lfs"]["oid"].as_str().map(str::to_owned),
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The content of a small file (the dataset card), read whole.
    pub fn read_file(&self, repo: &str, sha: &str, path: &str) -> HttpResult<Vec<u8>> {
        let url = self.resolve_url(repo, sha, path)?;
        let call = format!("GET {path} of {repo}");
        let reply = self.http.send(&call, &[], || {
            self.with_token(self.http.client().get(url.clone()))
        })?;
        Ok(reply.body)
    }

    /// The last `n` bytes of a file (a Parquet footer), with a suffix `Range` request.
    pub fn read_tail(&self, repo: &str, sha: &str, path: &str, n: u64) -> HttpResult<Vec<u8>> {
        let url = self.resolve_url(repo, sha, path)?;
        let call = format!("GET the last {n} bytes of {path} of {repo}");
        let reply = self.http.send(&call, &[], || {
            self.with_token(self.http.client().get(url.clone()))
                .header("range", format!("bytes=-{n}"))
        })?;
        let body = reply.body;
        // A server that ignores the range sends everything: keep the tail.
        let keep = body
            .len()
            .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(body[keep..].to_vec())
    }

    /// Downloads `path` (of `size` bytes) into `part`, after the bytes `part` already holds:
    /// each attempt asks for the rest with a `Range` request, and a transient failure (a
    /// dropped connection mid-body) is retried from where it stopped. The outer result is the
    /// HTTP side; the inner one, writing `part`. `stop` ends the download early (interrupted).
    pub fn download_to(
        &self,
        repo: &str,
        sha: &str,
        path: &str,
        size: u64,
        part: &mut File,
        stop: &AtomicBool,
    ) -> HttpResult<std::io::Result<()>> {
        let url = self.resolve_url(repo, sha, path)?;
        let call = format!("GET {path} of {repo}");
        self.http.policy().run(
            &call,
            || -> HttpResult<std::io::Result<()>> {
                let have = match part.seek(SeekFrom::End(0)) {
                    Ok(have) => have,
                    Err(e) => return Ok(Err(e)),
                };
                if have >= size {
                    return Ok(Ok(()));
                }
                let mut request = self.with_token(self.http.client().get(url.clone()));
                if have > 0 {
                    request = request.header("range", format!("bytes={have}-"));
                }
                let mut response = self.http.open(&call, &[], request)?;
                let status = response.status().as_u16();
                if have > 0 && status == 200 {
                    // The range was ignored: the whole file comes again.
                    if let Err(e) = part.set_len(0).and_then(|()| part.seek(SeekFrom::Start(0))) {
                        return Ok(Err(e));
                    }
                } else if have > 0 {
                    let range = response
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if !range.starts_with(&format!("bytes {have}-")) {
                        return Err(HttpError::protocol(
                            &call,
                            format!("asked for bytes {have}- and got {range:?}"),
                        ));
                    }
                }
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0u64;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return Err(HttpError::Interrupted { call: call.clone() });
                    }
                    let n = response.read(&mut buf).map_err(|e| {
                        transient(
                            &call,
                            format!("connection dropped after {got} bytes of this attempt: {e}"),
                        )
                    })?;
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                    if let Err(e) = part.write_all(&buf[..n]) {
                        return Ok(Err(e));
                    }
                }
                let len = match part.seek(SeekFrom::End(0)) {
                    Ok(len) => len,
                    Err(e) => return Ok(Err(e)),
                };
                if len < size {
                    return Err(transient(
                        &call,
                        format!("the answer ended after {len} of {size} bytes"),
                    ));
                }
                Ok(Ok(()))
            },
            |_, _| {},
        )
    }
}
