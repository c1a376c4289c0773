//! The one error type of the engine crate, and the classification every distill crate uses.

use crate::step::StepError;
use std::path::PathBuf;

/// What kind of failure an error is, for callers that act on it (the CLI's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The pipeline is invalid: bad YAML, an unknown step, a missing column, a bad parameter.
    Invalid,
    /// A step failed; everything committed is kept, and a fixed run resumes.
    StepFailed,
    /// The run was stopped on request; it resumes where it stopped.
    Interrupted,
    /// The spending budget (`budget_usd`) was reached: no request fits in what is left.
    Budget,
    /// The run ended with only provider batch jobs left to wait for (`on_batch_wait: exit`);
    /// running it again collects them.
    Waiting,
    /// A global step waits for shards that have not reached its barrier yet; running them
    /// and then the global run again goes on.
    Behind,
    /// The run database failed (damaged, full disk, in use).
    Storage,
    /// A file could not be read or written.
    Io,
    /// A remote service (the Hub, an HTTP endpoint) failed or refused.
    Remote,
    /// A bug in distill itself.
    Bug,
    /// `--resume-from` found no snapshot of the run where it was told to look.
    NoSnapshot,
    /// `--resume-from` found snapshots, but none that verifies (checksum, format, contents).
    BadSnapshot,
    /// Anything else (a database that holds another pipeline, say).
    Other,
}

