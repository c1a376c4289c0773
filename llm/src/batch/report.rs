//! Batch jobs as `distill status` shows them, and `distill cancel`.

use crate::batch::provider::{BatchStatus, Connection, Provider};
use crate::batch::record::{JobRecord, Phase, RECORD};
use crate::error::Result;
use distill_engine::PipelineSpec;
use distill_engine::task::TaskContext;
use distill_storage::{Snapshot, now_ms};
use serde::Serialize;

/// One batch job of a run, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct BatchJobReport {
    /// The step whose requests it holds.
    pub step: String,
    /// The provider's job id (none while it is being created).
    pub batch_id: Option<String>,
    /// Its tag: the hash of its request set.
    pub hash: String,
    /// How far it got on our side.
    pub phase: Phase,
    /// The provider's status when last seen.
    pub status: Option<BatchStatus>,
    /// Requests in it.
    pub requests: u64,
    /// Requests the provider answered, when last seen.
    pub completed: u64,
    /// Requests the provider failed, when last seen.
    pub failed: u64,
    /// Answers committed to the request cache (once collected).
    pub answered: u64,
    /// Requests without a usable answer (once collected).
    pub failures: u64,
    /// Seconds since the job was planned.
    pub age_secs: u64,
    /// Whether it still has (or may have) work at the provider.
    pub open: bool,
}

impl BatchJobReport {
    /// The job's state in one word: the provider's status, or our phase before it has one.
    pub fn state(&self) -> &'static str {
        match (self.phase, self.status) {
            (Phase::Collected, _) => "collected",
            (_, Some(status)) => status.as_str(),
            (phase, None) => phase.as_str(),
        }
    }
}

fn records(snapshot: &Snapshot) -> Result<Vec<JobRecord>> {
    snapshot
        .records(RECORD)?
        .into_iter()
        .map(|(key, bytes)| JobRecord::decode(&key, &bytes))
        .collect()
}

/// Every batch job recorded in the run, oldest first.
pub fn job_reports(snapshot: &Snapshot) -> Result<Vec<BatchJobReport>> {
    let now = now_ms();
    let mut jobs: Vec<BatchJobReport> = records(snapshot)?
        .into_iter()
        .map(|r| BatchJobReport {
            open: r.is_open(),
            step: r.step,
            batch_id: r.batch_id,
            hash: r.hash,
            phase: r.phase,
            status: r.status,
            requests: r.lines,
            completed: r.counts.completed,
            failed: r.counts.failed,
            answered: r.answered,
            failures: r.failures.len() as u64,
            age_secs: now.saturating_sub(r.created_ms) / 1000,
        })
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.age_secs));
    Ok(jobs)
}

/// A job `distill cancel` asked the provider to cancel.
#[derive(Debug, Clone, Serialize)]
pub struct CancelledJob {
    /// The step.
    pub step: String,
    /// The provider's job id.
    pub batch_id: String,
    /// Its status after the request.
    pub status: BatchStatus,
}

/// Asks the provider to cancel every open job of the run in `snapshot`, whose pipeline is
/// `spec` (for each step's endpoint and key variable). Nothing is written: the run's next
/// session sees the jobs cancelled, and their unanswered requests are handled by
/// `on_batch_failure`. Jobs recorded as planned were never created.
pub fn cancel(snapshot: &Snapshot, spec: &PipelineSpec) -> Result<Vec<CancelledJob>> {
    let mut out = Vec::new();
    for record in records(snapshot)? {
        if !matches!(record.phase, Phase::Uploaded | Phase::Submitted)
            || record.status.is_some_and(BatchStatus::is_terminal)
        {
            continue;
        }
        let Some(step) = spec.steps.iter().find(|s| s.name == record.step) else {
            tracing::warn!(
                "batch job {} belongs to step '{}', which the run's pipeline no longer has (its endpoint is unknown): cancel it with the provider",
                record.batch_id.as_deref().unwrap_or(&record.hash),
                record.step
            );
            continue;
        };
        let provider = Provider::new(&Connection::from_params(&step.params)?, None)?;
        let id = match &record.batch_id {
            Some(id) => id.clone(),
            None => {
                let found = provider.find(None, |b| {
                    b.input_file_id == record.file_id
                        || (b.tag("distill_job") == Some(&record.hash)
                            && b.tag("distill_step") == Some(&record.step))
                })?;
                match found {
                    Some(batch) => batch.id,
                    None => continue,
                }
            }
        };
        let batch = provider.cancel(&id)?;
        out.push(CancelledJob {
            step: record.step.clone(),
            batch_id: id,
            status: batch.status,
        });
    }
    Ok(out)
}

/// Warns when a step in online mode still has batch jobs open: online mode does not collect
/// them (switch the step back to `mode: batch` to, or cancel them with `distill cancel`).
pub fn warn_open_jobs(step: &str, ctx: &dyn TaskContext) {
    let prefix = format!("{RECORD}{step}:");
    let Ok(found) = ctx.records(&prefix) else {
        return;
    };
    let open = found
        .iter()
        .filter_map(|(key, bytes)| JobRecord::decode(key, bytes).ok())
        .filter(|r| r.batch_id.is_some() && r.is_open())
        .count();
    if open > 0 {
        tracing::warn!(
            "step '{step}' runs online but has {open} batch job(s) open at the provider; online mode does not collect them (set `mode: batch` again to, or cancel them with `distill cancel`)"
        );
    }
}
