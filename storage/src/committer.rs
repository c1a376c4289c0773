//! Group commit: one thread takes every pending unit of progress into one durable transaction.
//!
//! A durable commit costs an fsync, and the fsync's latency grows when the cores are busy. With
//! one transaction per unit the run would go at the disk's pace; with group commit, units that
//! arrive while a commit is in flight share the next one, so throughput follows the load.

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::run_log::{Receipt, RunLog};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Most units taken into one transaction.
const MAX_UNITS_PER_COMMIT: usize = 4096;
/// Rough byte budget of one transaction.
const MAX_BYTES_PER_COMMIT: usize = 64 << 20;
/// Units that may wait for the committer before `submit` blocks (backpressure).
const QUEUE_CAPACITY: usize = 8192;

struct Job {
    unit: Progress,
    reply: Sender<Result<Receipt>>,
}

/// A handle to wait for one submitted unit to be durable.
#[must_use = "a unit is durable only once its ticket says so"]
pub struct Ticket {
    reply: Receiver<Result<Receipt>>,
}

impl Ticket {
    /// Blocks until the unit is committed (or refused).
    pub fn wait(self) -> Result<Receipt> {
        self.reply.recv().unwrap_or(Err(Error::CommitterStopped))
    }
}

/// The committer thread of a [`RunLog`]. Cloneable senders are not exposed: share it by `Arc`.
pub struct GroupCommitter {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommitter {
    /// Starts the committer thread.
    pub fn start(log: Arc<RunLog>) -> Self {
        let (jobs, queue) = bounded::<Job>(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("distill-committer".into())
            .spawn(move || run(&log, &queue))
            .ok();
        Self {
            jobs: Some(jobs),
            thread,
        }
    }

    /// Queues a unit; its ticket says when it is durable. Blocks while the queue is full.
    pub fn submit(&self, unit: Progress) -> Result<Ticket> {
        let (reply, ticket) = bounded(1);
        let jobs = self.jobs.as_ref().ok_or(Error::CommitterStopped)?;
        jobs.send(Job { unit, reply })
            .map_err(|_| Error::CommitterStopped)?;
        Ok(Ticket { reply: ticket })
    }

    /// Queues a unit and waits until it is durable.
    pub fn commit(&self, unit: Progress) -> Result<Receipt> {
        self.submit(unit)?.wait()
    }

    /// Commits what is queued and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(log: &RunLog, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut bytes = first.unit.approx_bytes();
        let mut jobs = vec![first];
        while jobs.len() < MAX_UNITS_PER_COMMIT && bytes < MAX_BYTES_PER_COMMIT {
            match queue.try_recv() {
                Ok(job) => {
                    bytes += job.unit.approx_bytes();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (units, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.unit, j.reply)).unzip();
        for (result, reply) in log.commit_group(units).into_iter().zip(replies) {
            // A caller that stopped waiting does not matter: the unit is committed either way.
            let _ = reply.send(result);
        }
    }
}