/// Everything that can go wrong defining or running a pipeline. Messages name the step, the
/// parameter, the column or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline file is not valid YAML or does not describe a pipeline.
    #[error("pipeline {path}: {detail}")]
    BadPipelineFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Two steps have the same name.
    #[error("step name '{step}' is used twice")]
    DuplicateStep {
        /// The name.
        step: String,
    },
    /// A step names a type no one registered.
    #[error("step '{step}': unknown step type '{kind}' (known: {known})")]
    UnknownStepType {
        /// The step.
        step: String,
        /// The type it names.
        kind: String,
        /// The registered types.
        known: String,
    },
    /// A step comes after a step that does not exist.
    #[error("step '{step}': comes after unknown step '{after}'")]
    UnknownPredecessor {
        /// The step.
        step: String,
        /// The missing predecessor.
        after: String,
    },
    /// The steps form a cycle.
    #[error("the pipeline has a cycle through steps: {}", steps.join(" -> "))]
    Cycle {
        /// Steps on the cycle.
        steps: Vec<String>,
    },
    /// A step's parameters are wrong.
    #[error("step '{step}': bad parameters: {detail}")]
    BadParams {
        /// The step.
        step: String,
        /// What is wrong, naming the parameter.
        detail: String,
    },
    /// A value (of a step's parameters, say) does not have the form expected.
    #[error("{}{detail}", path.as_ref().map(|p| format!("`{p}`: ")).unwrap_or_default())]
    BadValue {
        /// Where the value is (`generation.seed`), when it is not the whole value.
        path: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// A step could not reach its input when it was built (a remote service failed or
    /// refused): not a bad parameter.
    #[error("step '{step}': {source}")]
    InputUnreachable {
        /// The step.
        step: String,
        /// What failed (an [`crate::step::InputUnreachable`]).
        source: StepError,
    },
    /// A step's place in the pipeline or its settings are wrong.
    #[error("step '{step}': {detail}")]
    BadStep {
        /// The step.
        step: String,
        /// What is wrong.
        detail: String,
    },
    /// A section of the pipeline other than the steps (`push:`) is wrong.
    #[error("the `{section}:` section: {detail}")]
    BadSection {
        /// The section's name.
        section: &'static str,
        /// What is wrong, naming the field.
        detail: String,
    },
    /// A step needs a column that its predecessors do not provide.
    #[error("step '{step}': needs column '{column}', but its input has only [{}]", available.join(", "))]
    MissingColumn {
        /// The step.
        step: String,
        /// The missing column (after input mappings).
        column: String,
        /// The columns that are there.
        available: Vec<String>,
    },
    /// `load` was called on a step that is already loaded.
    #[error("step '{step}' is already loaded")]
    AlreadyLoaded {
        /// The step.
        step: String,
    },
    /// A step's `load` failed.
    #[error("step '{step}': load failed: {source}")]
    LoadFailed {
        /// The step.
        step: String,
        /// The step's error.
        source: StepError,
    },
    /// A step failed on a batch; everything committed before is kept.
    #[error("step '{step}' failed on batch {batch}: {source}")]
    StepFailed {
        /// The step.
        step: String,
        /// The input batch's sequence number.
        batch: u64,
        /// The step's error.
        source: StepError,
    },
    /// The run database holds another pipeline (by name).
    #[error(
        "run database {db} holds another pipeline ({found}, this one is {expected}); use a new --db file, or --new to start a new run in it that keeps its request cache"
    )]
    PipelineMismatch {
        /// The database.
        db: PathBuf,
        /// The pipeline stored in the database.
        found: String,
        /// The pipeline given.
        expected: String,
    },
    /// A generator's input changed since the run read from it.
    #[error(
        "step '{step}': its input changed since the run started (then: {then}; now: {now}); resuming would mix rows of two inputs. Run with --new to start over (paid LLM answers are kept), or with --allow-changed-inputs to recompute from this step on"
    )]
    InputChanged {
        /// The generator.
        step: String,
        /// The fingerprint recorded by the run.
        then: String,
        /// The fingerprint now.
        now: String,
    },
    /// A shard spec that is not `I/N` with `0 <= I < N`, or shard databases that do not make
    /// one set of shards.
    #[error("bad shard: {detail}")]
    BadShard {
        /// What is wrong.
        detail: String,
    },
    /// The run database belongs to another shard (or is sharded and the run is not, or the
    /// other way round): resuming it would mix two shards' rows.
    #[error(
        "run database {db} holds {recorded} and this run is {requested}; give each shard its own --db, or --new to start a new run in it"
    )]
    ShardMismatch {
        /// The database.
        db: PathBuf,
        /// What it recorded (`shard 0/4`, `global`, `an unsharded run`).
        recorded: String,
        /// What this run is.
        requested: String,
    },
    /// A global step cannot run yet: some shards have not committed its input.
    #[error(
        "global step '{step}' waits for shards not at its barrier yet: {behind}; run them (they resume), then this again"
    )]
    ShardsBehind {
        /// The global step.
        step: String,
        /// The shards behind, with where each stands.
        behind: String,
    },
    /// A consumer read another number of rows of a step than the step gave: a step run
    /// again because its output was reclaimed (see [`crate::StepAction::DropReclaimed`])
    /// gave other rows than the first time, so the batches its consumers kept do not match.
    #[error(
        "step '{consumer}' read {read} rows of '{step}', but '{step}' gave {rows}: '{step}' ran again because a changed step reads its output again, and gave other rows than the first time (its output is not the same from run to run), so what '{consumer}' kept does not match; run with --new to start over (paid LLM answers are kept)"
    )]
    Regenerated {
        /// The step that ran again.
        step: String,
        /// The rows it gave this time.
        rows: u64,
        /// Its consumer that kept its batches.
        consumer: String,
        /// The rows of `step` the consumer had read (its cursor).
        read: u64,
    },
    /// The run was stopped on request; it can be resumed.
    #[error("run stopped on request; run the same command again to resume")]
    Interrupted,
    /// No request fits in what is left of the pipeline's `budget_usd`.
    #[error(
        "the budget of {limit} is reached: {spent} is spent and the next request may cost up to {needed}; raise `budget_usd` and run again to resume"
    )]
    BudgetReached {
        /// The budget.
        limit: crate::budget::Cost,
        /// What committed answers cost so far (earlier sessions included).
        spent: crate::budget::Cost,
        /// The worst-case cost of the request that did not fit.
        needed: crate::budget::Cost,
    },
    /// Only provider batch jobs remain, and the steps waiting on them say to end the run
    /// rather than wait (`on_batch_wait: exit`); running it again collects them.
    #[error(
        "waiting for provider batch jobs ({detail}); run the same command again later to collect them"
    )]
    Waiting {
        /// What waits, per step.
        detail: String,
    },
    /// The worker threads could not be started.
    #[error("cannot start the worker threads: {detail}")]
    Threads {
        /// The system's message.
        detail: String,
    },
    /// The engine reached a state it should never reach: a bug in distill.
    #[error("internal error (a bug in distill; committed work is kept): {detail}")]
    Internal {
        /// What went wrong, and where.
        detail: String,
    },
    /// The run log failed.
    #[error(transparent)]
    Storage(#[from] distill_storage::Error),
}

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadPipelineFile { .. }
            | Error::DuplicateStep { .. }
            | Error::UnknownStepType { .. }
            | Error::UnknownPredecessor { .. }
            | Error::Cycle { .. }
            | Error::BadParams { .. }
            | Error::BadValue { .. }
            | Error::BadStep { .. }
            | Error::BadSection { .. }
            | Error::MissingColumn { .. } => ErrorKind::Invalid,
            Error::StepFailed { source, .. } | Error::LoadFailed { source, .. } => {
                cause_kind(source.as_ref()).unwrap_or(ErrorKind::StepFailed)
            }
            Error::AlreadyLoaded { .. } => ErrorKind::StepFailed,
            Error::PipelineMismatch { .. }
            | Error::InputChanged { .. }
            | Error::Regenerated { .. } => ErrorKind::Other,
            Error::BadShard { .. } | Error::ShardMismatch { .. } => ErrorKind::Invalid,
            Error::ShardsBehind { .. } => ErrorKind::Behind,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::BudgetReached { .. } => ErrorKind::Budget,
            Error::Waiting { .. } => ErrorKind::Waiting,
            Error::Io { .. } | Error::Threads { .. } => ErrorKind::Io,
            Error::InputUnreachable { .. } => ErrorKind::Remote,
            Error::Internal { .. } => ErrorKind::Bug,
            Error::Storage(_) => ErrorKind::Storage,
        }
    }
}

/// The kind a step's error declares for itself: a [`Classified`] error's kind, or
/// [`ErrorKind::Storage`] for an error of the run log (a read of the request cache that
/// failed, say: then the step is not at fault, the database is). `None`: the step failed.
fn cause_kind(error: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut at = Some(error);
    while let Some(e) = at {
        if let Some(classified) = e.downcast_ref::<Classified>() {
            return Some(classified.kind);
        }
        if e.is::<distill_storage::Error>() {
            return Some(ErrorKind::Storage);
        }
        at = e.source();
    }
    None
}

/// A step's error that is not the step's failure (a budget reached, a bug, the run log), with
/// its kind, so the run's error is classified by what happened rather than where. It shows
/// as the error it wraps.
#[derive(Debug)]
pub struct Classified {
    kind: ErrorKind,
    error: StepError,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Classified {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// `error` as a step error of kind `kind` (see [`Classified`]).
pub fn classified(kind: ErrorKind, error: impl Into<StepError>) -> StepError {
    Box::new(Classified {
        kind,
        error: error.into(),
    })
}

/// Result with the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
