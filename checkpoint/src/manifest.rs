//! The manifest: the small JSON file written after a snapshot's data is complete. A snapshot
//! exists for readers only through its manifest, so a reader never sees a half snapshot.
//!
//! Layout in a run's folder (see [`crate::Target::folder`]):
//! `manifests/NAME.json` and `data/NAME.redb.zst`, where NAME is the log position (20 digits)
//! and the time in ms (13 digits): names sort oldest to newest.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Version of the snapshot format this build writes and the newest it reads: 1 is a redb run
/// database (every table of one read transaction) compressed with zstd.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Folder of the manifests in a run's folder.
pub const MANIFESTS: &str = "manifests";
/// Folder of the data in a run's folder.
pub const DATA: &str = "data";

/// What a snapshot is: enough to find, verify and judge it without downloading it. Holds no
/// credential and no URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SNAPSHOT_FORMAT`] of the distill that wrote it.
    pub format: u32,
    /// The snapshot's name (see the module).
    pub name: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The shard, `I-of-N`.
    pub shard: String,
    /// The pipeline's signature recorded in the run database.
    pub signature: String,
    /// The run database's format version.
    pub storage_format: u32,
    /// The run log's length at the snapshot: the position a restored run resumes from.
    pub log_position: u64,
    /// Answers in the request cache at the snapshot (never paid for again after a restore).
    pub cache_entries: u64,
    /// The run's status at the snapshot (`running`, `finished`...).
    pub run_status: String,
    /// When it was taken, in ms since the Unix epoch.
    pub taken_ms: u64,
    /// The data object, relative to the run's folder.
    pub data: String,
    /// The data's compression.
    pub compression: String,
    /// Bytes of the data object.
    pub size: u64,
    /// sha256 of the data object, hex.
    pub sha256: String,
    /// Bytes of the run database once decompressed.
    pub db_bytes: u64,
    /// The program that wrote it.
    pub created_by: String,
}

impl Manifest {
    /// The name of a snapshot taken at `log_position` at `taken_ms`.
    pub fn name_for(log_position: u64, taken_ms: u64) -> String {
        format!("{log_position:020}-{taken_ms:013}")
    }

    /// Path of the manifest of `name`, relative to the run's folder.
    pub fn manifest_path(name: &str) -> String {
        format!("{MANIFESTS}/{name}.json")
    }

    /// Path of the data of `name`, relative to the run's folder.
    pub fn data_path(name: &str) -> String {
        format!("{DATA}/{name}.redb.zst")
    }

    /// The snapshot name in a manifest's or a data object's path relative to the run's folder,
    /// if it is one.
    pub fn name_in(path: &str) -> Option<(&'static str, String)> {
        let (folder, file) = path.split_once('/')?;
        let (kind, name) = match folder {
            MANIFESTS => (MANIFESTS, file.strip_suffix(".json")?),
            DATA => (DATA, file.strip_suffix(".redb.zst")?),
            _ => return None,
        };
        let valid = name.len() == 34
            && name.as_bytes()[20] == b'-'
            && name
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 20 || b.is_ascii_digit());
        valid.then(|| (kind, name.to_owned()))
    }

    /// The manifest as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a manifest, checking that it names itself `name` and that its format is one this
    /// build reads. `url` names the target in errors.
    pub fn parse(bytes: &[u8], name: &str, url: &str) -> Result<Self> {
        let bad = |detail: String| Error::BadSnapshot {
            url: url.to_owned(),
            detail: format!("manifest {name}: {detail}"),
        };
        // The format first: a newer distill may have changed everything else.
        let raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        let format = raw["format"]
            .as_u64()
            .ok_or_else(|| bad("no `format`".into()))?;
        if format > u64::from(SNAPSHOT_FORMAT) {
            return Err(Error::NewerSnapshot {
                url: url.to_owned(),
                name: name.to_owned(),
                what: "snapshot format",
                found: u32::try_from(format).unwrap_or(u32::MAX),
                supported: SNAPSHOT_FORMAT,
            });
        }
        let manifest: Manifest =
            serde_json::from_value(raw).map_err(|e| bad(format!("unreadable ({e})")))?;
        if manifest.name != name {
            return Err(bad(format!("it names itself {}", manifest.name)));
        }
        if manifest.data != Self::data_path(name) {
            return Err(bad(format!(
                "its data is {}, not {}",
                manifest.data,
                Self::data_path(name)
            )));
        }
        if manifest.storage_format > distill_storage::FORMAT_VERSION {
            return Err(Error::NewerSnapshot {
                url: url.to_owned(),
                name: name.to_owned(),
                what: "run database format",
                found: manifest.storage_format,
                supported: distill_storage::FORMAT_VERSION,
            });
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let name = Manifest::name_for(42, 1_700_000_000_000);
        Manifest {
            format: SNAPSHOT_FORMAT,
            data: Manifest::data_path(&name),
            name,
            pipeline: "p".into(),
            shard: "0-of-1".into(),
            signature: "s".into(),
            storage_format: distill_storage::FORMAT_VERSION,
            log_position: 42,
            cache_entries: 3,
            run_status: "running".into(),
            taken_ms: 1_700_000_000_000,
            compression: "zstd".into(),
            size: 10,
            sha256: "00".into(),
            db_bytes: 20,
            created_by: "test".into(),
        }
    }

    #[test]
    fn names_sort_by_position_then_time_and_are_found_in_paths() {
        let a = Manifest::name_for(9, 5_000);
        let b = Manifest::name_for(10, 1_000);
        let c = Manifest::name_for(10, 2_000);
        assert!(a < b && b < c);
        assert_eq!(
            Manifest::name_in(&Manifest::manifest_path(&b)),
            Some((MANIFESTS, b.clone()))
        );
        assert_eq!(
            Manifest::name_in(&Manifest::data_path(&c)),
            Some((DATA, c.clone()))
        );
        for other in [
            "data/x.redb.zst",
            "manifests/1.json",
            "other/a.json",
            "data/#1",
        ] {
            assert_eq!(Manifest::name_in(other), None, "{other}");
        }
    }

    #[test]
    fn a_manifest_reads_back_and_a_newer_or_odd_one_is_refused() {
        let m = sample();
        let back = Manifest::parse(&m.to_json(), &m.name, "s3://b").unwrap();
        assert_eq!(back, m);
        let mut newer: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        newer["format"] = 99.into();
        newer["fields"] = "changed".into();
        let err = Manifest::parse(newer.to_string().as_bytes(), &m.name, "s3://b").unwrap_err();
        assert!(err.to_string().contains("upgrade distill"), "{err}");
        let err = Manifest::parse(&m.to_json(), "other", "s3://b").unwrap_err();
        assert!(err.to_string().contains("names itself"), "{err}");
        let err = Manifest::parse(b"{", &m.name, "s3://b").unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
}
