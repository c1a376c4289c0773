//! Runs a task's requests: the cache first, then the endpoints, concurrently, with every paid
//! answer checked and committed to the run log before it is used.
//!
//! The requests of a batch run on their own threads. When the run is stopping, no new request
//! starts; answers already on their way are awaited for a short grace period (and cached when
//! they come), then the batch is given up: a resumed run asks the cache first.

use crate::batch::{BatchFetcher, Mode, Planner, Settled};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::rate::RateLimit;
use crate::response::Completion;
use crate::settings::{LlmParams, OnFailure};
use crossbeam_channel::RecvTimeoutError;
use distill_engine::canonical_json;
use distill_engine::step::{StepError, StepResult};
use distill_engine::task::{Prefetch, Ready, Stopped, TaskContext};
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
    /// The chat-completions body.
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

/// Why a batch's requests stopped before every one had an outcome.
#[derive(Debug)]
pub enum Halt {
    /// The run is stopping; the batch is done again on resume.
    Stopped,
    /// A failure that ends the batch: the request cache failed, or a request failed with
    /// `on_failure: fail`.
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
    client: Option<Arc<Client>>,
    rate: Arc<RateLimit>,
    /// Requests batch jobs failed for good (batch mode), answered with their failure.
    settled: Arc<Settled>,
}

impl Runner {
    /// A runner, not yet connected.
    pub fn new(params: LlmParams) -> Self {
        let rate = Arc::new(RateLimit::new(
            params.requests_per_minute,
            params.tokens_per_minute,
        ));
        Self {
            params,
            client: None,
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
        self.client = Some(Arc::new(client));
        Ok(())
    }

    /// Drops the client.
    pub fn unload(&mut self) {
        self.client = None;
    }

    /// Runs `requests` concurrently (up to the task's concurrency over all endpoints) and
    /// returns one outcome per request, in order.
    pub fn run(
        &self,
        requests: Vec<Request>,
        ctx: &Arc<dyn TaskContext>,
    ) -> std::result::Result<Vec<Outcome>, Halt> {
        let client = self.client.clone().ok_or(Halt::Failed(Error::NotLoaded))?;
        let total = requests.len();
        if total == 0 {
            return Ok(Vec::new());
        }
        let workers = (self.params.concurrency * self.params.endpoints().len()).min(total);
        let batch = Arc::new(Batch {
            requests,
            next: AtomicUsize::new(0),
            abandoned: AtomicBool::new(false),
            hits: AtomicUsize::new(0),
            client,
            rate: self.rate.clone(),
            ctx: ctx.clone(),
            settled: self.settled.clone(),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..workers {
            let (batch, tx) = (batch.clone(), tx.clone());
            std::thread::Builder::new()
                .name("distill-llm".into())
                .spawn(move || batch.work(&tx))
                .map_err(|e| {
                    Halt::Failed(Error::params(format!("cannot start a request thread: {e}")))
                })?;
        }
        drop(tx);
        let mut outcomes: Vec<Option<Outcome>> = (0..total).map(|_| None).collect();
        let (mut done, mut stopping_since) = (0, None::<Instant>);
        let result = loop {
            if done == total {
                break Ok(());
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Item::Done(_, Err(e))) if self.params.on_failure == OnFailure::Fail => {
                    break Err(Halt::Failed(e));
                }
                Ok(Item::Done(i, outcome)) => {
                    outcomes[i] = Some(outcome);
                    done += 1;
                }
                Ok(Item::Fatal(e)) => break Err(Halt::Failed(e)),
                Err(RecvTimeoutError::Timeout) => {
                    if ctx.stopping() {
                        batch.abandoned.store(true, Ordering::SeqCst);
                        let since = *stopping_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= STOP_GRACE {
                            break Err(Halt::Stopped);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break Err(Halt::Stopped),
            }
        };
        batch.abandoned.store(true, Ordering::SeqCst);
        result?;
        tracing::debug!(
            requests = total,
            cache_hits = batch.hits.load(Ordering::SeqCst),
            "batch answered"
        );
        Ok(outcomes.into_iter().flatten().collect())
    }
}

enum Item {
    Done(usize, Outcome),
    Fatal(Error),
}

/// The requests of one batch, shared by its request threads.
struct Batch {
    requests: Vec<Request>,
    next: AtomicUsize,
    abandoned: AtomicBool,
    hits: AtomicUsize,
    client: Arc<Client>,
    rate: Arc<RateLimit>,
    ctx: Arc<dyn TaskContext>,
    settled: Arc<Settled>,
}

impl Batch {
    fn work(&self, tx: &crossbeam_channel::Sender<Item>) {
        loop {
            if self.abandoned.load(Ordering::SeqCst) || self.ctx.stopping() {
                return;
            }
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(request) = self.requests.get(i) else {
                return;
            };
            let item = match self.one(request) {
                Ok(Some(outcome)) => Item::Done(i, outcome),
                Ok(None) => return,
                Err(fatal) => Item::Fatal(fatal),
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    }

    /// The outcome of one request; `None` when the run stopped before it was answered; an
    /// error when the request cache failed.
    fn one(&self, request: &Request) -> Result<Option<Outcome>> {
        let ctx = self.ctx.as_ref();
        let key = cache_key(&request.body, request.generation);
        if let Some(bytes) = ctx.cached(&key)? {
            match Completion::parse("the request cache", &bytes) {
                Ok(completion) => {
                    ctx.count("cache_hits", 1);
                    self.hits.fetch_add(1, Ordering::SeqCst);
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
        if let Some(detail) = self.settled.failure(&key) {
            // A batch job failed it for good (batch mode): kept as the row's failure.
            ctx.count("failures", 1);
            return Ok(Some(Err(Error::BatchRequest { detail })));
        }
        let stop = ctx.stop_flag();
        if !self.rate.before_request(stop.as_deref()) {
            return Ok(None);
        }
        let answer = self.client.post("chat/completions", &request.body, stop);
        ctx.count("requests", 1);
        let answer = match answer {
            Ok(answer) => answer,
            Err(failure) => {
                if failure.retries > 0 {
                    ctx.count("retries", u64::from(failure.retries));
                }
                if failure.error.kind() == FailureKind::Interrupted {
                    return Ok(None);
                }
                ctx.count("failures", 1);
                return Ok(Some(Err(Error::Request(failure.error))));
            }
        };
        if answer.retries > 0 {
            ctx.count("retries", u64::from(answer.retries));
        }
        match Completion::parse("POST chat/completions", &answer.body) {
            Ok(completion) => {
                // Paid for and usable: durable before anything else happens with it.
                ctx.store(key, answer.body.clone())?;
                ctx.count("input_tokens", completion.input_tokens);
                ctx.count("output_tokens", completion.output_tokens);
                self.rate
                    .record_tokens(completion.input_tokens + completion.output_tokens);
                Ok(Some(Ok(Answered {
                    completion,
                    body: answer.body,
                })))
            }
            Err(unusable) => {
                ctx.count("failures", 1);
                Ok(Some(Err(unusable)))
            }
        }
    }
}
