//! Checkpoints: a run database that survives its machine. A consistent snapshot of the run
//! database, taken from one read transaction while the run goes on, compressed, uploaded in
//! parts to an object store (`s3://`, `gs://`, `az://`, `file://`) or a private Hub dataset
//! repository (`hf://datasets/...`), with a small manifest written last; and the way back:
//! the newest complete snapshot fetched, verified and put in place of a missing database.
//!
//! - [`CheckpointWorker`]: beside a run whose pipeline has a `checkpoint:` section.
//! - [`checkpoint`]: one snapshot by hand (`distill checkpoint`), of a live run or not.
//! - [`restore`]: `distill run --resume-from URL` on a machine without the database.
//! - [`checkpoint_reports`]: the last snapshot of each target, for `distill status`.
//!
//! Where a restored run stands: exactly at the snapshot's commit. Batches committed after it
//! are computed again; LLM answers cached after it are asked (and paid) again; answers cached
//! before it never are.
#![deny(missing_docs)]

mod checkpointer;
mod error;
mod fault;
mod manifest;
mod pack;
mod record;
mod remote;
mod restore;
mod secrets;
mod target;
mod worker;

pub use checkpointer::Checkpointer;
pub use error::{Error, Result};
pub use manifest::{Manifest, SNAPSHOT_FORMAT};
pub use record::{CheckpointReport, Origin, RECORD_PREFIX, checkpoint_reports};
pub use restore::{Restored, restore};
pub use secrets::CREDENTIAL_VARIABLES;
pub use target::{Identity, Place, Target};
pub use worker::{CheckpointStatus, CheckpointWorker};

pub use distill_storage::now_ms;

use distill_engine::PipelineSpec;
use distill_hub::HubAccess;
use distill_storage::{Progress, RunLog, RunReader};
use std::path::Path;

/// What [`checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByHand {
    /// The snapshot uploaded.
    pub report: CheckpointReport,
    /// Whether it is recorded in the run database (not while a run holds it: its own
    /// snapshots are recorded there).
    pub recorded: bool,
}

/// The identity of the run in the database `db`: its pipeline's name, as stored.
pub fn identity_of(snapshot: &distill_storage::Snapshot, db: &Path) -> Result<Identity> {
    let spec = PipelineSpec::from_yaml(&snapshot.meta()?.pipeline, db)?;
    Ok(Identity::of_pipeline(&spec.name))
}

/// Takes one snapshot of the run database `db` (live in another process or not) to `url`,
/// keeping the `keep` newest snapshots there.
pub fn checkpoint(db: &Path, url: &str, keep: u32, hub: &HubAccess) -> Result<ByHand> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let identity = identity_of(&snapshot, db)?;
    let work_dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let checkpointer = Checkpointer::open(url, identity, keep, work_dir, hub)?;
    checkpointer.prepare()?;
    let report = checkpointer.take(&snapshot)?;
    drop((snapshot, reader));
    let recorded = match RunLog::open(db) {
        Ok(log) => {
            let (key, value) = report.record();
            log.commit(Progress::new().record(key, Some(value)))?;
            true
        }
        Err(distill_storage::Error::InUse { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    Ok(ByHand { report, recorded })
}
