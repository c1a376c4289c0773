//! The one error type of the engine crate.

use std::path::PathBuf;

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
    /// A step's place in the pipeline or its settings are wrong.
    #[error("step '{step}': {detail}")]
    BadStep {
        /// The step.
        step: String,
        /// What is wrong.
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
    #[error("step '{step}': load failed: {detail}")]
    LoadFailed {
        /// The step.
        step: String,
        /// The step's message.
        detail: String,
    },
    /// A step failed on a batch; everything committed before is kept.
    #[error("step '{step}' failed on batch {batch}: {detail}")]
    StepFailed {
        /// The step.
        step: String,
        /// The input batch's sequence number.
        batch: u64,
        /// The step's message.
        detail: String,
    },
    /// The run database holds another pipeline.
    #[error(
        "run database {db} holds a different pipeline (signature {found}, this pipeline is {expected}); use a new --db file, or --new to start a new run in it that keeps its request cache"
    )]
    PipelineMismatch {
        /// The database.
        db: PathBuf,
        /// Signature stored in the database.
        found: String,
        /// Signature of the pipeline given.
        expected: String,
    },
    /// The run was stopped on request; it can be resumed.
    #[error("run stopped on request; run the same command again to resume")]
    Interrupted,
    /// Nothing to export.
    #[error("nothing to export: {detail}")]
    NothingToExport {
        /// Why.
        detail: String,
    },
    /// Pushing to the Hub failed for good (or for longer than the push may wait); everything
    /// pushed so far is recorded, and `distill push` goes on from there.
    #[error("push to {repo}: {detail}")]
    Push {
        /// The repository.
        repo: String,
        /// What failed (never the token).
        detail: String,
    },
    /// The run log failed.
    #[error(transparent)]
    Storage(#[from] distill_storage::Error),
}

/// Result with the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
