//! One snapshot, start to end: pack it beside the run database, upload its data, then its
//! manifest, then prune the snapshots it makes obsolete.

use crate::error::Result;
use crate::pack::pack;
use crate::record::{CheckpointReport, Origin};
use crate::remote::Remote;
use crate::target::{Identity, Target};
use distill_hub::HubAccess;
use std::path::{Path, PathBuf};

/// Takes snapshots of one run to one target.
pub struct Checkpointer {
    target: Target,
    identity: Identity,
    remote: Remote,
    keep: u32,
    work_dir: PathBuf,
}

impl Checkpointer {
    /// Snapshots of `identity`'s run to `url`, keeping the `keep` newest; temporary files go
    /// to `work_dir` (the run database's folder). Hub access for `hf://` targets.
    pub fn open(
        url: &str,
        identity: Identity,
        keep: u32,
        work_dir: &Path,
        hub: &HubAccess,
    ) -> Result<Self> {
        let target = Target::parse(url)?;
        let remote = Remote::open(&target, &identity, hub)?;
        Ok(Self {
            target,
            identity,
            remote,
            keep: keep.max(1),
            work_dir: work_dir.to_path_buf(),
        })
    }

    /// The target's URL.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// The run's folder in the target.
    pub fn folder(&self) -> String {
        self.target.folder(&self.identity)
    }

    /// Checks that the target answers (and creates a Hub repository, private): a bad
    /// credential or a missing bucket shows here, before the run spends anything.
    pub fn prepare(&self) -> Result<()> {
        self.remote.prepare()?;
        self.remote.list().map(|_| ())
    }

    /// Takes a snapshot of `snapshot`'s commit, uploads it and prunes older ones. The report
    /// says what is now the newest complete snapshot.
    pub fn take(&self, snapshot: &distill_storage::Snapshot) -> Result<CheckpointReport> {
        let packed = pack(snapshot, &self.identity, &self.work_dir)?;
        let listing = self.remote.list()?;
        let prune = listing.prune(&packed.manifest.name, self.keep);
        self.remote
            .publish(&packed.file, &packed.manifest, &prune)?;
        tracing::info!(
            "checkpoint: snapshot {} ({} bytes, log position {}) at {}/{}{}",
            packed.manifest.name,
            packed.manifest.size,
            packed.manifest.log_position,
            self.target.url,
            self.folder(),
            if prune.manifests.is_empty() {
                String::new()
            } else {
                format!(", {} older removed", prune.manifests.len())
            }
        );
        Ok(CheckpointReport::new(
            &self.target.url,
            &self.folder(),
            &packed.manifest,
            Origin::Uploaded,
        ))
    }
}
