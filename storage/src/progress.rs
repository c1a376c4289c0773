//! A unit of progress: everything that must become durable together.

use crate::model::{Batch, RunState, StepState};

/// A batch whose rows were already encoded for the log by [`crate::RunLog::encode_rows`] (on a
/// worker thread, say), so the committer writes the bytes and the caller keeps the rows.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// Name of the step that produced the batch.
    pub step: String,
    /// Position of the batch in the step's output, from 0.
    pub seq: u64,
    /// Number of rows encoded.
    pub rows: u64,
    /// Whether this is the step's last batch (the one `encode_rows` was given).
    pub last: bool,
    /// The stored form of the rows and `last`.
    pub payload: Vec<u8>,
}

/// A batch of a unit, as rows or already encoded.
#[derive(Debug, Clone)]
pub(crate) enum PendingBatch {
    Rows(Batch),
    Encoded(EncodedBatch),
}

impl PendingBatch {
    pub(crate) fn step(&self) -> &str {
        match self {
            PendingBatch::Rows(b) => &b.step,
            PendingBatch::Encoded(b) => &b.step,
        }
    }
    pub(crate) fn seq(&self) -> u64 {
        match self {
            PendingBatch::Rows(b) => b.seq,
            PendingBatch::Encoded(b) => b.seq,
        }
    }
    pub(crate) fn last(&self) -> bool {
        match self {
            PendingBatch::Rows(b) => b.last,
            PendingBatch::Encoded(b) => b.last,
        }
    }
    pub(crate) fn rows(&self) -> u64 {
        match self {
            PendingBatch::Rows(b) => b.rows.len() as u64,
            PendingBatch::Encoded(b) => b.rows,
        }
    }
}

/// Changes committed together in one transaction: a step's output batches, the input cursors
/// they consumed, state changes, counters, cache entries and consumer offsets. Either all of a
/// unit is in the database after a crash, or none of it.
///
/// Log entries announcing batches, state changes, run changes and offsets are added by the
/// commit itself, in the order: run state, step states, batches, offsets.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub(crate) batches: Vec<PendingBatch>,
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
        self.batches.push(PendingBatch::Rows(batch));
        self
    }

    /// Adds an output batch already encoded (see [`EncodedBatch`]). Its `seq` must follow the
    /// step's committed batches.
    pub fn encoded_batch(mut self, batch: EncodedBatch) -> Self {
        self.batches.push(PendingBatch::Encoded(batch));
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
        let rows: usize = self
            .batches
            .iter()
            .map(|b| match b {
                PendingBatch::Rows(b) => b.rows.len() * 64,
                PendingBatch::Encoded(b) => b.payload.len(),
            })
            .sum();
        let cache: usize = self.cache.iter().map(|(_, v)| v.len()).sum();
        rows + cache + 64
    }
}
