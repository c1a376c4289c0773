//! The records of the run log: batches, step and run states, log entries, run metadata.

use crate::value::Row;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A batch of rows produced by one step. `seq` counts the step's batches from 0 without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Name of the step that produced the batch.
    pub step: String,
    /// Position of the batch in the step's output, from 0.
    pub seq: u64,
    /// The rows, in order.
    pub rows: Vec<Row>,
    /// Whether this is the step's last batch.
    pub last: bool,
}

/// Where a step is in its lifecycle. Serialized in lower case (`"running"`); stored by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not started yet.
    #[default]
    Pending,
    /// Acquiring its resources.
    Loading,
    /// Resources acquired, not yet processing.
    Loaded,
    /// Processing batches.
    Running,
    /// Produced its last batch.
    Finished,
    /// Stopped by an error (see [`StepRecord::error`]).
    Failed,
    /// Resources released.
    Unloaded,
}

impl StepState {
    /// Lower-case name, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Loading => "loading",
            StepState::Loaded => "loaded",
            StepState::Running => "running",
            StepState::Finished => "finished",
            StepState::Failed => "failed",
            StepState::Unloaded => "unloaded",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the log knows about one step, updated in the same transaction as its batches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepRecord {
    /// Lifecycle state: the latest transition, except that a step unloaded after it finished
    /// or failed stays `finished` or `failed` (the log has every transition).
    pub state: StepState,
    /// The error that failed the step, if any.
    pub error: Option<String>,
    /// Number of committed output batches (also the next batch's `seq`).
    pub batches: u64,
    /// Number of committed output rows.
    pub rows: u64,
    /// Whether the last batch is committed.
    pub done: bool,
    /// Free counters (requests, retries, tokens...), added to by commits.
    pub counters: BTreeMap<String, u64>,
    /// When the record last changed, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// Overall status of a run. Serialized in lower case (`"finished"`); stored by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Created, never started.
    #[default]
    Created,
    /// A process is running it (or was, until it died).
    Running,
    /// Stopped on request before the end; can be resumed.
    Stopped,
    /// Every step finished.
    Finished,
    /// A step failed and the run stopped.
    Failed,
    /// Its process died while running it (found by the next open, when no writer held the
    /// file); resumes like a stopped run. Last, so that older files keep their encoding.
    Interrupted,
    /// The run ended with only provider batch jobs left to wait for (`on_batch_wait: exit`);
    /// running it again collects them. After `Interrupted`, for the same reason.
    Waiting,
    /// A shard stopped at a global step's stage: everything before it is committed, and
    /// the global run goes on from here (then the shard again). After `Waiting`.
    #[serde(rename = "at_barrier")]
    AtBarrier,
}

impl RunStatus {
    /// Lower-case name, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Created => "created",
            RunStatus::Running => "running",
            RunStatus::Stopped => "stopped",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Waiting => "waiting",
            RunStatus::AtBarrier => "at_barrier",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run's current status and stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Overall status.
    pub status: RunStatus,
    /// Index of the stage being run, if one is.
    pub stage: Option<u32>,
    /// A message for users (the error of a failed run, for instance).
    pub message: Option<String>,
    /// When the state last changed, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// What a run database records about its pipeline, fixed when the run is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Format version of the database.
    pub format_version: u32,
    /// blake3 hash of the pipeline's canonical definition, hex encoded.
    pub signature: String,
    /// The canonical pipeline definition (never holds secrets).
    pub pipeline: String,
    /// When the run was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Version of distill that created the run.
    pub created_by: String,
}

/// One entry of the run's log. Entries are numbered from 0 without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log.
    pub seq: u64,
    /// Commit time, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub event: Event,
}

/// What a log entry announces. Each is committed together with the change it announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The run database was created.
    Created {
        /// The pipeline signature.
        signature: String,
    },
    /// A step committed an output batch.
    Batch {
        /// The step.
        step: String,
        /// The batch's position in the step's output.
        seq: u64,
        /// Number of rows.
        rows: u64,
        /// Whether it is the step's last batch.
        last: bool,
    },
    /// A step changed state.
    Step {
        /// The step.
        step: String,
        /// The new state.
        state: StepState,
        /// The error, when it failed.
        error: Option<String>,
    },
    /// The run changed status or stage.
    Run {
        /// The new status.
        status: RunStatus,
        /// The current stage.
        stage: Option<u32>,
    },
    /// A consumer advanced its offset.
    Offset {
        /// The consumer's name.
        consumer: String,
        /// The new offset.
        offset: u64,
    },
    /// The run moved to a changed pipeline, keeping the batches of the steps not dropped.
    Changed {
        /// The new pipeline signature.
        signature: String,
        /// The steps whose batches were dropped.
        dropped: Vec<String>,
    },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
