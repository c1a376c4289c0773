//! What the run log keeps of each provider batch job, so that a killed run takes its jobs up
//! again instead of paying for them twice.
//!
//! Two records per job, both under the step's name and the job's hash (the hash of its request
//! set, also its tag at the provider): `batch:STEP:HASH`, the job's state as JSON (small,
//! rewritten as the job moves), and `batchkeys:STEP:HASH`, its requests' cache keys (32 bytes
//! each, written once, dropped once the job is collected).

use crate::batch::provider::{BatchStatus, RequestCounts};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Prefix of the job state records.
pub const RECORD: &str = "batch:";
/// Prefix of the job key records.
pub const KEYS: &str = "batchkeys:";

/// A request's cache key.
pub type Key = [u8; 32];

/// How far a job got on our side; each phase is committed before the next call to the
/// provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The request set is decided; nothing is at the provider (an upload may be, unrecorded:
    /// an orphan file costs nothing). A later run drops the job and plans again.
    Planned,
    /// The input file is uploaded (its id recorded); the job may have been created, unrecorded:
    /// a later run looks for it by its tag and input file before creating it.
    Uploaded,
    /// The job is created (its id recorded): it is only polled from now on.
    Submitted,
    /// Its answers are in the request cache, its failures recorded here.
    Collected,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Uploaded => "uploaded",
            Phase::Submitted => "submitted",
            Phase::Collected => "collected",
        }
    }
}

/// One job's state, as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The step whose requests it holds.
    pub step: String,
    /// The hash of its request set (hex): its tag at the provider (`metadata.distill_job`).
    pub hash: String,
    /// Requests in it.
    pub lines: u64,
    /// How far it got.
    pub phase: Phase,
    /// The uploaded input file.
    #[serde(default)]
    pub file_id: Option<String>,
    /// When the provider stored the input file (its clock, Unix seconds).
    #[serde(default)]
    pub file_created_at: Option<i64>,
    /// The provider's job id.
    #[serde(default)]
    pub batch_id: Option<String>,
    /// The job's status when last seen.
    #[serde(default)]
    pub status: Option<BatchStatus>,
    /// The provider's counts when last seen.
    #[serde(default)]
    pub counts: RequestCounts,
    /// Answers committed to the request cache when it was collected.
    #[serde(default)]
    pub answered: u64,
    /// Requests without a usable answer (cache key in hex: why), once collected.
    #[serde(default)]
    pub failures: BTreeMap<String, String>,
    /// When the job was planned (ms since the epoch).
    pub created_ms: u64,
    /// When the record last changed (ms since the epoch).
    pub updated_ms: u64,
    /// The job's worst-case cost at batch prices (nano-dollars; 0 when the step has no
    /// price), held on the run's budget while the job is open, also by a resumed run.
    #[serde(default)]
    pub worst_nanos: u64,
}

impl JobRecord {
    /// The record's key.
    pub fn key(&self) -> String {
        record_key(&self.step, &self.hash)
    }

    /// The key of its key list.
    pub fn keys_key(&self) -> String {
        format!("{KEYS}{}:{}", self.step, self.hash)
    }

    /// The record as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored record; one that does not decode is a damaged database.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Batch {
            detail: format!("the run database holds a damaged batch job record '{key}': {e}"),
        })
    }

    /// Whether the job still has work at the provider (or may have).
    pub fn is_open(&self) -> bool {
        self.phase != Phase::Collected
    }
}

/// The key of the record of `step`'s job `hash`.
pub fn record_key(step: &str, hash: &str) -> String {
    format!("{RECORD}{step}:{hash}")
}

/// The hash of a request set: its keys, each with the number of jobs that failed it before
/// (so a job resubmitting failed requests has its own hash).
pub fn job_hash(keys: &[(Key, u32)]) -> String {
    let mut sorted = keys.to_vec();
    sorted.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"distill batch job 1\n");
    for (key, attempt) in &sorted {
        hasher.update(key);
        hasher.update(&attempt.to_le_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// Keys as stored: 32 bytes each.
pub fn encode_keys(keys: &[Key]) -> Vec<u8> {
    keys.concat()
}

/// Stored keys; a length that is not a multiple of 32 is a damaged database.
pub fn decode_keys(record: &str, bytes: &[u8]) -> Result<Vec<Key>> {
    if !bytes.len().is_multiple_of(32) {
        return Err(Error::Batch {
            detail: format!(
                "the run database holds a damaged batch key list '{record}' ({} bytes)",
                bytes.len()
            ),
        });
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut key = [0u8; 32];
            key.copy_from_slice(c);
            key
        })
        .collect())
}

/// A key in hex (a request's `custom_id`).
pub fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key from hex; `None` when it is not 64 hex digits.
pub fn from_hex(text: &str) -> Option<Key> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_keeps_the_job_records() {
        for prefix in [RECORD, KEYS] {
            assert!(distill_engine::task::KEPT_RECORDS.contains(&prefix));
        }
    }

    #[test]
    fn keys_and_hashes() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(from_hex(&hex(&a)), Some(a));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(decode_keys("k", &encode_keys(&[a, b])).unwrap(), vec![a, b]);
        assert!(decode_keys("k", &[0; 33]).is_err());
        // Order does not matter; a resubmission (attempt 1) is another job.
        assert_eq!(job_hash(&[(a, 0), (b, 0)]), job_hash(&[(b, 0), (a, 0)]));
        assert_ne!(job_hash(&[(a, 0)]), job_hash(&[(a, 1)]));
    }
}
