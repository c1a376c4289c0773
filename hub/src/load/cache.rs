//! The download cache: `DISTILL_CACHE` (default `~/.cache/distill/hub`) holds each file once,
//! by content, at `datasets/NS/NAME/blobs/OID/FILENAME` (OID: the LFS sha256, or the git blob
//! id). A download goes to `FILENAME.part` beside it, under an exclusive lock (two runs never
//! write one file), resumes from what a killed run left with a `Range` request, and is checked
//! (size, and sha256 for LFS files) before it is renamed into place.

use crate::client::HubClient;
use crate::error::{Error, Result};
use crate::reads::RepoFile;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Where downloaded files are kept.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

fn cache_error(path: &Path, source: std::io::Error) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `part` is a safe path component (no separator, not `.` or `..`).
fn safe(part: &str) -> bool {
    !part.is_empty() && part != "." && part != ".." && !part.contains(['/', '\\', '\0'])
}

impl Cache {
    /// The cache at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `DISTILL_CACHE`, else `~/.cache/distill/hub`.
    pub fn from_env() -> Self {
        let root = std::env::var_os("DISTILL_CACHE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home =
                    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
                home.join(".cache/distill/hub")
            });
        Self::new(root)
    }

    /// Where `file` of `repo` is kept once downloaded.
    pub fn path_of(&self, repo: &str, file: &RepoFile) -> Result<PathBuf> {
        let bad = |what: &str| Error::Layout {
            repo: repo.to_owned(),
            detail: format!("{what} cannot name a cache file: {}", file.path),
        };
        let (ns, name) = repo.split_once('/').ok_or_else(|| bad("the repository"))?;
        let oid = file.sha256.as_deref().unwrap_or(&file.oid);
        let filename = file.path.rsplit('/').next().unwrap_or_default();
        if ![ns, name, oid, filename].iter().all(|p| safe(p)) {
            return Err(bad("the path"));
        }
        Ok(self
            .root
            .join("datasets")
            .join(ns)
            .join(name)
            .join("blobs")
            .join(oid)
            .join(filename))
    }

    /// The local copy of `file` when it is complete in the cache.
    pub fn cached(&self, repo: &str, file: &RepoFile) -> Result<Option<PathBuf>> {
        let path = self.path_of(repo, file)?;
        Ok(std::fs::metadata(&path)
            .is_ok_and(|m| m.len() == file.size)
            .then_some(path))
    }

    /// The local copy of `file` (of `repo` at commit `sha`), downloaded first when missing.
    /// A copy whose sha256 is not the Hub's is downloaded once more from scratch, then refused.
    pub fn fetch(
        &self,
        client: &HubClient,
        repo: &str,
        sha: &str,
        file: &RepoFile,
        stop: &AtomicBool,
    ) -> Result<PathBuf> {
        if let Some(path) = self.cached(repo, file)? {
            return Ok(path);
        }
        let path = self.path_of(repo, file)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| cache_error(&dir, e))?;
        let part_path = PathBuf::from(format!("{}.part", path.display()));
        let mut part = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .map_err(|e| cache_error(&part_path, e))?;
        // Another run may be downloading it: wait for it, then take what it left.
        part.lock().map_err(|e| cache_error(&part_path, e))?;
        if let Some(path) = self.cached(repo, file)? {
            return Ok(path);
        }
        for attempt in 0..2 {
            let len = part
                .metadata()
                .map_err(|e| cache_error(&part_path, e))?
                .len();
            if len > file.size {
                part.set_len(0).map_err(|e| cache_error(&part_path, e))?;
            } else if len > 0 {
                tracing::info!(file = %file.path, bytes = len, of = file.size, "resuming a download");
            }
            tracing::info!(file = %file.path, bytes = file.size, "downloading");
            client
                .download_to(repo, sha, &file.path, file.size, &mut part, stop)
                .map_err(|source| Error::Load {
                    repo: repo.to_owned(),
                    scope: format!("file {}", file.path),
                    source,
                })?
                .map_err(|e| cache_error(&part_path, e))?;
            match check(&part_path, file)? {
                None => break,
                Some(problem) if attempt == 0 => {
                    tracing::warn!(file = %file.path, "{problem}; downloading it again");
                    part.set_len(0).map_err(|e| cache_error(&part_path, e))?;
                }
                Some(problem) => {
                    let _ = std::fs::remove_file(&part_path);
                    return Err(Error::Download {
                        repo: repo.to_owned(),
                        path: file.path.clone(),
                        detail: format!("{problem}, twice; refused"),
                    });
                }
            }
        }
        part.sync_all().map_err(|e| cache_error(&part_path, e))?;
        std::fs::rename(&part_path, &path).map_err(|e| cache_error(&path, e))?;
        Ok(path)
    }
}

/// What is wrong with the downloaded `part` of `file`, if anything.
fn check(part: &Path, file: &RepoFile) -> Result<Option<String>> {
    let len = std::fs::metadata(part)
        .map_err(|e| cache_error(part, e))?
        .len();
    if len != file.size {
        return Ok(Some(format!(
            "downloaded {len} bytes, the Hub lists {}",
            file.size
        )));
    }
    let Some(expected) = &file.sha256 else {
        return Ok(None);
    };
    let mut hasher = Sha256::new();
    let mut reader = File::open(part).map_err(|e| cache_error(part, e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| cache_error(part, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((got != *expected).then(|| format!("its sha256 is {got}, the Hub lists {expected}")))
}
