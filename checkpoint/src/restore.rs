//! `--resume-from`: the newest complete snapshot of a run, fetched, verified and put in place
//! of a missing run database, atomically.
//!
//! Verification, in order: the manifest reads and its formats are ones this build reads (a
//! newer one stops here: upgrade, rather than fall back to older progress); the data's size
//! and sha256 are the manifest's; it decompresses to the size recorded; the result opens as a
//! run database (redb and distill's own format checks) holding the manifest's pipeline
//! signature, log position and number of cached answers. A snapshot that fails is reported
//! and the next older one is tried. The database is built under `RUN.redb.restoring`, synced,
//! and renamed into place: a crash leaves either no run database or a whole one.

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::pack::{decompress, sha256_of, work_dir};
use crate::record::{CheckpointReport, Origin};
use crate::remote::{Listing, Remote};
use crate::target::{Identity, Target};
use distill_hub::HubAccess;
use distill_storage::{Progress, RunLog, RunReader};
use std::path::{Path, PathBuf};

/// What a restore found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot now in place.
    pub report: CheckpointReport,
    /// Newer snapshots that did not verify, each with the reason.
    pub refused: Vec<String>,
}

fn staging_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    db.with_file_name(name)
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

/// Restores the newest verified snapshot of `identity`'s run at `url` as the run database
/// `db`, which must not exist (or be empty). [`Error::NoSnapshot`] when there is none,
/// [`Error::BadSnapshot`] when none verifies.
pub fn restore(url: &str, identity: &Identity, db: &Path, hub: &HubAccess) -> Result<Restored> {
    if std::fs::metadata(db).is_ok_and(|m| m.len() > 0) {
        return Err(Error::Io {
            path: db.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a run database is already there; it is never replaced by a snapshot",
            ),
        });
    }
    let target = Target::parse(url)?;
    let remote = Remote::open(&target, identity, hub)?;
    let folder = target.folder(identity);
    let listing = remote.list()?;
    if listing.manifests.is_empty() {
        let hint = if listing.data.is_empty() {
            String::new()
        } else {
            format!(
                " ({} upload(s) there never completed: no manifest)",
                listing.data.len()
            )
        };
        return Err(Error::NoSnapshot {
            url: target.url.clone(),
            prefix: folder,
            hint,
        });
    }
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(Error::io(&parent))?;
    crate::pack::clean_leftovers(&parent);
    let staging = staging_path(db);
    let mut refused = Vec::new();
    for name in listing.manifests.iter().rev() {
        let _ = std::fs::remove_file(&staging);
        match try_snapshot(&remote, &listing, &target, name, &staging, &parent)? {
            Ok(manifest) => {
                let report =
                    CheckpointReport::new(&target.url, &folder, &manifest, Origin::Restored);
                settle(&staging, &report)?;
                std::fs::rename(&staging, db).map_err(Error::io(db))?;
                sync_parent(db).map_err(Error::io(db))?;
                for reason in &refused {
                    tracing::warn!("checkpoint: {reason}");
                }
                return Ok(Restored { report, refused });
            }
            Err(reason) => {
                let _ = std::fs::remove_file(&staging);
                tracing::warn!("checkpoint: {reason}; trying an older snapshot");
                refused.push(reason);
            }
        }
    }
    Err(Error::BadSnapshot {
        url: target.url,
        detail: refused.join("; "),
    })
}

/// Fetches and verifies one snapshot into `staging`. The outer error stops the restore (the
/// store failed, a newer format); the inner one refuses this snapshot only.
fn try_snapshot(
    remote: &Remote,
    listing: &Listing,
    target: &Target,
    name: &str,
    staging: &Path,
    work: &Path,
) -> Result<std::result::Result<Manifest, String>> {
    let bytes = remote.read(listing, &Manifest::manifest_path(name))?;
    let manifest = match Manifest::parse(&bytes, name, &target.url) {
        Ok(manifest) => manifest,
        Err(e @ Error::NewerSnapshot { .. }) => return Err(e),
        Err(e) => return Ok(Err(e.to_string())),
    };
    let dir = work_dir(work)?;
    let data = dir.path().join("snapshot.redb.zst");
    remote.download(listing, &manifest, &data)?;
    let (size, sha256) = sha256_of(&data)?;
    if size != manifest.size || sha256 != manifest.sha256 {
        return Ok(Err(format!(
            "snapshot {name}: its data has {size} bytes and sha256 {sha256}, its manifest says {} bytes and {}",
            manifest.size, manifest.sha256
        )));
    }
    let db_bytes = match decompress(&data, staging) {
        Ok(n) => n,
        Err(e) => return Ok(Err(format!("snapshot {name}: does not decompress ({e})"))),
    };
    drop(dir);
    if db_bytes != manifest.db_bytes {
        return Ok(Err(format!(
            "snapshot {name}: decompresses to {db_bytes} bytes, its manifest says {}",
            manifest.db_bytes
        )));
    }
    Ok(check_contents(staging, &manifest).map(|()| manifest))
}

/// The restored file is a run database holding what the manifest says.
fn check_contents(staging: &Path, manifest: &Manifest) -> std::result::Result<(), String> {
    let name = &manifest.name;
    let read = || -> distill_storage::Result<(String, u64, u64)> {
        let reader = RunReader::open(staging)?;
        let snapshot = reader.snapshot()?;
        Ok((
            snapshot.meta()?.signature,
            snapshot.log_len()?,
            snapshot.cache_len()?,
        ))
    };
    let (signature, log_len, cache_len) =
        read().map_err(|e| format!("snapshot {name}: not a readable run database ({e})"))?;
    let expected = (
        manifest.signature.as_str(),
        manifest.log_position,
        manifest.cache_entries,
    );
    if (signature.as_str(), log_len, cache_len) != expected {
        return Err(format!(
            "snapshot {name}: holds signature {signature}, log position {log_len} and {cache_len} cached answers, its manifest says {}, {} and {}",
            manifest.signature, manifest.log_position, manifest.cache_entries
        ));
    }
    Ok(())
}

/// Marks a run caught mid-way as interrupted (its process is gone) and records the restore.
fn settle(staging: &Path, report: &CheckpointReport) -> Result<()> {
    let log = RunLog::open(staging)?;
    log.mark_interrupted()?;
    let (key, value) = report.record();
    log.commit(Progress::new().record(key, Some(value)))?;
    Ok(())
}
