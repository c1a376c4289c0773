//! Publishing a run's distiset to the Hugging Face Hub as the run goes on, exactly once.
//!
//! [`Pusher`] is a consumer of the run log (see its module). It runs in the background of a
//! run whose pipeline has a `push:` section ([`PushWorker`]), or on its own with [`push`]
//! (`distill push`) for a finished run or a live one in another process. [`push_reports`]
//! says where the pushes recorded in a run database stand.
#![deny(missing_docs)]

mod client;
mod error;
pub mod load;
mod pusher;
mod reads;
mod report;
mod shard;
mod worker;

pub use client::{DEFAULT_ENDPOINT, HubClient, UploadFile};
pub use error::{Error, Result};
pub use pusher::{MAX_COMMIT_ROWS, PushStatus, Pusher, Round, Sink};
/// Names the tests use to read what the pusher recorded (feature `testing`).
#[cfg(feature = "testing")]
pub use pusher::{offset_name, run_tag};
pub use reads::RepoFile;
pub use report::{PushReport, PushState, push_reports};
pub use worker::PushWorker;

use distill_engine::{PipelineSpec, PushSpec};
use distill_http::RetryPolicy;
use distill_storage::{RunLog, RunReader, RunStatus};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where the Hub is and the token to use. The token is kept in memory only.
#[derive(Clone, Default)]
pub struct HubAccess {
    /// The Hub's address (`HF_ENDPOINT`, default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// The token (`HF_TOKEN`).
    pub token: Option<String>,
}

impl std::fmt::Debug for HubAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubAccess")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl HubAccess {
    /// From `HF_ENDPOINT` and `HF_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            token: var("HF_TOKEN"),
        }
    }

    /// A client with the retry settings of `spec`.
    pub fn client(&self, spec: &PushSpec) -> Result<HubClient> {
        self.client_with(spec, 5, Duration::from_secs(spec.timeout_secs.max(1)))
    }

    /// A client making `attempts` attempts per call, each within `timeout`.
    pub fn client_with(
        &self,
        spec: &PushSpec,
        attempts: u32,
        timeout: Duration,
    ) -> Result<HubClient> {
        let retry = hub_retry_policy(attempts, timeout);
        HubClient::new(&self.endpoint, self.token.clone(), retry).map_err(|e| match e {
            Error::Hub { source, .. } => Error::Hub {
                repo: spec.repo.clone(),
                source,
            },
            other => other,
        })
    }
}

/// The retry policy of every Hub client (the pusher's and the loader's): `attempts` in all,
/// backoff from 0.5 s doubling to 30 s with jitter, `timeout` per attempt.
pub fn hub_retry_policy(attempts: u32, timeout: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts.max(1),
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
        timeout,
        stop: None,
    }
}

/// How `distill push` goes.
#[derive(Clone)]
pub struct PushOptions {
    /// The run database.
    pub db: PathBuf,
    /// Repository and cadence.
    pub spec: PushSpec,
    /// Hub address and token.
    pub access: HubAccess,
    /// Set to stop following a live run.
    pub stop: Arc<AtomicBool>,
    /// How often a live run is looked at.
    pub poll: Duration,
}

/// What `distill push` saw at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct PushOutcome {
    /// Where the push stands.
    pub status: PushStatus,
    /// Whether another process was running the pipeline: the push followed it to its end.
    pub live: bool,
    /// Whether the offsets are recorded in the run database (always, unless the live run's
    /// process kept the database after its end; the Hub's shard names then say how far it is).
    pub recorded: bool,
}

