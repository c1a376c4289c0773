//! The provider's own rate limits, as its answers announce them: OpenAI's
//! `x-ratelimit-remaining-requests`/`-tokens` and `x-ratelimit-reset-requests`/`-tokens`
//! (durations like `6m0s`, `1s`, `20ms`). Once an endpoint said how many requests (or tokens)
//! are left until its window resets, no more than that start before the reset: the run slows
//! down before the provider answers 429.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest single sleep between two looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What one answer said about a window: requests (or tokens) left, and when it resets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Announced {
    /// Left in the window when the request was counted.
    pub remaining: u64,
    /// Until the window resets, from when the answer was read.
    pub reset: Duration,
}

/// The rate-limit headers of an answer: (requests, tokens), each when both of its headers are
/// present and readable.
pub(crate) fn announced(
    headers: &distill_http::reqwest::header::HeaderMap,
) -> (Option<Announced>, Option<Announced>) {
    let read = |what: &str| {
        let get = |name: String| {
            headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let remaining = get(format!("x-ratelimit-remaining-{what}"))?
            .parse::<u64>()
            .ok()?;
        let reset = parse_duration(get(format!("x-ratelimit-reset-{what}"))?)?;
        Some(Announced { remaining, reset })
    };
    (read("requests"), read("tokens"))
}

/// Parses a duration as providers write it: `6m0s`, `1s`, `20ms`, `1h2m3.5s`, `0.5s`, or a
/// bare number of seconds. `None` when it is not one.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A window the endpoint announced: `remaining` more may start after the request numbered
/// `base` (requests, or estimated tokens, counted as they start) until `reset_at`.
#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u64,
    base: u64,
    reset_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Requests started so far.
    started: u64,
    /// Estimated tokens of the requests started so far.
    tokens: u64,
    requests_window: Option<Window>,
    tokens_window: Option<Window>,
}

/// Where a request stood when it started: what the limits announced by its answer count from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    seq: u64,
    tokens: u64,
}

/// One endpoint's announced limits.
#[derive(Debug, Default)]
pub(crate) struct ProviderLimits {
    state: Mutex<State>,
}

impl ProviderLimits {
    /// Waits until a request of about `tokens` tokens may start under the windows announced,
    /// then counts it. `None` when `stop` is set meanwhile.
    pub fn before(&self, tokens: u64, stop: Option<&AtomicBool>) -> Option<Ticket> {
        let mut logged = false;
        loop {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return None;
            }
            let wait = {
                let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let s = &mut *guard;
                let now = Instant::now();
                for window in [&mut s.requests_window, &mut s.tokens_window] {
                    if window.is_some_and(|w| w.reset_at <= now) {
                        *window = None;
                    }
                }
                let requests_full = s
                    .requests_window
                    .filter(|w| s.started.saturating_sub(w.base) >= w.remaining);
                let tokens_full = s
                    .tokens_window
                    .filter(|w| s.tokens.saturating_sub(w.base) + tokens > w.remaining);
                match requests_full.or(tokens_full) {
                    None => {
                        s.started += 1;
                        s.tokens += tokens;
                        return Some(Ticket {
                            seq: s.started,
                            tokens: s.tokens,
                        });
                    }
                    Some(w) => w.reset_at - now,
                }
            };
            if !logged {
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "the endpoint's rate limit is used up: waiting for its reset"
                );
                logged = true;
            }
            std::thread::sleep(wait.min(STOP_POLL));
        }
    }

    /// Takes in what the answer to the request of `ticket` announced (its headers).
    pub fn after(&self, ticket: Ticket, requests: Option<Announced>, tokens: Option<Announced>) {
        if requests.is_none() && tokens.is_none() {
            return;
        }
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Requests that started after this one may not be counted in what it announced: they
        // are taken as not counted, so they use up the remaining.
        if let Some(a) = requests
            && s.requests_window.is_none_or(|w| w.base <= ticket.seq)
        {
            s.requests_window = Some(Window {
                remaining: a.remaining,
                base: ticket.seq,
                reset_at: now + a.reset,
            });
        }
        if let Some(a) = tokens
            && s.tokens_window.is_none_or(|w| w.base <= ticket.tokens)
        {
            s.tokens_window = Some(Window {
                remaining: a.remaining,
                base: ticket.tokens,
                reset_at: now + a.reset,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_providers_formats() {
        let ms = |n: u64| Some(Duration::from_millis(n));
        assert_eq!(parse_duration("6m0s"), ms(360_000));
        assert_eq!(parse_duration("1s"), ms(1000));
        assert_eq!(parse_duration("20ms"), ms(20));
        assert_eq!(parse_duration("1h2m3.5s"), ms(3_723_500));
        assert_eq!(parse_duration("0.25s"), ms(250));
        assert_eq!(parse_duration("2"), ms(2000));
        for bad in ["", "s", "5x", "1.2.3s", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn no_more_start_than_announced_until_the_reset() {
        let limits = ProviderLimits::default();
        let first = limits.before(10, None).unwrap();
        // The answer to the first request: 2 more requests may start within 300 ms.
        limits.after(
            first,
            Some(Announced {
                remaining: 2,
                reset: Duration::from_millis(300),
            }),
            None,
        );
        let started = Instant::now();
        limits.before(10, None).unwrap();
        limits.before(10, None).unwrap();
        assert!(started.elapsed() < Duration::from_millis(250));
        // The third waits for the reset.
        limits.before(10, None).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        // A stop ends a wait.
        let fourth = limits.before(10, None).unwrap();
        limits.after(
            fourth,
            None,
            Some(Announced {
                remaining: 5,
                reset: Duration::from_secs(60),
            }),
        );
        let stop = AtomicBool::new(true);
        assert!(limits.before(10, Some(&stop)).is_none());
    }
}
