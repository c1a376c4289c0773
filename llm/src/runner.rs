//! Runs a task's requests: the cache first, then the endpoints, concurrently, with every paid
//! answer checked and committed to the run log before it is used.
//!
//! The requests of a batch run on the task's request threads (see [`crate::request_threads`]),
//! shared with the batches before and after it. When the run is stopping, no new request
//! starts; answers already on their way are awaited for a short grace period (and cached when
//! they come), then the batch is given up: a resumed run asks the cache first. A batch that
//! fails (the budget reached, `on_failure: fail`) first waits for the requests already sent,
//! so every answer paid for is committed. With a budget,
//! each priced request reserves its worst-case cost before it is sent and settles it once its
//! answer is committed.

use crate::api::{Api, worst_prompt_tokens};
use crate::batch::{BatchFetcher, Mode, Planner, Settled};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::rate::RateLimit;
use crate::request_threads::RequestThreads;
use crate::response::{Completion, reported_usage};
use crate::settings::{LlmParams, OnFailure};
use crossbeam_channel::RecvTimeoutError;
use distill_engine::budget::counters;
use distill_engine::step::{StepError, StepResult};
use distill_engine::task::{Prefetch, Ready, Stopped, TaskContext};
use distill_engine::{Budget, Cost, Price, Reservation, canonical_json};
use distill_http::FailureKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a stopping batch waits for the answers already on their way.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The request cache key: blake3 of the request's canonical JSON (sorted keys) and the
/// generation index. The endpoint is not part of it, so any endpoint's answer serves.
pub fn cache_key(body: &serde_json::Value, generation: u32) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(canonical_json(body).to_string().as_bytes());
    hasher.update(&generation.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// One request of a batch: the body and which generation of its row it is.
pub struct Request {
    /// The request body (for the task's API).
    pub body: serde_json::Value,
    /// Generation index within its row.
    pub generation: u32,
}

/// The answer to one request, checked.
#[derive(Debug, Clone)]
pub struct Answered {
    /// What the answer says.
    pub completion: Completion,
    /// The answer as received (for `keep_raw`).
    pub body: Vec<u8>,
}

/// What became of one request: its answer, or why it failed for good (kept as data).
pub type Outcome = Result<Answered>;

/// Request threads per request the task may have in progress: a thread that has its answer
/// waits for the answer's cache commit while another one uses the endpoint.
const THREADS_PER_SLOT: usize = 2;

/// Why a batch's requests stopped before every one had an outcome.
#[derive(Debug)]
pub enum Halt {
    /// The run is stopping; the batch is done again on resume.
    Stopped,
    /// A failure that ends the batch: the request cache failed, the budget is reached, or a
    /// request failed with `on_failure: fail`.
    Failed(Error),
}

impl From<Halt> for StepError {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::Stopped => Box::new(Stopped),
            Halt::Failed(e) => e.into_step_error(),
        }
    }
}

/// A task's connection to its LLM, alive between `load` and `unload`.
pub struct Runner {
    /// The task's parameters.
    pub params: LlmParams,
    api: Api,
    client: Option<Arc<Client>>,
    /// The request threads (while loaded): [`THREADS_PER_SLOT`] per request the task may
    /// have in progress.
    threads: Option<Arc<RequestThreads>>,
    rate: Arc<RateLimit>,
    /// Requests batch jobs failed for good (batch mode), answered with their failure.
    settled: Arc<Settled>,
}

impl Runner {
    /// A runner for the chat-completions API, not yet connected.
    pub fn new(params: LlmParams) -> Self {
        Self::for_api(params, Api::Chat)
    }

    /// A runner for `api`, not yet connected.
    pub fn for_api(params: LlmParams, api: Api) -> Self {
        let rate = Arc::new(RateLimit::new(
            params.requests_per_minute,
            params.tokens_per_minute,
        ));
        Self {
            params,
            api,
            client: None,
            threads: None,
            rate,
            settled: Arc::new(Settled::default()),
        }
    }

    /// The task's prefetcher for a stage (see [`distill_engine::task::Task::prefetch`]): in
    /// batch mode, a manager of provider jobs for `step` that asks `planner` for the requests
    /// of each window; online, none (with a warning when batch jobs of the step are open).
    pub fn prefetch(
        &self,
        step: &str,
        ctx: &Arc<dyn TaskContext>,
        ready: Ready,
        planner: Arc<dyn Planner>,
    ) -> StepResult<Option<Box<dyn Prefetch>>> {
        match self.params.mode {
            Mode::Online => {
                crate::batch::warn_open_jobs(step, ctx.as_ref());
                Ok(None)
            }
            Mode::Batch => {
                let fetcher = BatchFetcher::start(
                    step,
                    &self.params,
                    ctx.clone(),
                    ready,
                    planner,
                    self.settled.clone(),
                )
                .map_err(Error::into_step_error)?;
                Ok(Some(Box::new(fetcher)))
            }
        }
    }

