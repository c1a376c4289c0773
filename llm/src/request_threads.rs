//! The request threads of a loaded task, shared by all its batches.
//!
//! A batch queues one loop per thread it may use (each takes the batch's next request until
//! none is left); the threads take the loops in order. So while a batch's last requests are
//! answered, the threads it no longer needs go on with the next batch's, and the task keeps
//! its concurrency busy across batch boundaries. The task has a fixed number of threads (twice
//! its concurrency, see `runner`), which also bounds the answers waiting for their cache commit
//! when the process dies, however many batches are in flight.

use crossbeam_channel::{Receiver, Sender, unbounded};

type Work = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running queued work in order; they end once the set is dropped and
/// the queue is empty.
pub(crate) struct RequestThreads {
    queue: Sender<Work>,
}

impl RequestThreads {
    /// Starts `count` threads (at least one).
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let (queue, work) = unbounded::<Work>();
        for _ in 0..count.max(1) {
            let work: Receiver<Work> = work.clone();
            std::thread::Builder::new()
                .name("distill-llm".into())
                .spawn(move || {
                    for job in work {
                        job();
                    }
                })?;
        }
        Ok(Self { queue })
    }

    /// Queues `work`; false if the threads are gone.
    pub(crate) fn run(&self, work: impl FnOnce() + Send + 'static) -> bool {
        self.queue.send(Box::new(work)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn work_runs_on_at_most_count_threads() {
        let threads = RequestThreads::start(2).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = unbounded();
        for i in 0..8 {
            let (running, peak, done_tx) = (running.clone(), peak.clone(), done_tx.clone());
            assert!(threads.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(10));
                running.fetch_sub(1, Ordering::SeqCst);
                let _ = done_tx.send(i);
            }));
        }
        drop(done_tx);
        let mut finished: Vec<i32> = done.iter().collect();
        finished.sort();
        assert_eq!(finished, (0..8).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn work_starts_in_the_order_it_was_queued() {
        let threads = RequestThreads::start(1).unwrap();
        let (tx, started) = unbounded();
        for i in 0..20 {
            let tx = tx.clone();
            assert!(threads.run(move || {
                let _ = tx.send(i);
            }));
        }
        drop(tx);
        assert_eq!(
            started.iter().collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
    }
}
