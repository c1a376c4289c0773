//! Where a run stands, read from a snapshot of its log (never blocks the run).

use crate::budget::{Cost, Price};
use crate::error::Result;
use crate::scheduler::cursor_name;
use crate::spec::{DEFAULT_BATCH_SIZE, PipelineSpec};
use distill_storage::{Event, RunReader, RunStatus, Snapshot, StepRecord, StepState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Log entries read to estimate rates.
const TAIL: usize = 4096;
/// Rates are measured over the last this many milliseconds of the log.
const WINDOW_MS: u64 = 60_000;

/// One step's status.
#[derive(Debug, Clone, Serialize)]
pub struct StepStatus {
    /// The step.
    pub step: String,
    /// Lifecycle state.
    pub state: StepState,
    /// Committed output batches.
    pub batches: u64,
    /// Committed output rows.
    pub rows: u64,
    /// Whether the last batch is committed.
    pub done: bool,
    /// Output rows per second over the last minute of commits, when there were some.
    pub rows_per_sec: Option<f64>,
    /// Estimated seconds until the step is done, when its input is complete.
    pub eta_secs: Option<f64>,
    /// Counters (requests, retries, cache hits, tokens...).
    pub counters: BTreeMap<String, u64>,
    /// The error that failed the step.
    pub error: Option<String>,
    /// What its committed answers cost, in dollars, when it has a `price`.
    pub spent_usd: Option<f64>,
    /// What its answers served from the request cache would have cost, when it has a `price`.
    pub saved_usd: Option<f64>,
    /// Its first batches deleted from the database once every consumer was past them.
    pub reclaimed_batches: u64,
}

/// A run's status.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its signature.
    pub signature: String,
    /// The run's status.
    pub status: RunStatus,
    /// The current stage.
    pub stage: Option<u32>,
    /// The run's message (the error of a failed run).
    pub message: Option<String>,
    /// When the run's state last changed (ms since the epoch).
    pub updated_ms: u64,
    /// Log entries so far.
    pub log_len: u64,
    /// Steps, in pipeline order.
    pub steps: Vec<StepStatus>,
    /// The pipeline's `budget_usd`, if any.
    pub budget_usd: Option<f64>,
    /// What the run's committed answers cost, in dollars (all priced steps).
    pub spent_usd: f64,
    /// What answers served from the request cache would have cost, in dollars.
    pub saved_usd: f64,
    /// The shard the database holds (`I/N`, or `global/N` for a sharded run's global steps);
    /// absent for an unsharded run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Size of the database file in bytes.
    pub db_bytes: u64,
    /// Its format version (3 and later: compressed batches and answers).
    pub format_version: u32,
    /// Answers in its request cache.
    pub cached_answers: u64,
}

/// Reads the status of the run in `db`.
pub fn status(db: &Path) -> Result<RunReport> {
    let reader = RunReader::open(db)?;
    status_of(&reader.snapshot()?, db)
}

/// The status of the run as of `snapshot` of the database `db`.
pub fn status_of(snapshot: &Snapshot, db: &Path) -> Result<RunReport> {
    let meta = snapshot.meta()?;
    let spec = PipelineSpec::from_yaml(&meta.pipeline, db)?;
    let run = snapshot.run_state()?;
    let records: BTreeMap<String, StepRecord> = snapshot.steps()?.into_iter().collect();
    let rates = rates(&snapshot.log_tail(TAIL)?);
    let mut steps = Vec::new();
    let (mut total, mut saved) = (Cost::ZERO, Cost::ZERO);
    for step in &spec.steps {
        let r = records.get(&step.name).cloned().unwrap_or_default();
        let (rows_per_sec, batches_per_sec) = rates.get(&step.name).copied().unzip();
        let mut eta_secs = None;
        if !r.done && !step.after.is_empty() {
            let n = step.input_batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as u64;
            let mut remaining = Some(0u64);
            for pred in &step.after {
                let p = records.get(pred).cloned().unwrap_or_default();
                let taken = snapshot
                    .cursor(&cursor_name(&step.name, pred))?
                    .unwrap_or(0);
                remaining = remaining
                    .filter(|_| p.done)
                    .map(|m| m.max(p.rows.saturating_sub(taken)));
            }
            if let (Some(rows), Some(bps)) = (remaining, batches_per_sec) {
                eta_secs = Some(rows.div_ceil(n) as f64 / bps);
            }
        }
        let spend = Price::of_params(&step.params)?.map(|p| p.spend(&r.counters));
        total = total + spend.map_or(Cost::ZERO, |s| s.spent);
        saved = saved + spend.map_or(Cost::ZERO, |s| s.saved);
        steps.push(StepStatus {
            step: step.name.clone(),
            state: r.state,
            batches: r.batches,
            rows: r.rows,
            done: r.done,
            rows_per_sec,
            eta_secs,
            counters: r.counters,
            error: r.error,
            spent_usd: spend.map(|s| s.spent.usd()),
            saved_usd: spend.map(|s| s.saved.usd()),
            reclaimed_batches: snapshot.reclaimed(&step.name)?.0,
        });
    }
    Ok(RunReport {
        pipeline: spec.name,
        signature: meta.signature,
        status: run.status,
        stage: run.stage,
        message: run.message,
        updated_ms: run.updated_ms,
        log_len: snapshot.log_len()?,
        steps,
        budget_usd: spec.budget_usd,
        spent_usd: total.usd(),
        saved_usd: saved.usd(),
        shard: snapshot
            .record(crate::shard::SHARD_RECORD)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
        db_bytes: std::fs::metadata(db).map_or(0, |m| m.len()),
        format_version: snapshot.format_version()?,
        cached_answers: snapshot.cache_len()?,
    })
}

/// Per step: (rows/s, batches/s) over the last minute of batch commits in `tail`.
fn rates(tail: &[distill_storage::LogEntry]) -> BTreeMap<String, (f64, f64)> {
    let newest = tail.first().map_or(0, |e| e.at_ms);
    let mut spans: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new(); // first, last, rows, batches
    for entry in tail.iter().rev() {
        if entry.at_ms + WINDOW_MS < newest {
            continue;
        }
        if let Event::Batch { step, rows, .. } = &entry.event {
            let s = spans
                .entry(step)
                .or_insert((entry.at_ms, entry.at_ms, 0, 0));
            // Rows of the first batch in the window happened before it: count from the second.
            if s.3 > 0 {
                s.2 += rows;
            }
            s.1 = entry.at_ms;
            s.3 += 1;
        }
    }
    spans
        .into_iter()
        .filter(|(_, (first, last, _, batches))| *batches > 1 && last > first)
        .map(|(step, (first, last, rows, batches))| {
            let secs = (last - first) as f64 / 1000.0;
            (
                step.to_owned(),
                (rows as f64 / secs, (batches - 1) as f64 / secs),
            )
        })
        .collect()
}
