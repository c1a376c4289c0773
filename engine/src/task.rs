//! Tasks: steps that call an LLM. The client and the concrete tasks come with the LLM issue;
//! the engine already gives tasks what they need from the run log.

use crate::step::{Lifecycle, StepResult};
use distill_storage::Row;

/// What the engine offers a task while it processes a batch.
pub trait TaskContext: Send + Sync {
    /// A response committed earlier for this request hash, if any.
    fn cached(&self, key: &[u8; 32]) -> Option<Vec<u8>>;

    /// Commits a response durably before returning, so it is never paid for twice.
    fn store(&self, key: [u8; 32], response: Vec<u8>) -> StepResult<()>;

    /// Adds to one of the task's counters (requests, retries, tokens...).
    fn count(&self, name: &str, delta: u64);

    /// Commits pending counters (the engine calls it after each batch).
    fn flush(&self) {}
}

/// A step that calls an LLM for each row.
pub trait Task: Lifecycle {
    /// Columns each input row must have.
    fn inputs(&self) -> Vec<String>;

    /// Columns the task adds.
    fn outputs(&self) -> Vec<String>;

    /// Processes one input batch, using `ctx` for the request cache and accounting.
    fn process(&self, rows: Vec<Row>, ctx: &dyn TaskContext) -> StepResult<Vec<Row>>;
}
