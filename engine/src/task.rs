//! Tasks: steps that call an LLM. The engine gives them the run's request cache, their
//! counters and the stop flag; the LLM crate implements them.

use crate::budget::Budget;
use crate::step::{Lifecycle, StepResult};
use distill_storage::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the engine offers a task while it processes a batch.
pub trait TaskContext: Send + Sync {
    /// A response committed earlier for this request hash, if any. A failed read is an error,
    /// never a miss: a miss would pay again for an answer already paid for.
    fn cached(&self, key: &[u8; 32]) -> distill_storage::Result<Option<Vec<u8>>>;

    /// The responses committed for each of `keys` (see [`TaskContext::cached`]), read from
    /// one snapshot.
    fn cached_all(&self, keys: &[[u8; 32]]) -> distill_storage::Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.cached(key)).collect()
    }

    /// Commits a response durably before returning, so it is never paid for twice.
    fn store(&self, key: [u8; 32], response: Vec<u8>) -> distill_storage::Result<()>;

    /// Adds to one of the task's counters (requests, retries, tokens...).
    fn count(&self, name: &str, delta: u64);

    /// Commits pending counters (the engine calls it after each batch).
    fn flush(&self) {}

    /// The run's stop flag (set by Ctrl-C or SIGTERM): a task starts no new request once it
    /// is set, and its waits end early.
    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        None
    }

    /// Whether the run is stopping.
    fn stopping(&self) -> bool {
        self.stop_flag().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Commits several responses in one durable transaction (with the pending counters)
    /// before returning.
    fn store_all(&self, entries: Vec<([u8; 32], Vec<u8>)>) -> distill_storage::Result<()> {
        for (key, response) in entries {
            self.store(key, response)?;
        }
        Ok(())
    }

    /// The run's spending budget (`budget_usd`), shared by all its tasks: a priced request
    /// reserves its worst-case cost on it before it is sent. `None`: no budget.
    fn budget(&self) -> Option<Arc<Budget>> {
        None
    }
}

/// A step that calls an LLM for each row.
pub trait Task: Lifecycle {
    /// Columns each input row must have.
    fn inputs(&self) -> Vec<String>;

    /// Columns the task adds.
    fn outputs(&self) -> Vec<String>;

    /// Processes one input batch, using `ctx` for the request cache and accounting. A task
    /// that gives up because the run is stopping returns [`Stopped`] (boxed): the batch is
    /// then neither committed nor failed, and a resumed run does it again.
    fn process(&self, rows: Vec<Row>, ctx: &Arc<dyn TaskContext>) -> StepResult<Vec<Row>>;

    /// Whether the task makes exactly one output row of each input row, in order (the LLM
    /// tasks do: a failed request is a row with its error).
    fn keeps_rows(&self) -> bool {
        true
    }

    /// Checked when the pipeline has a `budget_usd`: whether the task can bound the cost of
    /// each request before sending it (an LLM task with a `price` needs
    /// `generation.max_tokens`). The message names the parameter.
    fn check_budgeted(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The error a step returns when it gave up a batch because the run is stopping.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stopped before the batch was done")]
pub struct Stopped;