/// Pushes the run in `options.db`: everything committed, at once for a finished run; for a run
/// that another process is running, as it goes (by the push section's cadence) until it ends,
/// then the rest with the offsets recorded once the database is free.
pub fn push(
    options: &PushOptions,
    mut on_round: impl FnMut(&PushStatus, &Round),
) -> Result<PushOutcome> {
    options.spec.check()?;
    let client = options.access.client(&options.spec)?;
    let (pusher, log, live) = match RunLog::open(&options.db) {
        Ok(log) => (
            Pusher::new(options.spec.clone(), client, &log.snapshot()?)?,
            log,
            false,
        ),
        Err(distill_storage::Error::InUse { .. }) => {
            let mut pusher = follow_live(options, client, &mut on_round)?;
            match open_when_released(&options.db)? {
                Some(log) => (pusher, log, true),
                None => {
                    let reader = RunReader::open(&options.db)?;
                    finish(
                        &mut pusher,
                        || Ok(reader.snapshot()?),
                        None,
                        &options.stop,
                        &mut on_round,
                    )?;
                    return Ok(PushOutcome {
                        status: pusher.status().clone(),
                        live: true,
                        recorded: false,
                    });
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    let mut pusher = pusher;
    let sink = |unit| log.commit(unit).map(|_| ());
    finish(
        &mut pusher,
        || Ok(log.snapshot()?),
        Some(&sink),
        &options.stop,
        &mut on_round,
    )?;
    Ok(PushOutcome {
        status: pusher.status().clone(),
        live,
        recorded: true,
    })
}

/// Pushes a run going on in another process as the push section says, until the run ends.
/// Nothing is recorded meanwhile (the database is the run's); the Hub's listing is the offset.
fn follow_live(
    options: &PushOptions,
    client: HubClient,
    on_round: &mut impl FnMut(&PushStatus, &Round),
) -> Result<Pusher> {
    let repo = options.spec.repo.clone();
    let reader = RunReader::open(&options.db)?;
    let snapshot = reader.snapshot()?;
    let own = PipelineSpec::from_yaml(&snapshot.meta()?.pipeline, &options.db)?;
    if own.push.as_ref().is_some_and(|p| p.repo == repo) {
        return Err(Error::PushedByTheRun { repo });
    }
    let mut pusher = Pusher::new(options.spec.clone(), client, &snapshot)?;
    drop(snapshot);
    let mut next_try = Instant::now();
    loop {
        if options.stop.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let snapshot = reader.snapshot()?;
        if matches!(
            snapshot.run_state()?.status,
            RunStatus::Finished
                | RunStatus::Failed
                | RunStatus::Stopped
                | RunStatus::Interrupted
                | RunStatus::Waiting
                | RunStatus::AtBarrier
        ) {
            return Ok(pusher);
        }
        if Instant::now() >= next_try {
            match pusher.round(&snapshot, false, None) {
                Ok(round) => on_round(pusher.status(), &round),
                Err(f) if f.is_transient() => {
                    pusher.record_failure(&f, None);
                    next_try = Instant::now() + backoff(pusher.status().failures);
                }
                Err(f) => return Err(f),
            }
        }
        drop(snapshot);
        std::thread::sleep(options.poll);
    }
}

/// The run database as writer once the process that ran it lets go (within a few seconds of
/// the run's end), or `None`.
fn open_when_released(db: &std::path::Path) -> Result<Option<RunLog>> {
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        match RunLog::open(db) {
            Ok(log) => return Ok(Some(log)),
            Err(distill_storage::Error::InUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(distill_storage::Error::InUse { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long a push waits for an ended run's process to let go of the database.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Final rounds until everything committed is on the Hub, a fatal failure, `stop`, or the push
/// section's `final_wait_secs`.
pub(crate) fn finish(
    pusher: &mut Pusher,
    snapshot: impl Fn() -> Result<distill_storage::Snapshot>,
    sink: Sink<'_>,
    stop: &AtomicBool,
    on_round: &mut impl FnMut(&PushStatus, &Round),
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(pusher.spec().final_wait_secs);
    loop {
        match pusher.round(&snapshot()?, true, sink) {
            Ok(round) => {
                on_round(pusher.status(), &round);
                if !matches!(round, Round::Pushed { more: true, .. }) {
                    return Ok(());
                }
            }
            Err(f) => {
                pusher.record_failure(&f, sink);
                if !f.is_transient() || Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
                    return Err(f);
                }
                // The backoff (up to a minute) ends early on stop, and never past the deadline.
                let wait = backoff(pusher.status().failures)
                    .min(deadline.saturating_duration_since(Instant::now()));
                if !pause(stop, wait) {
                    return Err(f);
                }
            }
        }
    }
}

/// Sleeps `wait`, ending early (false) when `stop` is set.
fn pause(stop: &AtomicBool, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    false
}

/// Wait before the next round after `failures` failed ones: the shared retry policy's
/// backoff, from 1 s doubling to a minute, with jitter.
fn backoff(failures: u64) -> Duration {
    let rounds = RetryPolicy {
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let wait = rounds.delay(
        u32::try_from(failures.saturating_sub(1)).unwrap_or(u32::MAX),
        None,
    );
    tracing::info!(
        failures,
        wait_ms = wait.as_millis() as u64,
        "next push round after a backoff"
    );
    wait
}
