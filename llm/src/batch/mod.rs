//! Batch mode: a task's requests sent as provider batch jobs (the OpenAI Batch protocol), at
//! the provider's batch price, instead of one by one.
//!
//! Batch mode is a prefetch into the request cache. The scheduler hands each input window of a
//! batch-mode task to the step's manager (`manager.rs`, a thread outside the worker pool); the
//! manager gathers the windows' cache misses into jobs of up to `batch_window` rows, submits
//! them exactly once (`record.rs` says how), polls them every `poll_secs`, commits their
//! answers to the request cache and reports the windows ready. Then `process` runs as online,
//! cache first, and finds every answer there: the rows are the rows an online run makes.
//! A task takes part through [`Planner`] (its requests), one line in its `Task::prefetch`.

mod manager;
mod planner;
mod provider;
mod record;
mod report;

pub use manager::{BatchFetcher, Settled};
pub use planner::{Known, Planner};
pub use provider::{BatchObject, BatchStatus, Connection, FileObject, Provider, RequestCounts};
pub use record::{JobRecord, Phase};
pub use report::{BatchJobReport, CancelledJob, cancel, job_reports, warn_open_jobs};

use serde::Deserialize;

/// Most requests (lines) in one job: the provider's limit.
pub const MAX_LINES: u64 = 50_000;
/// Most bytes in one job's input file: the provider's limit of 200 MB.
pub const MAX_FILE_BYTES: usize = 200_000_000;
/// Jobs a failed request is resubmitted to (`on_batch_failure: resubmit`) before it is marked
/// failed.
pub const MAX_RESUBMITS: u32 = 3;

/// How a task sends its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each request on its own, as rows come.
    #[default]
    Online,
    /// In provider batch jobs.
    Batch,
}

/// What a run does when the only work left is at the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBatchWait {
    /// Wait for the jobs, polling them.
    #[default]
    Wait,
    /// End the run (exit code 75); a later `distill run` collects the jobs.
    Exit,
}

/// What becomes of a request that a job failed, or did not do before it expired or was
/// cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBatchFailure {
    /// Asked online when its window is processed.
    #[default]
    Online,
    /// Put into a new job (at most [`MAX_RESUBMITS`] times, then marked).
    Resubmit,
    /// Marked failed: its row's outputs are null, the error in the task's error column.
    Mark,
}
