//! Where the pushes recorded in a run database stand, for `distill status`.

use crate::error::{Error, Result};
use crate::pusher::PushStatus;
use distill_engine::PipelineSpec;
use distill_storage::Snapshot;
use serde::Serialize;

/// Where a push stands, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    /// Every committed leaf row is on the Hub.
    UpToDate,
    /// Rows are committed that are not on the Hub yet; the last round went well.
    Behind,
    /// The last round failed in a way that time may cure; it is being retried.
    Retrying,
    /// The last round failed in a way that needs a change (the token, a permission).
    Stopped,
}

impl PushState {
    /// Words for users: "up to date", "behind", "retrying", "stopped".
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::UpToDate => "up to date",
            PushState::Behind => "behind",
            PushState::Retrying => "retrying",
            PushState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for PushState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A push to the Hub as recorded in the run database.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// What the pusher recorded.
    #[serde(flatten)]
    pub status: PushStatus,
    /// Rows committed by the leaves and not on the Hub yet.
    pub behind_rows: u64,
    /// Where it stands.
    pub state: PushState,
}

/// The pushes recorded in `snapshot` of a run of `spec`. A damaged record is an error naming it.
pub fn push_reports(snapshot: &Snapshot, spec: &PipelineSpec) -> Result<Vec<PushReport>> {
    let mut committed = 0;
    for leaf in spec.leaves() {
        committed += snapshot.step(&leaf)?.map_or(0, |r| r.rows);
    }
    let mut reports = Vec::new();
    for (key, bytes) in snapshot.records("hub:")? {
        let status: PushStatus = serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        let behind_rows = committed.saturating_sub(status.total_rows());
        let state = match (&status.last_error, status.fatal) {
            (Some(_), true) => PushState::Stopped,
            (Some(_), false) => PushState::Retrying,
            (None, _) if behind_rows == 0 => PushState::UpToDate,
            (None, _) => PushState::Behind,
        };
        reports.push(PushReport {
            status,
            behind_rows,
            state,
        });
    }
    Ok(reports)
}
