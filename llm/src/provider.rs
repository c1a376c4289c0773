//! The provider's own rate limits, as its answers announce them: OpenAI's
//! `x-ratelimit-remaining-requests`/`-tokens` and `x-ratelimit-reset-requests`/`-tokens`
//! (durations like `6m0s`, `1s`, `20ms`). Once an endpoint said how many requests (or tokens)
//! are left until its window resets, no more than that start before the reset: the run slows
//! down before the provider answers 429. When a window resets, the endpoint's whole limit
//! (`x-ratelimit-limit-*`) may start, and no more until an answer says where the new window
//! stands.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest single sleep between two looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What one answer said about a window: requests (or tokens) left, and when it resets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Announced {
    /// The window's size (`x-ratelimit-limit-*`), when given.
    pub limit: Option<u64>,
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
        let limit = get(format!("x-ratelimit-limit-{what}")).and_then(|l| l.parse().ok());
        Some(Announced {
            limit,
            remaining,
            reset,
        })
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

/// What one meter (requests, or estimated tokens) may still start: `remaining` counted from
/// `base`, until `reset_at`.
#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u64,
    base: u64,
    reset_at: Instant,
    limit: Option<u64>,
    /// Taken to be whole after a reset, with a reset time of our own: the first answer in it
    /// gives the real reset time.
    guessed: bool,
}

/// How long a window taken to be whole after a reset lasts when no answer says otherwise.
const FRESH_WINDOW: Duration = Duration::from_secs(60);

/// Requests or tokens: what started, what is still in flight, and the window in force.
#[derive(Debug, Default)]
struct Meter {
    /// Amount started so far (requests, or estimated tokens).
    started: u64,
    /// Amount started but not answered.
    in_flight: u64,
    /// `started` when the window last reset: answers to requests started before it speak
    /// of the old window.
    fresh_from: u64,
    window: Option<Window>,
}

/// Where a request stood on one meter when it started.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    /// `started` with this request.
    end: u64,
    /// In flight when it started: the provider may count those after it.
    in_flight_before: u64,
    /// Its own amount.
    amount: u64,
}

impl Meter {
    /// How much may still start: the window's remaining less what started since its base.
    fn room(&self) -> Option<u64> {
        self.window.map(|w| {
            w.remaining
                .saturating_sub(self.started.saturating_sub(w.base))
        })
    }

    /// Past its reset, a window is whole again (when its limit is known) from now on.
    fn roll(&mut self, now: Instant) {
        if let Some(w) = self.window
            && w.reset_at <= now
        {
            self.fresh_from = self.started;
            self.window = w.limit.map(|limit| Window {
                remaining: limit,
                base: self.started,
                reset_at: now + FRESH_WINDOW,
                limit: Some(limit),
                guessed: true,
            });
        }
    }

    fn start(&mut self, amount: u64) -> Mark {
        let mark = Mark {
            end: self.started + amount,
            in_flight_before: self.in_flight,
            amount,
        };
        self.started += amount;
        self.in_flight += amount;
        mark
    }

    /// The answer to the request of `mark` came (with what it announced, if anything). Each
    /// announcement bounds what may start: its remaining, less everything that started after
    /// it or was in flight when it started (the provider may count those after it); the
    /// tightest bound is kept.
    fn answered(&mut self, mark: Mark, announced: Option<Announced>, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(mark.amount);
        let Some(a) = announced else {
            return;
        };
        if mark.end <= self.fresh_from {
            return;
        }
        let candidate = Window {
            remaining: a.remaining,
            base: mark.end.saturating_sub(mark.in_flight_before),
            reset_at: now + a.reset,
            limit: a.limit.or(self.window.and_then(|w| w.limit)),
            guessed: false,
        };
        let room = |w: &Window| {
            w.remaining
                .saturating_sub(self.started.saturating_sub(w.base))
        };
        self.window = match self.window {
            Some(w) if w.reset_at > now && room(&w) <= room(&candidate) => Some(Window {
                reset_at: if w.guessed {
                    candidate.reset_at
                } else {
                    w.reset_at
                },
                guessed: false,
                ..w
            }),
            _ => Some(candidate),
        };
    }
}

