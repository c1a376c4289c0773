//! What a run tells its observer (the CLI draws progress bars from it).

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunEvent {
    /// The database was opened: what the run keeps of its earlier progress.
    Planned(crate::resume::ResumePlan),
    /// The run started; `resumed` when the database already held progress.
    Started {
        /// Whether earlier progress was found.
        resumed: bool,
    },
    /// A stage's steps were loaded and it started.
    StageStarted {
        /// Stage index.
        stage: usize,
        /// Its steps.
        steps: Vec<String>,
    },
    /// A step's batch is durable.
    BatchCommitted {
        /// The step.
        step: String,
        /// Rows committed by the step so far.
        rows: u64,
        /// Batches committed by the step so far.
        batches: u64,
        /// Whether that was the step's last batch.
        last: bool,
    },
    /// A step failed.
    StepFailed {
        /// The step.
        step: String,
        /// The error.
        error: String,
    },
}

/// Receives run events. Called from the scheduler thread: keep it quick.
pub trait Observer: Send + Sync {
    /// One event.
    fn on_event(&self, event: &RunEvent);
}
