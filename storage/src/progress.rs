//! A unit of progress: everything that must become durable together.

use crate::model::{Batch, RunState, StepState};

/// Changes committed together in one transaction: a step's output batches, the input cursors
/// they consumed, state changes, counters, cache entries and consumer offsets. Either all of a
/// unit is in the database after a crash, or none of it.
///
/// Log entries announcing batches, state changes, run changes and offsets are added by the
/// commit itself, in the order: run state, step states, batches, offsets.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub(crate) batches: Vec<Batch>,
    pub(crate) cursors: Vec<(String, u64)>,
    pub(crate) states: Vec<(String, StepState, Option<String>)>,
    pub(crate) counters: Vec<(String, String, u64)>,
    pub(crate) run: Option<RunState>,
    pub(crate) cache: Vec<([u8; 32], Vec<u8>)>,
    pub(crate) offsets: Vec<(String, u64)>,
    pub(crate) records: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) reclaims: Vec<Reclaim>,
}

/// A step's first batches to delete, once its consumers are past them (see
/// [`Progress::reclaim`]).
#[derive(Debug, Clone)]
pub(crate) struct Reclaim {
    pub(crate) step: String,
    pub(crate) batches: u64,
    pub(crate) rows: u64,
    pub(crate) consumers: Vec<String>,
}

impl Progress {
    /// An empty unit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an output batch. Its `seq` must follow the step's committed batches.
    pub fn batch(mut self, batch: Batch) -> Self {
        self.batches.push(batch);
        self
    }

    /// Sets the cursor `name` (for instance "consumer<-producer") to `position`.
    pub fn cursor(mut self, name: impl Into<String>, position: u64) -> Self {
        self.cursors.push((name.into(), position));
        self
    }

    /// Moves `step` to `state`.
    pub fn state(mut self, step: impl Into<String>, state: StepState) -> Self {
        self.states.push((step.into(), state, None));
        self
    }

    /// Marks `step` failed with `error`.
    pub fn failed(mut self, step: impl Into<String>, error: impl Into<String>) -> Self {
        self.states
            .push((step.into(), StepState::Failed, Some(error.into())));
        self
    }

    /// Adds `delta` to the counter `name` of `step`.
    pub fn count(mut self, step: impl Into<String>, name: impl Into<String>, delta: u64) -> Self {
        self.counters.push((step.into(), name.into(), delta));
        self
    }

    /// Sets the run's status and stage.
    pub fn run(mut self, state: RunState) -> Self {
        self.run = Some(state);
        self
    }

    /// Stores a response in the request cache under its content hash.
    pub fn cache(mut self, key: [u8; 32], response: Vec<u8>) -> Self {
        self.cache.push((key, response));
        self
    }

    /// Sets the offset of consumer `name`.
    pub fn offset(mut self, name: impl Into<String>, offset: u64) -> Self {
        self.offsets.push((name.into(), offset));
        self
    }

    /// Stores a consumer's own record under `key` (`None` deletes it).
    pub fn record(mut self, key: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.records.push((key.into(), value));
        self
    }

    /// Deletes `step`'s batches before batch `batches` (its first `rows` rows), provided every
    /// cursor named in `consumers` is at `rows` or past it once this unit's cursors are set;
    /// otherwise, or in a file of a format before 3, nothing is deleted. Applied after the
    /// unit's cursors, in the same transaction, so a consumer's cursor and the deletion of
    /// the batches it no longer needs become durable together.
    pub fn reclaim(
        mut self,
        step: impl Into<String>,
        batches: u64,
        rows: u64,
        consumers: Vec<String>,
    ) -> Self {
        self.reclaims.push(Reclaim {
            step: step.into(),
            batches,
            rows,
            consumers,
        });
        self
    }

    /// Whether the unit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
            && self.cursors.is_empty()
            && self.states.is_empty()
            && self.counters.is_empty()
            && self.run.is_none()
            && self.cache.is_empty()
            && self.offsets.is_empty()
            && self.records.is_empty()
            && self.reclaims.is_empty()
    }

    /// Rough size in bytes, used to bound a group commit.
    pub(crate) fn approx_bytes(&self) -> usize {
        let rows: usize = self.batches.iter().map(|b| b.rows.len() * 64).sum();
        let cache: usize = self.cache.iter().map(|(_, v)| v.len()).sum();
        rows + cache + 64
    }
}
