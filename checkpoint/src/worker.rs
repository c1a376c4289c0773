//! The checkpointer in the background of a run: snapshots as the `checkpoint:` section says,
//! from a read transaction (the run's commits go on meanwhile), records each complete one in
//! the run database, never stops the run on a failure, and takes a last snapshot when the run
//! ends.

use crate::checkpointer::Checkpointer;
use crate::error::{Error, Result};
use crate::record::{CheckpointReport, RECORD_PREFIX};
use crate::target::Identity;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use distill_engine::CheckpointSpec;
use distill_hub::HubAccess;
use distill_storage::{Event, GroupCommitter, Progress, RunLog};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the worker looks at the log.
const POLL: Duration = Duration::from_millis(200);
/// Longest wait between attempts after failures (within the section's cadence).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After a snapshot that took D, the next one waits at least this many times D: the
/// checkpointer works at most a tenth of the time, whatever the cadence asks, so that a large
/// database snapshotted often does not take the run's cores (the copy and the compression
/// grow with the database).
const REST_FACTOR: f64 = 9.0;
/// The checkpoint thread's nice value (Linux: per thread), so that the run's threads go
/// first when the cores are busy.
const NICE: i32 = 10;

/// Lowers the calling thread's priority, where the system has per-thread priorities.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) != 0 {
            tracing::debug!("checkpoint: cannot lower the thread's priority");
        }
    }
}

/// Where a run's checkpoints stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointStatus {
    /// The target.
    pub url: String,
    /// Snapshots uploaded by this session.
    pub taken: u64,
    /// The newest complete snapshot (this session's, or the one recorded before).
    pub last: Option<CheckpointReport>,
    /// Failed attempts in this session.
    pub failures: u64,
    /// The last attempt's failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A running background checkpointer.
pub struct CheckpointWorker {
    finish: Sender<()>,
    thread: JoinHandle<CheckpointStatus>,
}

/// What changed in the database since the last snapshot: its log length and cached answers.
type Mark = (u64, u64);

fn mark(snapshot: &distill_storage::Snapshot) -> distill_storage::Result<Mark> {
    Ok((snapshot.log_len()?, snapshot.cache_len()?))
}

impl CheckpointWorker {
    /// Starts snapshotting the run in `log` as `spec` says, under `identity`'s folder. The
    /// target is checked first: a bad URL, a refused credential or a missing bucket is an
    /// error before the run spends anything; a target that cannot be reached just now is not
    /// (the next snapshot tries again).
    pub fn start(
        spec: &CheckpointSpec,
        identity: Identity,
        log: Arc<RunLog>,
        committer: Arc<GroupCommitter>,
        hub: &HubAccess,
    ) -> Result<Self> {
        let work_dir = match log.path().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        crate::pack::clean_leftovers(&work_dir);
        let checkpointer = Checkpointer::open(&spec.to, identity, spec.keep, &work_dir, hub)?;
        let mut status = CheckpointStatus {
            url: checkpointer.url().to_owned(),
            ..CheckpointStatus::default()
        };
        if let Err(e) = checkpointer.prepare() {
            if !e.is_transient() {
                return Err(e);
            }
            tracing::warn!("checkpoint: {e}; the next snapshot tries again");
            status.failures += 1;
            status.last_error = Some(e.to_string());
        }
        let snapshot = log.snapshot()?;
        let key = format!("{RECORD_PREFIX}{}", checkpointer.url());
        status.last = snapshot
            .record(&key)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let start = mark(&snapshot)?;
        drop(snapshot);
        let cadence = Cadence {
            period: spec.period_secs().map(Duration::from_secs),
            batches: spec.every_batches,
        };
        let (finish, finish_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("distill-checkpoint".into())
            .spawn(move || {
                lower_priority();
                let mut worker = Worker {
                    checkpointer,
                    log,
                    committer,
                    status,
                    cadence,
                    taken_at: start,
                };
                worker.run(&finish_rx);
                worker.status
            })
            .map_err(|e| Error::Start {
                what: "thread",
                detail: e.to_string(),
            })?;
        Ok(Self { finish, thread })
    }

    /// Tells the worker the run is over and waits for its last snapshot (taken when anything
    /// changed since the previous one).
    pub fn finish(self) -> CheckpointStatus {
        let _ = self.finish.send(());
        self.thread.join().unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!("the checkpoint thread panicked: {detail}");
            CheckpointStatus {
                failures: 1,
                last_error: Some(format!(
                    "the checkpoint thread panicked (a bug in distill): {detail}"
                )),
                ..CheckpointStatus::default()
            }
        })
    }
}

/// When snapshots are due.
struct Cadence {
    period: Option<Duration>,
    batches: Option<u64>,
}

struct Worker {
    checkpointer: Checkpointer,
    log: Arc<RunLog>,
    committer: Arc<GroupCommitter>,
    status: CheckpointStatus,
    cadence: Cadence,
    /// The database's mark at the last snapshot (or at the start).
    taken_at: Mark,
}