#[derive(Debug, Default)]
struct State {
    requests: Meter,
    tokens: Meter,
}

/// Where a request stood when it started: what the limits announced by its answer count from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    requests: Mark,
    tokens: Mark,
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
            let wait = match self.try_start(tokens) {
                Ok(ticket) => return Some(ticket),
                Err(wait) => wait,
            };
            if !logged {
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "the endpoint's rate limit is used up: waiting for its reset"
                );
                logged = true;
            }
            std::thread::sleep(wait.clamp(Duration::from_millis(1), STOP_POLL));
        }
    }

    /// Counts a request of about `tokens` tokens as started when the windows announced have
    /// room for it; else how long until the window in the way resets.
    fn try_start(&self, tokens: u64) -> Result<Ticket, Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.requests.roll(now);
        s.tokens.roll(now);
        let full = |m: &Meter, amount: u64| {
            m.room()
                .is_some_and(|room| room < amount.max(1))
                .then(|| m.window.map_or(Duration::ZERO, |w| w.reset_at - now))
        };
        if let Some(wait) = full(&s.requests, 1).or_else(|| full(&s.tokens, tokens)) {
            return Err(wait);
        }
        Ok(Ticket {
            requests: s.requests.start(1),
            tokens: s.tokens.start(tokens),
        })
    }

    /// The attempt of `ticket` is over; `announced` is what its answer's headers said
    /// (requests, tokens), when an answer came.
    pub fn after(&self, ticket: Ticket, announced: (Option<Announced>, Option<Announced>)) {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.answered(ticket.requests, announced.0, now);
        s.tokens.answered(ticket.tokens, announced.1, now);
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
            (
                Some(Announced {
                    limit: Some(3),
                    remaining: 2,
                    reset: Duration::from_millis(300),
                }),
                None,
            ),
        );
        let started = Instant::now();
        limits.before(10, None).unwrap();
        limits.before(10, None).unwrap();
        assert!(started.elapsed() < Duration::from_millis(250));
        // The third waits for the reset; then the whole limit may start, and no more.
        limits.before(10, None).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        limits.before(10, None).unwrap();
        limits.before(10, None).unwrap();
        assert!(limits.try_start(10).is_err());
        let stop = AtomicBool::new(true);
        assert!(limits.before(10, Some(&stop)).is_none());
        // Tokens: what is left bounds the next requests' estimates.
        let tokens = ProviderLimits::default();
        let first = tokens.before(10, None).unwrap();
        tokens.after(
            first,
            (
                None,
                Some(Announced {
                    limit: None,
                    remaining: 25,
                    reset: Duration::from_secs(60),
                }),
            ),
        );
        tokens.before(10, None).unwrap();
        tokens.before(10, None).unwrap();
        assert!(tokens.try_start(10).is_err());
        assert!(tokens.try_start(5).is_ok());
    }

    #[test]
    fn answers_out_of_order_never_widen_the_window() {
        let limits = ProviderLimits::default();
        // A burst of 4; the provider counted the last one first (9 left after it) and the
        // first one last (6 left after it).
        let tickets: Vec<Ticket> = (0..4).map(|_| limits.try_start(1).unwrap()).collect();
        let said = |remaining| {
            (
                Some(Announced {
                    limit: Some(10),
                    remaining,
                    reset: Duration::from_secs(60),
                }),
                None,
            )
        };
        // The three started after the first may not be counted in its 6: 3 may start.
        limits.after(tickets[0], said(6));
        // The last one's 9 (three in flight before it) allows 6: the tighter 3 stays.
        limits.after(tickets[3], said(9));
        for _ in 0..3 {
            limits.try_start(1).unwrap();
        }
        assert!(limits.try_start(1).is_err());
    }
}
