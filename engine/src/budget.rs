//! What LLM answers cost, and the run's spending budget.
//!
//! A task with a `price` parameter ([`Price`], US dollars per million tokens) counts the
//! tokens it pays for in its counters ([`counters`]); spend is always computed from those
//! committed counters, so `status`, a resumed run and the budget agree. A pipeline with
//! `budget_usd` gives its tasks one [`Budget`]: before a request is sent its worst-case cost is
//! reserved ([`Budget::reserve`]) against the spend committed so far (earlier sessions
//! included) plus the reservations in flight, and settled with the real cost once its answer
//! is committed ([`Reservation::settle`]). Amounts are whole nano-dollars ([`Cost`]), so sums
//! never drift.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The counter names spend is computed from.
pub mod counters {
    /// Prompt tokens of answers paid for online.
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Completion tokens of answers paid for online.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Prompt tokens of answers paid for in provider batch jobs.
    pub const BATCH_INPUT_TOKENS: &str = "batch_input_tokens";
    /// Completion tokens of answers paid for in provider batch jobs.
    pub const BATCH_OUTPUT_TOKENS: &str = "batch_output_tokens";
    /// Prompt tokens of answers served from the request cache (not paid again).
    pub const CACHED_INPUT_TOKENS: &str = "cached_input_tokens";
    /// Completion tokens of answers served from the request cache (not paid again).
    pub const CACHED_OUTPUT_TOKENS: &str = "cached_output_tokens";
}

/// An amount of money in whole nano-dollars (10⁻⁹ USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Cost(pub u64);

impl Cost {
    /// Nothing.
    pub const ZERO: Cost = Cost(0);

    /// `usd` dollars, rounded up to the next nano-dollar (negative or NaN: zero).
    pub fn from_usd(usd: f64) -> Self {
        let nanos = (usd * 1e9).ceil();
        Cost(if nanos.is_finite() && nanos > 0.0 {
            nanos.min(u64::MAX as f64) as u64
        } else {
            0
        })
    }

    /// In dollars.
    pub fn usd(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost(self.0.saturating_add(other.0))
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, |a, b| a + b)
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${:.6}", self.usd())
    }
}

/// What a task's tokens cost, in US dollars per million tokens: the `price` parameter of
/// every LLM task. Batch prices default to half the online ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens, online.
    pub input_per_mtok: f64,
    /// Completion tokens, online (0 when not given: embeddings have none).
    #[serde(default)]
    pub output_per_mtok: f64,
    /// Prompt tokens in provider batch jobs (default: half of `input_per_mtok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_input_per_mtok: Option<f64>,
    /// Completion tokens in provider batch jobs (default: half of `output_per_mtok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_output_per_mtok: Option<f64>,
}

/// Most dollars per million tokens a price may say (far above any real price).
pub const MAX_PRICE_PER_MTOK: f64 = 1e6;

fn per_token(per_mtok: f64, tokens: u64) -> Cost {
    Cost::from_usd(tokens as f64 * per_mtok / 1e6)
}

impl Price {
    /// The `price` of a step's parameters, if it has one; a malformed one is an error naming
    /// it.
    pub fn of_params(params: &serde_json::Value) -> Result<Option<Price>> {
        let Some(value) = params.get("price").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let price: Price = crate::step::from_json(value.clone()).map_err(|e| match e {
            Error::BadValue { path, detail } => Error::BadValue {
                path: Some(path.map_or("price".into(), |p| format!("price.{p}"))),
                detail,
            },
            other => other,
        })?;
        price.check()?;
        Ok(Some(price))
    }