impl Worker {
    fn run(&mut self, run_over: &Receiver<()>) {
        let mut last_attempt = Instant::now();
        let mut next_try = Instant::now();
        let mut retry = false;
        // Log entries already counted, and batches committed among them since the last
        // snapshot.
        let mut counted = self.taken_at.0;
        let mut batches = 0u64;
        loop {
            match run_over.recv_timeout(POLL) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() < next_try {
                continue;
            }
            if self.cadence.batches.is_some() {
                match self.count_batches(&mut counted) {
                    Ok(n) => batches += n,
                    Err(e) => tracing::warn!("checkpoint: cannot read the run log: {e}"),
                }
            }
            let due = retry
                || self.cadence.batches.is_some_and(|every| batches >= every)
                || self
                    .cadence
                    .period
                    .is_some_and(|period| last_attempt.elapsed() >= period);
            if !due {
                continue;
            }
            last_attempt = Instant::now();
            match self.attempt() {
                Ok(taken) => {
                    batches = 0;
                    retry = false;
                    if taken {
                        next_try = Instant::now() + last_attempt.elapsed().mul_f64(REST_FACTOR);
                    }
                }
                Err(e) => {
                    // A store that was down is tried again sooner than the cadence.
                    retry = e.is_transient();
                    next_try = Instant::now()
                        + MAX_BACKOFF.min(Duration::from_secs(1 << self.status.failures.min(6)));
                }
            }
        }
        if let Err(e) = self.attempt() {
            tracing::warn!("checkpoint: the last snapshot of the run failed: {e}");
        }
    }

    /// Batches committed since log position `counted`, which moves to the log's end.
    fn count_batches(&self, counted: &mut u64) -> distill_storage::Result<u64> {
        let snapshot = self.log.snapshot()?;
        let mut n = 0;
        for entry in snapshot.log_from(*counted)? {
            let entry = entry?;
            if matches!(entry.event, Event::Batch { .. }) {
                n += 1;
            }
            *counted = entry.seq + 1;
        }
        Ok(n)
    }

    /// A snapshot, when anything changed since the last one. `Ok(false)`: nothing to do.
    fn attempt(&mut self) -> Result<bool> {
        let snapshot = self.log.snapshot()?;
        let now = mark(&snapshot)?;
        if now == self.taken_at && self.status.last.is_some() {
            return Ok(false);
        }
        match self.checkpointer.take(&snapshot) {
            Ok(report) => {
                drop(snapshot);
                self.taken_at = now;
                self.status.taken += 1;
                self.status.last_error = None;
                let (key, value) = report.record();
                if let Err(e) = self
                    .committer
                    .commit(Progress::new().record(key, Some(value)))
                {
                    tracing::warn!("checkpoint: cannot record the snapshot in the run log: {e}");
                }
                self.status.last = Some(report);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!("checkpoint: {e}");
                self.status.failures += 1;
                self.status.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distill_storage::{Batch, NewRun, Row};

    fn log_in(dir: &Path) -> Arc<RunLog> {
        Arc::new(
            RunLog::create(
                dir.join("run.redb"),
                NewRun {
                    signature: "sig".into(),
                    pipeline: "name: w\nsteps: []\n".into(),
                    created_by: "test".into(),
                },
            )
            .unwrap(),
        )
    }

    fn batch(seq: u64) -> Progress {
        Progress::new().batch(Batch {
            step: "a".into(),
            seq,
            rows: vec![Row::new().with("x", seq as i64)],
            last: false,
        })
    }

    #[test]
    fn the_last_snapshot_is_the_runs_end_and_an_unchanged_run_takes_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        let log = log_in(dir.path());
        let committer = Arc::new(GroupCommitter::start(log.clone()));
        let mut spec = CheckpointSpec::new(format!("file://{}", store.display()));
        spec.every_batches = Some(2);
        spec.keep = 2;
        let hub = HubAccess::default();
        let identity = Identity::of_pipeline("w");
        let worker = CheckpointWorker::start(
            &spec,
            identity.clone(),
            log.clone(),
            committer.clone(),
            &hub,
        )
        .unwrap();
        for seq in 0..10 {
            committer.commit(batch(seq)).unwrap();
        }
        let status = worker.finish();
        assert_eq!(status.last_error, None);
        assert!(status.taken >= 1);
        let last = status.last.clone().unwrap();
        let end = log.snapshot().unwrap().log_len().unwrap();
        assert_eq!(last.log_position, end, "the last snapshot is the run's end");
        let key = format!("{RECORD_PREFIX}{}", status.url);
        let recorded: CheckpointReport =
            serde_json::from_slice(&log.snapshot().unwrap().record(&key).unwrap().unwrap())
                .unwrap();
        assert_eq!(recorded, last);
        // A file:// target's folder is a path from the file system's root.
        let folder = crate::Target::parse(&spec.to).unwrap().folder(&identity);
        let manifests = std::fs::read_dir(Path::new("/").join(folder).join("manifests"))
            .unwrap()
            .count();
        assert!((1..=2).contains(&manifests), "{manifests} manifests kept");

        // Nothing changed since: a new session takes no snapshot.
        let again =
            CheckpointWorker::start(&spec, identity, log.clone(), committer.clone(), &hub).unwrap();
        let status = again.finish();
        assert_eq!(status.taken, 0);
        assert_eq!(status.last, Some(last));
    }
}
