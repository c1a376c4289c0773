//! Where a run stands: its steps and its pushes, from one snapshot (never blocks the run).

use crate::error::Result;
use distill_engine::{PipelineSpec, RunReport};
use distill_hub::PushReport;
use distill_llm::batch::BatchJobReport;
use distill_storage::RunReader;
use serde::Serialize;
use std::path::Path;

/// A run's status and its pushes to the Hub.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The run and its steps.
    #[serde(flatten)]
    pub run: RunReport,
    /// Pushes to the Hub recorded in the run database, with the rows still to push.
    pub pushes: Vec<PushReport>,
    /// Provider batch jobs of the run's batch-mode steps, oldest first.
    pub batch_jobs: Vec<BatchJobReport>,
    /// The last complete snapshot at each checkpoint target, newest first.
    pub checkpoints: Vec<distill_checkpoint::CheckpointReport>,
}

/// Reads the status of the run in `db`, from one snapshot.
pub fn status(db: &Path) -> Result<Status> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let run = distill_engine::status_of(&snapshot, db)?;
    let spec = PipelineSpec::from_yaml(&snapshot.meta()?.pipeline, db)?;
    let pushes = distill_hub::push_reports(&snapshot, &spec)?;
    let batch_jobs = distill_llm::batch::job_reports(&snapshot)?;
    let checkpoints = distill_checkpoint::checkpoint_reports(&snapshot)?;
    Ok(Status {
        run,
        pushes,
        batch_jobs,
        checkpoints,
    })
}

/// Asks the provider to cancel every open batch job of the run in `db` (with each step's
/// endpoint and API key variable, read from the environment); returns the jobs asked. The
/// database is only read: the run's next session sees the jobs cancelled.
pub fn cancel(db: &Path) -> Result<Vec<distill_llm::batch::CancelledJob>> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let spec = PipelineSpec::from_yaml(&snapshot.meta()?.pipeline, db)?;
    Ok(distill_llm::batch::cancel(&snapshot, &spec)?)
}
