//! The pusher in the background of a run: pushes as the push section says, records failures
//! without ever stopping the run, and pushes the rest when the run ends.

use crate::error::{Error, Result};
use crate::pusher::{PushStatus, Pusher};
use crate::{HubAccess, backoff, finish};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use distill_engine::PushSpec;
use distill_storage::{GroupCommitter, Progress, RunLog};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time allowed for the check of the token and the repository when a run starts.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the worker looks at the log.
const POLL: Duration = Duration::from_millis(250);

/// A running background pusher.
pub struct PushWorker {
    finish: Sender<bool>,
    thread: JoinHandle<PushStatus>,
}

impl PushWorker {
    /// Starts pushing the run in `log` as `spec` says. The repository is created first: a
    /// bad token or a missing permission is an error before the run spends anything; a Hub
    /// that cannot be reached is not (the push catches up later).
    pub fn start(
        spec: PushSpec,
        access: &HubAccess,
        log: Arc<RunLog>,
        committer: Arc<GroupCommitter>,
    ) -> Result<Self> {
        // One quick attempt: a slow or unreachable Hub must not hold the run back.
        let quick = access.client_with(&spec, 1, START_TIMEOUT)?;
        let client = access.client(&spec)?;
        let mut pusher = Pusher::new(spec.clone(), client, &log.snapshot()?)?;
        if let Err(failure) = quick.create_repo(&spec.repo, spec.private) {
            if !failure.is_transient() {
                return Err(failure);
            }
            pusher.record_failure(&failure, Some(&committing(&committer)));
        }
        let (finish, finish_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("distill-push".into())
            .spawn(move || work(pusher, &log, &committer, &finish_rx))
            .map_err(|e| Error::Thread {
                detail: e.to_string(),
            })?;
        Ok(Self { finish, thread })
    }

    /// Tells the worker the run is over (`push_rest`: push what is left first) and waits.
    pub fn finish(self, push_rest: bool) -> PushStatus {
        let _ = self.finish.send(push_rest);
        self.thread.join().unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!("the push thread panicked: {detail}");
            PushStatus {
                last_error: Some(format!(
                    "the push thread panicked (a bug in distill): {detail}"
                )),
                failures: 1,
                fatal: true,
                ..PushStatus::default()
            }
        })
    }
}

/// A sink that commits the pusher's units through the run's committer.
fn committing(committer: &GroupCommitter) -> impl Fn(Progress) -> distill_storage::Result<()> + '_ {
    move |unit| committer.commit(unit).map(|_| ())
}

fn work(
    mut pusher: Pusher,
    log: &RunLog,
    committer: &GroupCommitter,
    run_over: &Receiver<bool>,
) -> PushStatus {
    let sink = committing(committer);
    let mut next_try = Instant::now();
    let mut gave_up = false;
    let push_rest = loop {
        match run_over.recv_timeout(POLL) {
            Ok(push_rest) => break push_rest,
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if gave_up || Instant::now() < next_try {
            continue;
        }
        let snapshot = match log.snapshot() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!("push: cannot read the run log: {e}");
                continue;
            }
        };
        if let Err(failure) = pusher.round(&snapshot, false, Some(&sink)) {
            pusher.record_failure(&failure, Some(&sink));
            gave_up = !failure.is_transient();
            next_try = Instant::now() + backoff(pusher.status().failures);
        }
    };
    if push_rest && !gave_up {
        // The failure is in the status; the run goes on regardless.
        let _ = finish(
            &mut pusher,
            || Ok(log.snapshot()?),
            Some(&sink),
            &AtomicBool::new(false),
            &mut |_, _| {},
        );
    }
    pusher.status().clone()
}