    /// Checks that every price is a number from 0 to [`MAX_PRICE_PER_MTOK`].
    pub fn check(&self) -> Result<()> {
        for (name, value) in [
            ("input_per_mtok", Some(self.input_per_mtok)),
            ("output_per_mtok", Some(self.output_per_mtok)),
            ("batch_input_per_mtok", self.batch_input_per_mtok),
            ("batch_output_per_mtok", self.batch_output_per_mtok),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=MAX_PRICE_PER_MTOK).contains(&v))
            {
                return Err(Error::BadValue {
                    path: Some(format!("price.{name}")),
                    detail: format!(
                        "must be dollars per million tokens from 0 to {MAX_PRICE_PER_MTOK}, not {v}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether completion tokens cost anything (online or in batches).
    pub fn charges_output(&self) -> bool {
        self.output_per_mtok > 0.0 || self.batch_output_per_mtok.is_some_and(|p| p > 0.0)
    }

    /// Prompt tokens in batch jobs, per million.
    pub fn batch_input(&self) -> f64 {
        self.batch_input_per_mtok
            .unwrap_or(self.input_per_mtok / 2.0)
    }

    /// Completion tokens in batch jobs, per million.
    pub fn batch_output(&self) -> f64 {
        self.batch_output_per_mtok
            .unwrap_or(self.output_per_mtok / 2.0)
    }

    /// The cost of an online request of `input` prompt and `output` completion tokens.
    pub fn online(&self, input: u64, output: u64) -> Cost {
        per_token(self.input_per_mtok, input) + per_token(self.output_per_mtok, output)
    }

    /// The cost of `input` prompt and `output` completion tokens in a batch job.
    pub fn batch(&self, input: u64, output: u64) -> Cost {
        per_token(self.batch_input(), input) + per_token(self.batch_output(), output)
    }

    /// Spend and savings from a step's committed counters: paid tokens at their prices, and
    /// cached tokens at the online price (what they would have cost).
    pub fn spend(&self, counters: &BTreeMap<String, u64>) -> Spend {
        let n = |name: &str| counters.get(name).copied().unwrap_or(0);
        Spend {
            spent: self.online(n(counters::INPUT_TOKENS), n(counters::OUTPUT_TOKENS))
                + self.batch(
                    n(counters::BATCH_INPUT_TOKENS),
                    n(counters::BATCH_OUTPUT_TOKENS),
                ),
            saved: self.online(
                n(counters::CACHED_INPUT_TOKENS),
                n(counters::CACHED_OUTPUT_TOKENS),
            ),
        }
    }
}

/// Money spent, and money the request cache saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spend {
    /// Paid for answers.
    pub spent: Cost,
    /// What answers served from the cache would have cost.
    pub saved: Cost,
}

/// The run's spending limit, shared by its tasks: reservations of worst-case costs against
/// the committed spend. It is never exceeded as long as every answer costs at most what was
/// reserved for it.
#[derive(Debug)]
pub struct Budget {
    limit: Cost,
    ledger: Mutex<Ledger>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Ledger {
    spent: Cost,
    reserved: Cost,
    in_flight: usize,
}

/// Longest wait between two looks at the stop flag while a reservation waits for room.
const STOP_POLL: Duration = Duration::from_millis(50);

impl Budget {
    /// A budget of `limit` of which `spent` is already committed.
    pub fn new(limit: Cost, spent: Cost) -> Self {
        Self {
            limit,
            ledger: Mutex::new(Ledger {
                spent,
                ..Ledger::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit.
    pub fn limit(&self) -> Cost {
        self.limit
    }

    /// What has been spent and settled (committed answers).
    pub fn spent(&self) -> Cost {
        self.ledger().spent
    }

    /// What reservations in flight hold.
    pub fn reserved(&self) -> Cost {
        self.ledger().reserved
    }

    /// What may still be reserved now: the limit less what is spent and reserved.
    pub fn available(&self) -> Cost {
        let ledger = self.ledger();
        Cost(
            self.limit
                .0
                .saturating_sub((ledger.spent + ledger.reserved).0),
        )
    }

    /// Reserves `worst` if it fits now, without waiting (for a thread that must not block:
    /// the batch manager, whose own reservations settle only when it collects its jobs).
    pub fn try_reserve(self: &Arc<Self>, worst: Cost) -> Option<Reservation> {
        let mut ledger = self.ledger();
        if ledger.spent + ledger.reserved + worst > self.limit {
            return None;
        }
        ledger.reserved = ledger.reserved + worst;
        ledger.in_flight += 1;
        Some(Reservation {
            budget: self.clone(),
            amount: worst,
        })
    }

    /// Holds `amount` whatever the limit says: work a provider already has (a batch job
    /// submitted before the run stopped) costs what it costs, and must count against what
    /// later requests may spend.
    pub fn hold(self: &Arc<Self>, amount: Cost) -> Reservation {
        let mut ledger = self.ledger();
        ledger.reserved = ledger.reserved + amount;
        ledger.in_flight += 1;
        Reservation {
            budget: self.clone(),
            amount,
        }
    }

    /// [`Error::BudgetReached`] for a cost of `needed` that does not fit while nothing is in
    /// flight (nothing will settle to make room); `None` while something may.
    pub fn reached(&self, needed: Cost) -> Option<Error> {
        let ledger = self.ledger();
        (ledger.in_flight == 0 && ledger.spent + ledger.reserved + needed > self.limit).then(|| {
            Error::BudgetReached {
                limit: self.limit,
                spent: ledger.spent,
                needed,
            }
        })
    }

    /// Reserves `worst` (a request's or a whole batch job's worst-case cost) before paying for
    /// it. While it does not fit but other reservations are in flight, waits for them to
    /// settle; when it does not fit and none is in flight, nothing ever will:
    /// [`Error::BudgetReached`]. `Ok(None)` when `stop` is set while waiting.
    pub fn reserve(
        self: &Arc<Self>,
        worst: Cost,
        stop: Option<&AtomicBool>,
    ) -> Result<Option<Reservation>> {
        let mut ledger = self.ledger();
        loop {
            if ledger.spent + ledger.reserved + worst <= self.limit {
                ledger.reserved = ledger.reserved + worst;
                ledger.in_flight += 1;
                return Ok(Some(Reservation {
                    budget: self.clone(),
                    amount: worst,
                }));
            }
            if ledger.in_flight == 0 {
                return Err(Error::BudgetReached {
                    limit: self.limit,
                    spent: ledger.spent,
                    needed: worst,
                });
            }
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Ok(None);
            }
            ledger = self
                .changed
                .wait_timeout(ledger, STOP_POLL)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// A worst-case cost held on a [`Budget`]. [`Reservation::settle`] records what was really
/// spent; dropping it unsettled releases it (nothing was paid).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    amount: Cost,
}

impl Reservation {
    /// The amount held.
    pub fn amount(&self) -> Cost {
        self.amount
    }

    /// Records `actual` as spent (call it once the answer and its token counts are
    /// committed) and releases the reservation.
    pub fn settle(self, actual: Cost) {
        let mut ledger = self.budget.ledger();
        ledger.spent = ledger.spent + actual;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut ledger = self.budget.ledger();
        ledger.reserved = Cost(ledger.reserved.0.saturating_sub(self.amount.0));
        ledger.in_flight = ledger.in_flight.saturating_sub(1);
        drop(ledger);
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_reserve_never_waits_and_held_work_counts_against_later_reservations() {
        let budget = Arc::new(Budget::new(Cost(100), Cost(30)));
        assert_eq!(budget.available(), Cost(70));
        let held = budget.hold(Cost(50));
        assert!(budget.try_reserve(Cost(21)).is_none());
        assert!(
            budget.reached(Cost(21)).is_none(),
            "the held job may settle for less"
        );
        let small = budget.try_reserve(Cost(20)).unwrap();
        held.settle(Cost(10));
        small.settle(Cost(20));
        assert_eq!((budget.spent(), budget.available()), (Cost(60), Cost(40)));
        assert!(matches!(
            budget.reached(Cost(41)),
            Some(Error::BudgetReached {
                needed: Cost(41),
                ..
            })
        ));
    }

    fn price(input: f64, output: f64) -> Price {
        Price {
            input_per_mtok: input,
            output_per_mtok: output,
            batch_input_per_mtok: None,
            batch_output_per_mtok: None,
        }
    }

    #[test]
    fn spend_comes_from_the_counters_and_batch_prices_default_to_half() {
        let p = price(2.0, 8.0);
        let counters: BTreeMap<String, u64> = [
            ("input_tokens", 1_000_000),
            ("output_tokens", 500_000),
            ("batch_input_tokens", 1_000_000),
            ("batch_output_tokens", 1_000_000),
            ("cached_input_tokens", 250_000),
            ("requests", 99),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let s = p.spend(&counters);
        assert_eq!(s.spent, Cost::from_usd(2.0 + 4.0 + 1.0 + 4.0));
        assert_eq!(s.saved, Cost::from_usd(0.5));
        assert_eq!(p.online(1, 0), Cost(2000));
    }

    #[test]
    fn bad_prices_are_refused_naming_the_field() {
        let err = Price::of_params(&serde_json::json!({"price": {"input_per_mtok": -1.0}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("price.input_per_mtok"), "{err}");
        let err = Price::of_params(&serde_json::json!({"price": {"input": 1.0}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("price"), "{err}");
        assert_eq!(Price::of_params(&serde_json::json!({})).unwrap(), None);
    }

    #[test]
    fn reservations_never_pass_the_limit_and_a_lone_misfit_is_the_end() {
        let budget = Arc::new(Budget::new(Cost(100), Cost(10)));
        let a = budget.reserve(Cost(50), None).unwrap().unwrap();
        let b = budget.reserve(Cost(40), None).unwrap().unwrap();
        assert_eq!(budget.reserved(), Cost(90));
        // Does not fit now; fits once `a` settles below its worst case.
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.reserve(Cost(30), None).unwrap().is_some())
        };
        std::thread::sleep(Duration::from_millis(100));
        a.settle(Cost(5));
        assert!(waiter.join().unwrap());
        assert_eq!(budget.spent(), Cost(15));
        drop(b);
        assert_eq!(budget.reserved(), Cost::ZERO);
        // Nothing in flight and no room: the budget is reached.
        let err = budget.reserve(Cost(86), None).unwrap_err();
        assert!(matches!(err, Error::BudgetReached { .. }), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Budget);
        assert!(budget.reserve(Cost(85), None).unwrap().is_some());
    }

    #[test]
    fn a_waiting_reservation_ends_when_the_run_stops() {
        let budget = Arc::new(Budget::new(Cost(10), Cost::ZERO));
        let _held = budget.reserve(Cost(10), None).unwrap().unwrap();
        let stop = AtomicBool::new(true);
        assert!(budget.reserve(Cost(1), Some(&stop)).unwrap().is_none());
    }
}