    /// Builds the client and checks every endpoint (reachable, key accepted).
    pub fn load(&mut self) -> Result<()> {
        let client = self.params.client()?;
        client.check()?;
        let threads = RequestThreads::start(THREADS_PER_SLOT * self.concurrency())
            .map_err(|e| Error::params(format!("cannot start the request threads: {e}")))?;
        self.client = Some(Arc::new(client));
        self.threads = Some(Arc::new(threads));
        Ok(())
    }

    /// Drops the client and the request threads (they end once their queued work is done).
    pub fn unload(&mut self) {
        self.client = None;
        self.threads = None;
    }

    /// Requests the task may have in progress: its concurrency over all its endpoints.
    fn concurrency(&self) -> usize {
        self.params.concurrency * self.params.endpoints().len()
    }

    /// Runs `requests` concurrently (up to the task's concurrency over all endpoints) and
    /// returns one outcome per request, in order.
    pub fn run(
        &self,
        requests: Vec<Request>,
        ctx: &Arc<dyn TaskContext>,
    ) -> std::result::Result<Vec<Outcome>, Halt> {
        let caller = Arc::new(self.caller(ctx)?);
        let total = requests.len();
        let requests = Arc::new(requests);
        let outcomes = {
            let caller = caller.clone();
            self.run_jobs(total, ctx, move |i| caller.complete(&requests[i]))?
        };
        tracing::debug!(
            requests = total,
            cache_hits = caller.hits.load(Ordering::SeqCst),
            "batch answered"
        );
        Ok(outcomes)
    }

    /// What the request threads of one batch share.
    pub(crate) fn caller(&self, ctx: &Arc<dyn TaskContext>) -> std::result::Result<Caller, Halt> {
        let client = self.client.clone().ok_or(Halt::Failed(Error::NotLoaded))?;
        Ok(Caller {
            client,
            rate: self.rate.clone(),
            ctx: ctx.clone(),
            budget: ctx.budget(),
            price: self.params.price,
            api: self.api,
            on_failure: self.params.on_failure,
            max_tokens: match self.api {
                Api::Embeddings => 0,
                _ => self.params.generation.max_tokens.unwrap_or(0),
            },
            hits: AtomicUsize::new(0),
            settled: self.settled.clone(),
        })
    }

