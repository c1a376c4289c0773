//! What the run database records of its snapshots, for `distill status`: one record per
//! target, `checkpoint:URL`, written after the snapshot's manifest is up (or after a restore).

use crate::manifest::Manifest;
use serde::{Deserialize, Serialize};

/// Prefix of the records' keys.
pub const RECORD_PREFIX: &str = "checkpoint:";

/// How a snapshot came to be the run's last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// This run uploaded it.
    Uploaded,
    /// This database was restored from it.
    Restored,
}

/// The last complete snapshot of a run at one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The target's URL (it holds no credential).
    pub url: String,
    /// The run's folder in it.
    pub folder: String,
    /// The snapshot's name.
    pub name: String,
    /// The run log's length at the snapshot.
    pub log_position: u64,
    /// Answers in the request cache at the snapshot.
    pub cache_entries: u64,
    /// When it was taken, in ms since the Unix epoch.
    pub taken_ms: u64,
    /// Bytes uploaded.
    pub size: u64,
    /// sha256 of the data, hex.
    pub sha256: String,
    /// Uploaded by the run, or restored from.
    pub origin: Origin,
}

impl CheckpointReport {
    /// The report of `manifest`, at `folder` of `url`.
    pub fn new(url: &str, folder: &str, manifest: &Manifest, origin: Origin) -> Self {
        Self {
            url: url.to_owned(),
            folder: folder.to_owned(),
            name: manifest.name.clone(),
            log_position: manifest.log_position,
            cache_entries: manifest.cache_entries,
            taken_ms: manifest.taken_ms,
            size: manifest.size,
            sha256: manifest.sha256.clone(),
            origin,
        }
    }

    /// The record's key and value.
    pub fn record(&self) -> (String, Vec<u8>) {
        (
            format!("{RECORD_PREFIX}{}", self.url),
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }
}

/// Every target's last snapshot recorded in the run database, newest first. Records that do
/// not read are left out (a report must not fail `status`).
pub fn checkpoint_reports(
    snapshot: &distill_storage::Snapshot,
) -> distill_storage::Result<Vec<CheckpointReport>> {
    let mut reports: Vec<CheckpointReport> = snapshot
        .records(RECORD_PREFIX)?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect();
    reports.sort_by_key(|r| std::cmp::Reverse(r.taken_ms));
    Ok(reports)
}
