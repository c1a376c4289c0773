//! Concurrency limits: a pool of endpoints, each with its own limit, which adapts to the
//! provider (AIMD): a 429 without `Retry-After` halves the endpoint's limit, and each answer
//! grows it back by about one request per round of answers, up to the configured
//! `concurrency`.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Debug)]
struct Endpoint {
    in_use: usize,
    /// The adaptive limit (at least 1, at most `cap`).
    limit: f64,
    /// The configured concurrency.
    cap: usize,
    /// When the limit was last cut: a 429 to a request started before it does not cut again.
    cut_at: Option<Instant>,
}

impl Endpoint {
    fn room(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.cap)
    }
}

/// Hands out endpoint slots: at most the endpoint's current limit in flight, the least loaded
/// endpoint first. Blocks while every endpoint is full.
pub(crate) struct EndpointPool {
    endpoints: Mutex<Vec<Endpoint>>,
    freed: Condvar,
}

/// A slot on one endpoint; released on drop.
pub(crate) struct Slot<'a> {
    pool: &'a EndpointPool,
    /// Index of the endpoint.
    pub endpoint: usize,
    /// When it was taken.
    pub since: Instant,
}

impl EndpointPool {
    /// A pool of endpoints with these limits (each at least 1).
    pub fn new(limits: Vec<usize>) -> Self {
        Self {
            endpoints: Mutex::new(
                limits
                    .into_iter()
                    .map(|cap| Endpoint {
                        in_use: 0,
                        limit: cap.max(1) as f64,
                        cap: cap.max(1),
                        cut_at: None,
                    })
                    .collect(),
            ),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot on the least loaded endpoint that has room.
    pub fn acquire(&self) -> Slot<'_> {
        let mut endpoints = self.lock();
        loop {
            let free = (0..endpoints.len())
                .filter(|&i| endpoints[i].in_use < endpoints[i].room())
                .min_by_key(|&i| endpoints[i].in_use * 1000 / endpoints[i].room());
            if let Some(i) = free {
                endpoints[i].in_use += 1;
                return Slot {
                    pool: self,
                    endpoint: i,
                    since: Instant::now(),
                };
            }
            endpoints = self
                .freed
                .wait(endpoints)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// An answer came: the endpoint's limit grows by 1/limit (one request per round).
    pub fn answered(&self, endpoint: usize) {
        let mut endpoints = self.lock();
        let e = &mut endpoints[endpoint];
        if e.limit < e.cap as f64 {
            let before = e.room();
            e.limit = (e.limit + 1.0 / e.limit).min(e.cap as f64);
            if e.room() > before {
                self.freed.notify_all();
            }
        }
    }

    /// A 429 without `Retry-After` to a request sent at `since`: the endpoint's limit halves,
    /// once per round (429s to requests sent before the last cut do not cut again).
    pub fn throttled(&self, endpoint: usize, since: Instant) {
        let mut endpoints = self.lock();
        let e = &mut endpoints[endpoint];
        if e.cut_at.is_some_and(|cut| since < cut) {
            return;
        }
        e.limit = (e.limit / 2.0).max(1.0);
        e.cut_at = Some(Instant::now());
        tracing::info!(
            endpoint,
            concurrency = e.room(),
            "HTTP 429 without Retry-After: fewer requests in flight on this endpoint"
        );
    }

    /// Each endpoint's current limit.
    #[cfg(test)]
    pub fn limits(&self) -> Vec<usize> {
        self.lock().iter().map(Endpoint::room).collect()
    }

    /// Requests in flight per endpoint, now.
    #[cfg(test)]
    pub fn in_use(&self) -> Vec<usize> {
        self.lock().iter().map(|e| e.in_use).collect()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut endpoints = self.pool.lock();
        endpoints[self.endpoint].in_use -= 1;
        self.pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_than_the_limit_per_endpoint() {
        let pool = Arc::new(EndpointPool::new(vec![2, 3]));
        let peaks = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let (pool, peaks) = (pool.clone(), peaks.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let slot = pool.acquire();
                        let now = pool.in_use()[slot.endpoint];
                        peaks[slot.endpoint].fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(peaks[0].load(Ordering::SeqCst), 2);
        assert_eq!(peaks[1].load(Ordering::SeqCst), 3);
        assert_eq!(pool.in_use(), vec![0, 0]);
    }

    #[test]
    fn a_429_halves_the_limit_once_per_round_and_answers_grow_it_back() {
        let pool = EndpointPool::new(vec![16]);
        let before_cut = Instant::now();
        pool.throttled(0, before_cut);
        assert_eq!(pool.limits(), vec![8]);
        // Other 429s of requests sent before the cut do not cut again.
        pool.throttled(0, before_cut);
        assert_eq!(pool.limits(), vec![8]);
        std::thread::sleep(std::time::Duration::from_millis(2));
        pool.throttled(0, Instant::now());
        assert_eq!(pool.limits(), vec![4]);
        // About one more per round of answers.
        for _ in 0..5 {
            pool.answered(0);
        }
        assert_eq!(pool.limits(), vec![5]);
        for _ in 0..1000 {
            pool.answered(0);
        }
        assert_eq!(pool.limits(), vec![16]);
        for _ in 0..10 {
            pool.throttled(0, Instant::now());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(pool.limits(), vec![1]);
    }
}
