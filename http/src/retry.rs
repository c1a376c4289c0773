//! When and how long to wait before trying a failed call again.

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A flag that, once set, makes waits before retries end at once (Ctrl-C, SIGTERM).
pub type Stop = Arc<AtomicBool>;

/// How often to try, how long to wait in between, and how long one attempt may take.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Longest delay between attempts (a longer `Retry-After` is honoured up to this).
    pub max_delay: Duration,
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// When set, a wait before a retry ends at once and the call fails as interrupted.
    pub stop: Option<Stop>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(120),
            stop: None,
        }
    }
}

/// Longest `Retry-After` obeyed, whatever `max_delay` says (10 minutes): a server asking for
/// an hour is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Longest single wait between two looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

impl RetryPolicy {
    /// Backoff before retry number `retries + 1`: `Retry-After` when given, else exponential
    /// with jitter between half and all of it; never more than `max_delay` (nor a
    /// `Retry-After` above [`MAX_RETRY_AFTER`]).
    pub fn delay(&self, retries: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_delay).min(MAX_RETRY_AFTER);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retries.min(16))
            .min(self.max_delay);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Whether the stop flag is set.
    pub fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// Sleeps `delay`, ending early (false) when the stop flag is set.
    pub fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(STOP_POLL));
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out; transient
    /// failures are retried after [`RetryPolicy::delay`]. `on_retry` is told of each retry
    /// (with the failure and the wait) before the wait; every retry is also logged.
    pub fn run<T>(
        &self,
        call: &str,
        mut attempt: impl FnMut() -> Result<T>,
        mut on_retry: impl FnMut(&Error, Duration),
    ) -> Result<T> {
        let mut retries = 0;
        loop {
            let error = match attempt() {
                Ok(value) => return Ok(value),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            if retries + 1 >= self.max_attempts {
                return Err(error.with_note(&format!(" (gave up after {} attempts)", retries + 1)));
            }
            let retry_after = match &error {
                Error::Transient { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = self.delay(retries, retry_after);
            tracing::warn!(
                retry = retries + 1,
                of = self.max_attempts - 1,
                wait_ms = wait.as_millis() as u64,
                "retrying: {error}"
            );
            on_retry(&error, wait);
            if !self.pause(wait) {
                return Err(Error::Interrupted {
                    call: call.to_owned(),
                });
            }
            retries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(after: Option<Duration>) -> Error {
        Error::Transient {
            call: "GET x".into(),
            detail: "HTTP 503".into(),
            retry_after: after,
            status: Some(503),
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_honour_retry_after_up_to_the_cap() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        for retries in 0..6 {
            let full = Duration::from_millis(100 << retries).min(Duration::from_secs(2));
            let d = policy.delay(retries, None);
            assert!(d >= full / 2 && d <= full, "{retries}: {d:?}");
        }
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
        let patient = RetryPolicy {
            max_delay: Duration::from_secs(86_400),
            ..RetryPolicy::default()
        };
        assert_eq!(
            patient.delay(0, Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn transient_failures_are_retried_until_the_attempts_run_out() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let mut retries = 0;
        let err = policy
            .run(
                "GET x",
                || -> Result<()> {
                    calls += 1;
                    Err(transient(None))
                },
                |_, _| retries += 1,
            )
            .unwrap_err();
        assert_eq!((calls, retries), (3, 2));
        assert!(
            err.to_string().contains("gave up after 3 attempts"),
            "{err}"
        );
        let mut calls = 0;
        let err = policy
            .run(
                "GET x",
                || -> Result<()> {
                    calls += 1;
                    Err(Error::Auth {
                        call: "GET x".into(),
                        status: 401,
                        detail: "no".into(),
                    })
                },
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!((calls, err.kind()), (1, crate::FailureKind::Auth));
    }

    #[test]
    fn a_long_retry_after_ends_when_the_caller_stops() {
        let stop = Stop::default();
        let policy = RetryPolicy {
            max_delay: Duration::from_secs(3600),
            stop: Some(stop.clone()),
            ..RetryPolicy::default()
        };
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::SeqCst);
            })
        };
        let started = Instant::now();
        let err = policy
            .run(
                "GET x",
                || -> Result<()> { Err(transient(Some(Duration::from_secs(3600)))) },
                |_, _| {},
            )
            .unwrap_err();
        setter.join().unwrap();
        assert_eq!(err.kind(), crate::FailureKind::Interrupted);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