    /// Runs `job(0..total)` on up to the task's concurrency (over all endpoints) of threads and
    /// returns the results in order. A job's `Ok(None)` means the run stopped before it was
    /// done; its error ends the batch.
    pub(crate) fn run_jobs<T: Send + 'static>(
        &self,
        total: usize,
        ctx: &Arc<dyn TaskContext>,
        job: impl Fn(usize) -> Result<Option<T>> + Send + Sync + 'static,
    ) -> std::result::Result<Vec<T>, Halt> {
        if total == 0 {
            return Ok(Vec::new());
        }
        let threads = self.threads.clone().ok_or(Halt::Failed(Error::NotLoaded))?;
        let workers = (THREADS_PER_SLOT * self.concurrency()).min(total);
        let jobs = Arc::new(Jobs {
            total,
            next: AtomicUsize::new(0),
            abandoned: AtomicBool::new(false),
            ctx: ctx.clone(),
            job,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        // One loop per thread the batch may use, queued behind the batches before it.
        for _ in 0..workers {
            let (jobs, tx) = (jobs.clone(), tx.clone());
            if !threads.run(move || jobs.work(&tx)) {
                return Err(Halt::Failed(Error::NotLoaded));
            }
        }
        drop(tx);
        let mut results: Vec<Option<T>> = (0..total).map(|_| None).collect();
        let (mut done, mut stopping_since) = (0, None::<Instant>);
        let outcome = loop {
            if done == total {
                break Ok(());
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Item::Done(i, result)) => {
                    results[i] = Some(result);
                    done += 1;
                }
                Ok(Item::Fatal(e)) => break Err(Halt::Failed(e)),
                Err(RecvTimeoutError::Timeout) => {
                    if ctx.stopping() {
                        jobs.abandoned.store(true, Ordering::SeqCst);
                        let since = *stopping_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= STOP_GRACE {
                            break Err(Halt::Stopped);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break Err(Halt::Stopped),
            }
        };
        jobs.abandoned.store(true, Ordering::SeqCst);
        if let Err(Halt::Failed(_)) = &outcome {
            // The batch ends, but requests already sent are paid for: their answers are
            // committed before it returns (a stop cuts this wait short after the grace).
            let mut stopping_since = None::<Instant>;
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(_) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {
                        if ctx.stopping()
                            && stopping_since.get_or_insert_with(Instant::now).elapsed()
                                >= STOP_GRACE
                        {
                            break;
                        }
                    }
                }
            }
        }
        outcome?;
        Ok(results.into_iter().flatten().collect())
    }
}

enum Item<T> {
    Done(usize, T),
    Fatal(Error),
}

/// The jobs of one batch, shared by its request threads.
struct Jobs<F> {
    total: usize,
    next: AtomicUsize,
    abandoned: AtomicBool,
    ctx: Arc<dyn TaskContext>,
    job: F,
}

impl<F> Jobs<F> {
    fn work<T>(&self, tx: &crossbeam_channel::Sender<Item<T>>)
    where
        F: Fn(usize) -> Result<Option<T>>,
    {
        loop {
            if self.abandoned.load(Ordering::SeqCst) || self.ctx.stopping() {
                return;
            }
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if i >= self.total {
                return;
            }
            let item = match (self.job)(i) {
                Ok(Some(result)) => Item::Done(i, result),
                Ok(None) => return,
                Err(fatal) => Item::Fatal(fatal),
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    }
}

/// What came of paying for one request.
pub(crate) enum Paid {
    /// An answer (not yet checked), with the budget reservation to settle.
    Answer {
        /// The body, as received.
        body: Vec<u8>,
        /// Held on the budget until the answer is committed.
        reservation: Option<Reservation>,
    },
    /// The request failed for good (after its retries).
    Failed(Error),
    /// The run stopped before it was answered.
    Stopped,
}

/// What a batch's request threads share: the client, the limits, the run's cache, counters
/// and budget, and the task's price.
pub(crate) struct Caller {
    client: Arc<Client>,
    rate: Arc<RateLimit>,
    ctx: Arc<dyn TaskContext>,
    budget: Option<Arc<Budget>>,
    price: Option<Price>,
    api: Api,
    on_failure: OnFailure,
    max_tokens: u64,
    hits: AtomicUsize,
    settled: Arc<Settled>,
}

impl Caller {
    /// The cached answer under `key`, if any (a failed read is an error, never a miss).
    pub fn cached(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self.ctx.cached(key)?)
    }

    /// Why a batch job failed the request with cache key `key` for good, if it did (batch
    /// mode: kept as the row's failure rather than asked online).
    pub fn settled_failure(&self, key: &[u8; 32]) -> Option<String> {
        self.settled.failure(key)
    }

    /// Counts an answer served from the cache, with the tokens it would have cost.
    pub fn hit(&self, input_tokens: u64, output_tokens: u64) {
        self.ctx.count("cache_hits", 1);
        self.ctx.count(counters::CACHED_INPUT_TOKENS, input_tokens);
        self.ctx
            .count(counters::CACHED_OUTPUT_TOKENS, output_tokens);
        self.hits.fetch_add(1, Ordering::SeqCst);
    }

    /// Pays for `body`: reserves its worst-case cost on the budget (a priced task), waits for
    /// the rate limits, posts it with retries, and counts requests, retries and failures.
    pub fn pay(&self, body: &serde_json::Value) -> Result<Paid> {
        let ctx = self.ctx.as_ref();
        let stop = ctx.stop_flag();
        let reservation = match (&self.budget, &self.price) {
            (Some(budget), Some(price)) => {
                let worst = price.online(worst_prompt_tokens(body), self.max_tokens);
                match budget
                    .reserve(worst, stop.as_deref())
                    .map_err(Error::Budget)?
                {
                    Some(reservation) => Some(reservation),
                    None => return Ok(Paid::Stopped),
                }
            }
            _ => None,
        };
        if !self.rate.before_request(stop.as_deref()) {
            return Ok(Paid::Stopped);
        }
        let answer = self.client.post(self.api.path(), body, stop);
        ctx.count("requests", 1);
        match answer {
            Ok(answer) => {
                if answer.retries > 0 {
                    ctx.count("retries", u64::from(answer.retries));
                }
                Ok(Paid::Answer {
                    body: answer.body,
                    reservation,
                })
            }
            Err(failure) => {
                if failure.retries > 0 {
                    ctx.count("retries", u64::from(failure.retries));
                }
                if failure.error.kind() == FailureKind::Interrupted {
                    return Ok(Paid::Stopped);
                }
                ctx.count("failures", 1);
                Ok(Paid::Failed(Error::Request(failure.error)))
            }
        }
    }

    /// Keeps a usable answer: its tokens counted and its cache `entries` committed in one
    /// durable transaction, then its reservation settled at its real cost.
    pub fn keep(
        &self,
        entries: Vec<([u8; 32], Vec<u8>)>,
        input_tokens: u64,
        output_tokens: u64,
        reservation: Option<Reservation>,
    ) -> Result<()> {
        let ctx = self.ctx.as_ref();
        // Counted first: the counts ride in the same commit as the answers.
        ctx.count(counters::INPUT_TOKENS, input_tokens);
        ctx.count(counters::OUTPUT_TOKENS, output_tokens);
        ctx.store_all(entries)?;
        self.settle(reservation, input_tokens, output_tokens);
        self.rate.record_tokens(input_tokens + output_tokens);
        Ok(())
    }

    /// An answer that cannot be used: counted as a failure, with the tokens it says it cost
    /// (paid all the same); never cached.
    pub fn unusable(&self, body: &[u8], reservation: Option<Reservation>) {
        let (input, output) = reported_usage(body);
        let ctx = self.ctx.as_ref();
        ctx.count("failures", 1);
        ctx.count(counters::INPUT_TOKENS, input);
        ctx.count(counters::OUTPUT_TOKENS, output);
        self.settle(reservation, input, output);
        self.rate.record_tokens(input + output);
    }

    fn settle(&self, reservation: Option<Reservation>, input: u64, output: u64) {
        if let Some(reservation) = reservation {
            let cost = self
                .price
                .map_or(Cost::ZERO, |price| price.online(input, output));
            reservation.settle(cost);
        }
    }

    /// A request's failure, as data (`on_failure: null`) or as the end of the batch (`fail`).
    pub fn failed<T>(&self, error: Error) -> Result<Result<T>> {
        match self.on_failure {
            OnFailure::Fail => Err(error),
            OnFailure::Null => Ok(Err(error)),
        }
    }

    /// A request's failure as the text kept in the row (`on_failure: null`), or as the end of
    /// the batch (`fail`).
    pub fn as_data(&self, error: Error) -> Result<String> {
        match self.on_failure {
            OnFailure::Fail => Err(error),
            OnFailure::Null => Ok(error.to_string()),
        }
    }

    /// The outcome of one text request (chat or completions); `None` when the run stopped
    /// before it was answered; an error when the batch must end.
    fn complete(&self, request: &Request) -> Result<Option<Outcome>> {
        let key = cache_key(&request.body, request.generation);
        if let Some(bytes) = self.cached(&key)? {
            match Completion::parse_for(self.api, "the request cache", &bytes) {
                Ok(completion) => {
                    self.hit(completion.input_tokens, completion.output_tokens);
                    return Ok(Some(Ok(Answered {
                        completion,
                        body: bytes,
                    })));
                }
                // JSON, but unusable (no text): an older build cached it without checking it.
                // It was never a usable answer, so it is asked again.
                Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {}
                Err(e) => {
                    return Err(Error::DamagedCache {
                        key: key.iter().map(|b| format!("{b:02x}")).collect(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        if let Some(detail) = self.settled_failure(&key) {
            // A batch job failed it for good (batch mode): kept as the row's failure.
            self.ctx.count("failures", 1);
            return Ok(Some(Err(Error::BatchRequest { detail })));
        }
        let (body, reservation) = match self.pay(&request.body)? {
            Paid::Answer { body, reservation } => (body, reservation),
            Paid::Failed(error) => return self.failed(error).map(Some),
            Paid::Stopped => return Ok(None),
        };
        match Completion::parse_for(self.api, &format!("POST {}", self.api.path()), &body) {
            Ok(completion) => {
                // Paid for and usable: durable before anything else happens with it.
                self.keep(
                    vec![(key, body.clone())],
                    completion.input_tokens,
                    completion.output_tokens,
                    reservation,
                )?;
                Ok(Some(Ok(Answered { completion, body })))
            }
            Err(unusable) => {
                self.unusable(&body, reservation);
                self.failed(unusable).map(Some)
            }
        }
    }
}
