//! Tasks: steps that call an LLM. The engine gives them the run's request cache, their
//! counters and the stop flag; the LLM crate implements them.

use crate::budget::Budget;
use crate::step::{Lifecycle, StepResult};
use distill_storage::{Progress, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Prefixes of the records that tasks keep about work paid for and still under way at a
/// provider (batch jobs): a new run in the same database (`--new`) keeps them, so the work is
/// collected instead of paid for again.
pub const KEPT_RECORDS: &[&str] = &["batch:", "batchkeys:"];

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

    /// The run's records whose keys start with `prefix`, with their values.
    fn records(&self, prefix: &str) -> distill_storage::Result<Vec<(String, Vec<u8>)>>;

    /// Commits `unit` (records, cache entries...) durably, with the task's pending counters,
    /// before returning.
    fn commit(&self, unit: Progress) -> distill_storage::Result<()>;
}

/// Told when a window handed to a [`Prefetch`] is ready to process (`Ok`), or cannot be
/// (`Err`: the step fails on that window). Called from any thread.
pub type Ready = Arc<dyn Fn(u64, StepResult<()>) + Send + Sync>;

/// A task's answers fetched ahead of processing, outside the worker pool: provider batch
/// jobs that may take a day. The scheduler hands each input window of the task to it instead
/// of to a worker, and dispatches the window once [`Ready`] says its answers are in the
/// request cache, so that `process` (cache first) finds them there. Waiting windows hold no
/// worker and do not count as batches in flight.
pub trait Prefetch: Send + Sync {
    /// Takes window `window` of the step (its rows as `process` will see them; `last`: no
    /// window follows). Returns at once.
    fn window(&self, window: u64, rows: Vec<Row>, last: bool);

    /// Nothing else in the stage can move: what waits is to be sent now rather than when more
    /// rows come.
    fn flush(&self);

    /// Whether every waiting window waits on work the provider has, with nothing to do here
    /// but poll it.
    fn parked(&self) -> bool;

    /// Whether a run whose only remaining work is at the provider should end (and be run again
    /// later to collect it) rather than wait.
    fn exit_when_parked(&self) -> bool;

    /// Rows of waiting windows the scheduler may hand over before it pauses the step.
    fn max_waiting_rows(&self) -> u64;

    /// A short description of the work waiting at the provider, for the run's message.
    fn describe(&self) -> String;

    /// Ends the fetching (the stage is over, or the run stops); work at the provider goes on,
    /// and a later run takes it up.
    fn close(&self);
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
    fn check_budgeted(&self) -> StepResult<()> {
        Ok(())
    }

    /// The task's prefetcher for this stage, when it fetches answers ahead (batch mode):
    /// called once the task is loaded, with the step's name, its context and who to tell
    /// when a window is ready. `None` (the default): windows go straight to workers.
    fn prefetch(
        &self,
        step: &str,
        ctx: &Arc<dyn TaskContext>,
        ready: Ready,
    ) -> StepResult<Option<Box<dyn Prefetch>>> {
        let _ = (step, ctx, ready);
        Ok(None)
    }
}

/// The error a step returns when it gave up a batch because the run is stopping.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stopped before the batch was done")]
pub struct Stopped;
