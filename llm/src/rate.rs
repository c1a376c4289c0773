//! Requests-per-minute and tokens-per-minute limits over a sliding minute.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
/// Longest single sleep between two looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Window {
    starts: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
}

/// Waits before a request while the last minute already holds the allowed requests or tokens.
pub(crate) struct RateLimit {
    rpm: Option<u32>,
    tpm: Option<u64>,
    window: Mutex<Window>,
}

impl RateLimit {
    /// A limit; `None` means unlimited.
    pub fn new(rpm: Option<u32>, tpm: Option<u64>) -> Self {
        Self {
            rpm,
            tpm,
            window: Mutex::new(Window::default()),
        }
    }

    /// Blocks until a request may start, then records its start; returns false (and records
    /// nothing) when `stop` is set meanwhile.
    pub fn before_request(&self, stop: Option<&AtomicBool>) -> bool {
        if self.rpm.is_none() && self.tpm.is_none() {
            return true;
        }
        loop {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return false;
            }
            let wait = {
                let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let fresh = |t: &Instant| now.duration_since(*t) < MINUTE;
                while w.starts.front().is_some_and(|t| !fresh(t)) {
                    w.starts.pop_front();
                }
                while w.tokens.front().is_some_and(|(t, _)| !fresh(t)) {
                    w.tokens.pop_front();
                }
                let used: u64 = w.tokens.iter().map(|(_, n)| n).sum();
                let rpm_full = self
                    .rpm
                    .is_some_and(|r| w.starts.len() as u64 >= u64::from(r));
                let tpm_full = self.tpm.is_some_and(|t| used >= t);
                if !rpm_full && !tpm_full {
                    w.starts.push_back(now);
                    return true;
                }
                let oldest = if rpm_full {
                    w.starts.front().copied()
                } else {
                    w.tokens.front().map(|(t, _)| *t)
                };
                oldest.map_or(Duration::from_millis(10), |t| {
                    MINUTE.saturating_sub(now.duration_since(t))
                })
            };
            std::thread::sleep(wait.clamp(Duration::from_millis(1), STOP_POLL));
        }
    }

    /// Counts the tokens a finished request used.
    pub fn record_tokens(&self, tokens: u64) {
        if self.tpm.is_some() {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            w.tokens.push_back((Instant::now(), tokens));
        }
    }
}
