//! Concurrency limits: a counting semaphore, and a pool of endpoints each with its own limit.

use std::sync::{Condvar, Mutex};

/// Hands out endpoint slots: at most `limit` requests in flight per endpoint, the least
/// loaded endpoint first. Blocks while every endpoint is full.
pub(crate) struct EndpointPool {
    in_use: Mutex<Vec<usize>>,
    limits: Vec<usize>,
    freed: Condvar,
}

/// A slot on one endpoint; released on drop.
pub(crate) struct Slot<'a> {
    pool: &'a EndpointPool,
    /// Index of the endpoint.
    pub endpoint: usize,
}

impl EndpointPool {
    /// A pool of endpoints with these limits (each at least 1).
    pub fn new(limits: Vec<usize>) -> Self {
        Self {
            in_use: Mutex::new(vec![0; limits.len()]),
            limits: limits.into_iter().map(|l| l.max(1)).collect(),
            freed: Condvar::new(),
        }
    }

    /// Waits for a slot on the least loaded endpoint that has room.
    pub fn acquire(&self) -> Slot<'_> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let free = (0..self.limits.len())
                .filter(|&i| in_use[i] < self.limits[i])
                .min_by_key(|&i| in_use[i] * 1000 / self.limits[i]);
            if let Some(i) = free {
                in_use[i] += 1;
                return Slot {
                    pool: self,
                    endpoint: i,
                };
            }
            in_use = self.freed.wait(in_use).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Requests in flight per endpoint, now.
    #[cfg(test)]
    pub fn in_use(&self) -> Vec<usize> {
        self.in_use.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut in_use = self.pool.in_use.lock().unwrap_or_else(|p| p.into_inner());
        in_use[self.endpoint] -= 1;
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
}
