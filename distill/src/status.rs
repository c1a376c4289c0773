//! Where a run stands: its steps and its pushes, from one snapshot (never blocks the run).

use crate::error::Result;
use distill_engine::{PipelineSpec, RunReport};
use distill_hub::PushReport;
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
}

/// Reads the status of the run in `db`, from one snapshot.
pub fn status(db: &Path) -> Result<Status> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let run = distill_engine::status_of(&snapshot, db)?;
    let spec = PipelineSpec::from_yaml(&snapshot.meta()?.pipeline, db)?;
    let pushes = distill_hub::push_reports(&snapshot, &spec)?;
    Ok(Status { run, pushes })
}
