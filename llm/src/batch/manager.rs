//! The batch manager of one step: a thread beside the run (outside the worker pool) that turns
//! the cache misses of waiting windows into provider jobs, polls them, commits their answers to
//! the request cache and tells the scheduler which windows are ready.
//!
//! Exactly once: a job's request set is committed before its file is uploaded, the file id
//! before the job is created (tagged with the request set's hash), the job id once created. A
//! run killed anywhere resumes from those records: a planned job is planned again, an uploaded
//! one is looked up by its tag and file before it is created, a created one is only polled.

use crate::batch::planner::{self, Known, Planner};
use crate::batch::provider::{BatchObject, BatchStatus, Connection, Provider};
use crate::batch::record::{
    self, JobRecord, Key, Phase, decode_keys, encode_keys, from_hex, hex, job_hash,
};
use crate::batch::{MAX_FILE_BYTES, MAX_RESUBMITS, OnBatchFailure, OnBatchWait};
use crate::error::{Error, Result};
use crate::runner::Request;
use crate::settings::LlmParams;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use distill_engine::task::{Prefetch, Ready, TaskContext};
use distill_engine::{Budget, Cost, ErrorKind, Price, Reservation, classified};
use distill_storage::{Progress, Row, now_ms};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait of the manager between two looks at its inbox and the stop flag.
const TICK: Duration = Duration::from_millis(200);
/// Answers committed to the request cache in one unit while a result file is read.
const ANSWERS_PER_COMMIT: usize = 500;
/// Bytes of answers committed in one unit while a result file is read.
const BYTES_PER_COMMIT: usize = 8 << 20;
/// Slack allowed between the provider's clock stamps when looking for a job (seconds).
const CLOCK_SLACK_SECS: i64 = 300;

/// Requests that batch jobs failed for good, with why, for `process` to report instead of
/// asking them online (`on_batch_failure: mark`, or resubmitted too often).
#[derive(Default)]
pub struct Settled {
    failures: RwLock<HashMap<Key, String>>,
}

impl Settled {
    /// Why the request with cache key `key` failed for good, if it did.
    pub fn failure(&self, key: &Key) -> Option<String> {
        self.failures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn set(&self, key: Key, why: String) {
        self.failures
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, why);
    }

    fn clear(&self) {
        self.failures
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

enum Msg {
    Window {
        window: u64,
        rows: Vec<Row>,
        last: bool,
    },
    Flush,
    Close,
}

/// What the scheduler may ask without waiting for the manager's thread.
#[derive(Default)]
struct Shared {
    /// Messages sent and not yet handled.
    pending: AtomicUsize,
    /// Whether the manager has nothing to do but poll the provider.
    parked: AtomicBool,
    /// Windows handed over and not yet reported.
    windows: Mutex<BTreeSet<u64>>,
    /// What is open at the provider, in a few words.
    summary: Mutex<String>,
}

/// A batch-mode step's [`Prefetch`]: the handle the scheduler holds on the manager's thread.
pub struct BatchFetcher {
    inbox: Sender<Msg>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    exit_when_parked: bool,
    max_waiting_rows: u64,
}

impl BatchFetcher {
    /// Starts the manager of `step`, which reads its jobs from the run log through `ctx`,
    /// builds requests with `planner`, tells `ready` of ready windows and `settled` of
    /// requests failed for good.
    pub fn start(
        step: &str,
        params: &LlmParams,
        ctx: Arc<dyn TaskContext>,
        ready: Ready,
        planner: Arc<dyn Planner>,
        settled: Arc<Settled>,
    ) -> Result<Self> {
        let provider = Provider::new(&Connection::of(params), ctx.stop_flag())?;
        settled.clear();
        let shared = Arc::new(Shared::default());
        let cap_lines = (params.batch_window * planner.lines_per_row()).max(1) as usize;
        let budget = params.price.and(ctx.budget());
        let manager = Manager {
            step: step.to_owned(),
            endpoint: format!("/v1/{}", planner.endpoint()),
            planner,
            ctx,
            provider,
            ready: ready.clone(),
            settled,
            shared: shared.clone(),
            budget,
            price: params.price,
            max_tokens: params.generation.max_tokens.unwrap_or(0),
            policy: params.on_batch_failure,
            poll: Duration::from_secs(params.poll_secs),
            cap_lines,
            max_open: params.max_open_jobs as usize,
            windows: BTreeMap::new(),
            pool: VecDeque::new(),
            pooled: HashSet::new(),
            jobs: Vec::new(),
            in_jobs: HashSet::new(),
            attempts: HashMap::new(),
            fallback: HashSet::new(),
            flush: false,
            upstream_done: false,
            fatal: None,
        };
        let (inbox, rx) = unbounded();
        let thread = {
            let (shared, step) = (shared.clone(), step.to_owned());
            std::thread::Builder::new()
                .name("distill-batch".into())
                .spawn(move || {
                    let outcome = catch_unwind(AssertUnwindSafe(|| manager.run(&rx)));
                    if outcome.is_err() {
                        // Whatever waited on the manager fails rather than wait forever.
                        let waiting = std::mem::take(&mut *lock(&shared.windows));
                        for window in waiting {
                            ready(
                                window,
                                Err(classified(
                                    ErrorKind::Bug,
                                    format!("the batch manager of '{step}' panicked"),
                                )),
                            );
                        }
                    }
                })
                .map_err(|e| Error::Batch {
                    detail: format!("cannot start the batch manager's thread: {e}"),
                })?
        };
        Ok(Self {
            inbox,
            shared,
            thread: Mutex::new(Some(thread)),
            exit_when_parked: params.on_batch_wait == OnBatchWait::Exit,
            max_waiting_rows: params.batch_window * params.max_open_jobs,
        })
    }

    fn send(&self, msg: Msg) {
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        if self.inbox.send(msg).is_err() {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Prefetch for BatchFetcher {
    fn window(&self, window: u64, rows: Vec<Row>, last: bool) {
        lock(&self.shared.windows).insert(window);
        self.send(Msg::Window { window, rows, last });
    }

    fn flush(&self) {
        self.send(Msg::Flush);
    }

    fn parked(&self) -> bool {
        self.shared.pending.load(Ordering::SeqCst) == 0 && self.shared.parked.load(Ordering::SeqCst)
    }

    fn exit_when_parked(&self) -> bool {
        self.exit_when_parked
    }

    fn max_waiting_rows(&self) -> u64 {
        self.max_waiting_rows
    }

    fn describe(&self) -> String {
        lock(&self.shared.summary).clone()
    }

    fn close(&self) {
        let _ = self.inbox.send(Msg::Close);
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BatchFetcher {
    fn drop(&mut self) {
        self.close();
    }
}

/// A window waiting on requests.
struct Waiting {
    rows: Vec<Row>,
    keys: HashSet<Key>,
}

/// An open job.
struct Job {
    record: JobRecord,
    keys: Vec<Key>,
    next_poll: Instant,
    /// The job's worst case held on the run's budget until its answers are committed.
    reservation: Option<Reservation>,
}

/// Why the manager stopped working: every waiting window fails with it.
struct Fatal {
    kind: ErrorKind,
    detail: String,
}

impl Fatal {
    fn error(&self) -> distill_engine::step::StepError {
        let error = Error::Batch {
            detail: self.detail.clone(),
        };
        match self.kind {
            ErrorKind::Storage | ErrorKind::Bug | ErrorKind::Budget => classified(self.kind, error),
            _ => Box::new(error),
        }
    }
}

struct Manager {
    step: String,
    endpoint: String,
    planner: Arc<dyn Planner>,
    ctx: Arc<dyn TaskContext>,
    provider: Provider,
    ready: Ready,
    settled: Arc<Settled>,
    shared: Arc<Shared>,
    /// The run's budget, when the step is priced and the pipeline has one.
    budget: Option<Arc<Budget>>,
    price: Option<Price>,
    /// Completion tokens a request may use (`generation.max_tokens`), for its worst case.
    max_tokens: u64,
    policy: OnBatchFailure,
    poll: Duration,
    /// Most requests in one job.
    cap_lines: usize,
    max_open: usize,
    windows: BTreeMap<u64, Waiting>,
    /// Requests no job holds yet, in the order they came.
    pool: VecDeque<(Key, Request)>,
    pooled: HashSet<Key>,
    jobs: Vec<Job>,
    in_jobs: HashSet<Key>,
    /// Jobs that failed each request so far.
    attempts: HashMap<Key, u32>,
    /// Requests failed by a job and left to `process` to ask online.
    fallback: HashSet<Key>,
    /// Send what the pool holds now: nothing else in the stage moved since the scheduler said
    /// so (a new window ends it). Requests pooled meanwhile (resubmitted) go out at once too.
    flush: bool,
    /// The step's last window came: no more rows to wait for.
    upstream_done: bool,
    fatal: Option<Fatal>,
}

impl Manager {
    fn run(mut self, inbox: &Receiver<Msg>) {
        if let Err(e) = self.resume() {
            if self.ctx.stopping() {
                return;
            }
            self.fail(e);
        }
        self.publish();
        loop {
            if self.ctx.stopping() {
                return;
            }
            let wait = self
                .jobs
                .iter()
                .map(|j| j.next_poll.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(TICK)
                .min(TICK);
            let mut handled = 0;
            match inbox.recv_timeout(wait) {
                Ok(first) => {
                    self.shared.parked.store(false, Ordering::SeqCst);
                    for msg in std::iter::once(first).chain(inbox.try_iter()) {
                        handled += 1;
                        match msg {
                            Msg::Close => return,
                            Msg::Flush => self.flush = true,
                            Msg::Window { window, rows, last } => {
                                // Rows are coming: jobs fill up to `batch_window` again.
                                self.flush = false;
                                self.take(window, rows, last);
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.fatal.is_none()
                && let Err(e) = self.work()
            {
                if self.ctx.stopping() {
                    // Cut short by Ctrl-C or SIGTERM: the next run takes the jobs up.
                    return;
                }
                self.fail(e);
            }
            self.publish();
            self.shared.pending.fetch_sub(handled, Ordering::SeqCst);
        }
    }

    /// Tells the scheduler where things stand.
    fn publish(&self) {
        let polled = self.jobs.iter().all(|j| {
            j.record.batch_id.is_some() && !j.record.status.is_some_and(BatchStatus::is_terminal)
        });
        let parked = self.fatal.is_none()
            && polled
            && (self.pool.is_empty() || self.jobs.len() >= self.max_open);
        self.shared.parked.store(parked, Ordering::SeqCst);
        let jobs: Vec<String> = self
            .jobs
            .iter()
            .map(|j| {
                let r = &j.record;
                format!(
                    "{} {} ({}/{} done)",
                    r.batch_id.as_deref().unwrap_or("(being created)"),
                    r.status.map_or(r.phase.as_str(), BatchStatus::as_str),
                    r.counts.completed,
                    r.lines
                )
            })
            .collect();
        let mut summary = format!(
            "{} job{} open",
            jobs.len(),
            if jobs.len() == 1 { "" } else { "s" }
        );
        if !jobs.is_empty() {
            summary.push_str(&format!(": {}", jobs.join(", ")));
        }
        if !self.pool.is_empty() {
            summary.push_str(&format!(
                "; {} requests not yet in a job (at most {} jobs open at once)",
                self.pool.len(),
                self.max_open
            ));
        }
        *lock(&self.shared.summary) = summary;
    }

    fn report(&self, window: u64, result: distill_engine::step::StepResult<()>) {
        lock(&self.shared.windows).remove(&window);
        (self.ready)(window, result);
    }

    /// Stops working: every waiting window fails with `error`, and so will every new one.
    /// Jobs stay at the provider; a later run takes them up.
    fn fail(&mut self, error: Error) {
        let kind = match &error {
            Error::Cache(_) | Error::DamagedCache { .. } => ErrorKind::Storage,
            other => other.kind(),
        };
        tracing::error!(step = %self.step, "batch mode stopped: {error}");
        let fatal = Fatal {
            kind,
            detail: error.to_string(),
        };
        for window in std::mem::take(&mut self.windows).into_keys() {
            self.report(window, Err(fatal.error()));
        }
        self.pool.clear();
        self.pooled.clear();
        self.fatal = Some(fatal);
    }

    fn take(&mut self, window: u64, rows: Vec<Row>, last: bool) {
        self.upstream_done |= last;
        if let Some(fatal) = &self.fatal {
            self.report(window, Err(fatal.error()));
            return;
        }
        self.windows.insert(
            window,
            Waiting {
                rows,
                keys: HashSet::new(),
            },
        );
        if let Err(e) = self.plan(window) {
            self.fail(e);
        }
    }

    /// What the manager knows of the request with cache key `key`.
    fn known(&self, key: &Key) -> Result<Known> {
        if let Some(bytes) = self.ctx.cached(key)? {
            return Ok(Known::Answer(bytes));
        }
        if self.fallback.contains(key) || self.settled.failure(key).is_some() {
            return Ok(Known::Settled);
        }
        Ok(Known::Missing)
    }

    /// Finds what window `window` still needs: those requests join the pool (or wait on the
    /// job that has them); a window that needs nothing is ready.
    fn plan(&mut self, window: u64) -> Result<()> {
        let Some(waiting) = self.windows.get(&window) else {
            return Ok(());
        };
        let found = planner::missing(self.planner.as_ref(), &waiting.rows, &mut |key| {
            self.known(key)
        });
        let missing = match found {
            Ok(missing) => missing,
            Err(e @ (Error::Cache(_) | Error::DamagedCache { .. })) => return Err(e),
            // A row that cannot become a request: `process` reports it as it does online.
            Err(_) => Vec::new(),
        };
        let Some(waiting) = self.windows.get_mut(&window) else {
            return Ok(());
        };
        for (key, request) in missing {
            waiting.keys.insert(key);
            if !self.in_jobs.contains(&key) && self.pooled.insert(key) {
                self.pool.push_back((key, request));
            }
        }
        if waiting.keys.is_empty() {
            self.windows.remove(&window);
            self.report(window, Ok(()));
        }
        Ok(())
    }

    fn work(&mut self) -> Result<()> {
        self.submit_ready()?;
        self.poll_due()
    }

    /// Takes up the step's jobs from the run log.
    fn resume(&mut self) -> Result<()> {
        let prefix = format!("{}{}:", record::RECORD, self.step);
        for (key, bytes) in self.ctx.records(&prefix)? {
            let mut record = JobRecord::decode(&key, &bytes)?;
            match record.phase {
                Phase::Planned => {
                    // Nothing was created: the requests are planned again as windows come.
                    self.ctx.commit(
                        Progress::new()
                            .record(record.key(), None)
                            .record(record.keys_key(), None),
                    )?;
                }
                Phase::Collected => {
                    let failures = std::mem::take(&mut record.failures);
                    let failures = failures
                        .into_iter()
                        .filter_map(|(k, why)| Some((from_hex(&k)?, why)));
                    self.settle(failures);
                }
                Phase::Uploaded | Phase::Submitted => {
                    let keys_key = record.keys_key();
                    let keys = match self
                        .ctx
                        .records(&keys_key)?
                        .into_iter()
                        .find(|(k, _)| *k == keys_key)
                    {
                        Some((_, bytes)) => decode_keys(&keys_key, &bytes)?,
                        None => {
                            return Err(Error::Batch {
                                detail: format!(
                                    "the run database has batch job '{key}' without its key list"
                                ),
                            });
                        }
                    };
                    // Paid for (or about to be) whatever the budget says now: it counts against
                    // what later jobs and requests may spend.
                    let reservation = self
                        .budget
                        .as_ref()
                        .map(|b| b.hold(Cost(record.worst_nanos)));
                    if record.phase == Phase::Uploaded {
                        // Killed between creating the job and recording it, perhaps.
                        let batch = match self.find(&record)? {
                            Some(batch) => {
                                tracing::info!(step = %self.step, batch = %batch.id, "adopted a batch job created before the run stopped");
                                batch
                            }
                            None => self.create(&record)?,
                        };
                        self.created(record, keys, batch, reservation)?;
                    } else {
                        self.in_jobs.extend(keys.iter().copied());
                        self.jobs.push(Job {
                            record,
                            keys,
                            next_poll: Instant::now(),
                            reservation,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the failure policy to requests a job failed.
    fn settle(&mut self, failures: impl IntoIterator<Item = (Key, String)>) {
        for (key, why) in failures {
            let n = self.attempts.entry(key).or_default();
            *n += 1;
            match self.policy {
                OnBatchFailure::Mark => self.settled.set(key, why),
                OnBatchFailure::Online => {
                    self.fallback.insert(key);
                }
                OnBatchFailure::Resubmit if *n > MAX_RESUBMITS => {
                    let n = *n;
                    self.settled
                        .set(key, format!("{why} (failed in {n} batch jobs)"));
                }
                OnBatchFailure::Resubmit => {}
            }
        }
    }

    /// Sends jobs while the pool has enough requests (or is to be flushed) and fewer than
    /// `max_open_jobs` are open.
    fn submit_ready(&mut self) -> Result<()> {
        loop {
            if self.pool.is_empty() {
                return Ok(());
            }
            let full = self.pool.len() >= self.cap_lines;
            if self.jobs.len() >= self.max_open || !(full || self.flush || self.upstream_done) {
                return Ok(());
            }
            // The job's lines: as many as the cap, the file size and the budget allow.
            let available = self.budget.as_ref().map(|b| b.available());
            let (mut lines, mut bytes, mut worst) = (Vec::new(), 0usize, Cost::ZERO);
            for (key, request) in self.pool.iter().take(self.cap_lines) {
                let line = serde_json::json!({
                    "custom_id": hex(key),
                    "method": "POST",
                    "url": self.endpoint,
                    "body": request.body,
                })
                .to_string();
                if !lines.is_empty() && bytes + line.len() + 1 > MAX_FILE_BYTES {
                    break;
                }
                let line_worst = self.worst(&request.body);
                if available.is_some_and(|room| worst + line_worst > room) {
                    break;
                }
                bytes += line.len() + 1;
                worst = worst + line_worst;
                lines.push(line);
            }
            let reservation = match &self.budget {
                None => None,
                Some(budget) => match budget.try_reserve(worst).filter(|_| !lines.is_empty()) {
                    Some(reservation) => Some(reservation),
                    None => {
                        // Nothing fits what is left now: wait for what is in flight to
                        // settle, unless nothing is (then nothing ever will).
                        let needed = self
                            .pool
                            .front()
                            .map_or(Cost::ZERO, |(_, r)| self.worst(&r.body));
                        return match budget.reached(needed) {
                            Some(reached) if self.jobs.is_empty() => Err(Error::Budget(reached)),
                            _ => Ok(()),
                        };
                    }
                },
            };
            let mut keys = Vec::with_capacity(lines.len());
            let mut jsonl = Vec::with_capacity(bytes);
            for line in lines {
                let Some((key, _)) = self.pool.pop_front() else {
                    break;
                };
                self.pooled.remove(&key);
                jsonl.extend_from_slice(line.as_bytes());
                jsonl.push(b'\n');
                keys.push(key);
            }
            self.submit(keys, &jsonl, worst, reservation)?;
        }
    }

    /// The most a request may cost at batch prices (nothing for an unpriced step).
    fn worst(&self, body: &serde_json::Value) -> Cost {
        self.price.map_or(Cost::ZERO, |price| {
            price.batch(crate::api::worst_prompt_tokens(body), self.max_tokens)
        })
    }

    /// The exactly-once protocol: the request set, then the file, then the job, each
    /// committed before the next call.
    fn submit(
        &mut self,
        keys: Vec<Key>,
        jsonl: &[u8],
        worst: Cost,
        reservation: Option<Reservation>,
    ) -> Result<()> {
        let tagged: Vec<(Key, u32)> = keys
            .iter()
            .map(|k| (*k, self.attempts.get(k).copied().unwrap_or(0)))
            .collect();
        let hash = job_hash(&tagged);
        let now = now_ms();
        let mut record = JobRecord {
            step: self.step.clone(),
            hash,
            lines: keys.len() as u64,
            phase: Phase::Planned,
            file_id: None,
            file_created_at: None,
            batch_id: None,
            status: None,
            counts: Default::default(),
            answered: 0,
            failures: BTreeMap::new(),
            created_ms: now,
            updated_ms: now,
            worst_nanos: worst.0,
        };
        self.ctx.commit(
            Progress::new()
                .record(record.key(), Some(record.encode()))
                .record(record.keys_key(), Some(encode_keys(&keys))),
        )?;
        self.in_jobs.extend(keys.iter().copied());
        let name = format!("distill-{}-{}.jsonl", self.step, &record.hash[..16]);
        let file = self.provider.upload(&name, jsonl)?;
        record.phase = Phase::Uploaded;
        record.file_id = Some(file.id);
        record.file_created_at = file.created_at;
        self.save(&mut record, Progress::new())?;
        let batch = self.create(&record)?;
        self.created(record, keys, batch, reservation)
    }

    /// Commits `record` (touched now) with `unit`.
    fn save(&self, record: &mut JobRecord, unit: Progress) -> Result<()> {
        record.updated_ms = now_ms();
        self.ctx
            .commit(unit.record(record.key(), Some(record.encode())))?;
        Ok(())
    }

    /// Creates the job of an uploaded `record`. A failure without an answer may hide a job
    /// the provider did create: it is looked for before trying again.
    fn create(&self, record: &JobRecord) -> Result<BatchObject> {
        let file_id = record.file_id.as_deref().unwrap_or_default();
        let metadata = BTreeMap::from([
            ("distill_job".to_owned(), record.hash.clone()),
            ("distill_step".to_owned(), self.step.clone()),
        ]);
        let policy = self.provider.policy().clone();
        let mut retries = 0;
        loop {
            let error = match self
                .provider
                .create_once(file_id, &self.endpoint, &metadata)
            {
                Ok(batch) => return Ok(batch),
                Err(e) => e,
            };
            if !error.is_transient() {
                return Err(error.into());
            }
            if let Some(batch) = self.find(record)? {
                return Ok(batch);
            }
            if retries + 1 >= policy.max_attempts {
                return Err(error.into());
            }
            tracing::warn!(step = %self.step, "creating a batch job failed, trying again: {error}");
            if !policy.pause(policy.delay(retries, None)) {
                return Err(Error::Request(distill_http::Error::Interrupted {
                    call: "POST batches".into(),
                }));
            }
            retries += 1;
        }
    }

    /// The provider's job of `record`, if it created one: same input file, or same tag.
    fn find(&self, record: &JobRecord) -> Result<Option<BatchObject>> {
        let since = record.file_created_at.map(|t| t - CLOCK_SLACK_SECS);
        self.provider.find(since, |batch| {
            (record.file_id.is_some() && batch.input_file_id == record.file_id)
                || (batch.tag("distill_job") == Some(&record.hash)
                    && batch.tag("distill_step") == Some(&self.step))
        })
    }

    /// Records the job `batch` created for `record`, and polls it from now on.
    fn created(
        &mut self,
        mut record: JobRecord,
        keys: Vec<Key>,
        batch: BatchObject,
        reservation: Option<Reservation>,
    ) -> Result<()> {
        record.phase = Phase::Submitted;
        record.batch_id = Some(batch.id.clone());
        record.status = Some(batch.status);
        record.counts = batch.request_counts.unwrap_or_default();
        // Counted in the unit that records the job, so a kill never counts it twice.
        let counts = Progress::new().count(&self.step, "batch_jobs", 1).count(
            &self.step,
            "batch_requests",
            record.lines,
        );
        self.save(&mut record, counts)?;
        tracing::info!(step = %self.step, batch = %batch.id, requests = record.lines, "batch job created");
        self.in_jobs.extend(keys.iter().copied());
        self.jobs.push(Job {
            record,
            keys,
            next_poll: Instant::now(),
            reservation,
        });
        Ok(())
    }

    /// Polls the jobs whose time has come, and collects the finished ones.
    fn poll_due(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut finished = Vec::new();
        for (i, job) in self.jobs.iter_mut().enumerate() {
            if job.next_poll > now {
                continue;
            }
            job.next_poll = now + self.poll;
            let Some(id) = job.record.batch_id.clone() else {
                continue;
            };
            let batch = match self.provider.get(&id) {
                Ok(batch) => batch,
                Err(Error::Request(e)) if e.is_transient() => {
                    tracing::warn!(step = %self.step, batch = %id, "polling failed, trying again later: {e}");
                    continue;
                }
                Err(Error::Request(e)) if e.kind() == distill_http::FailureKind::Interrupted => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let counts = batch.request_counts.unwrap_or_default();
            if job.record.status != Some(batch.status) || job.record.counts != counts {
                job.record.status = Some(batch.status);
                job.record.counts = counts;
                job.record.updated_ms = now_ms();
                self.ctx
                    .commit(Progress::new().record(job.record.key(), Some(job.record.encode())))?;
                tracing::info!(step = %self.step, batch = %id, status = %batch.status, completed = counts.completed, failed = counts.failed, "batch job polled");
            }
            if batch.status.is_terminal() {
                finished.push((i, batch));
            }
        }
        let mut done = Vec::new();
        for (i, batch) in finished {
            match self.collect(i, &batch) {
                Ok(()) => done.push(i),
                Err(Error::Request(e)) if e.is_transient() => {
                    tracing::warn!(step = %self.step, batch = %batch.id, "reading the job's results failed, trying again later: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        for i in done.into_iter().rev() {
            let job = self.jobs.remove(i);
            self.answered(&job.keys)?;
        }
        Ok(())
    }

    /// Reads a finished job's output and error files: each usable answer is committed to the
    /// request cache (unless it is there), each failure recorded; then the job is collected.
    fn collect(&mut self, i: usize, batch: &BatchObject) -> Result<()> {
        let keys: HashSet<Key> = self.jobs[i].keys.iter().copied().collect();
        let mut answered: HashSet<Key> = HashSet::new();
        let mut failures: BTreeMap<Key, String> = BTreeMap::new();
        let mut unit = Progress::new();
        let (mut unit_answers, mut unit_bytes) = (0usize, 0usize);
        let (mut paid_input, mut paid_output) = (0u64, 0u64);
        let files = [&batch.output_file_id, &batch.error_file_id];
        for file in files.into_iter().flatten() {
            self.provider.lines(file, |line| {
                let Some((key, outcome)) = self.result_line(line, &keys)? else {
                    return Ok(());
                };
                match outcome {
                    Ok((body, input, output)) => {
                        failures.remove(&key);
                        if !answered.insert(key) || self.ctx.cached(&key)?.is_some() {
                            return Ok(());
                        }
                        unit_bytes += body.len();
                        unit_answers += 1;
                        paid_input += input;
                        paid_output += output;
                        // Counted with the answers they belong to: committed together, once.
                        unit = std::mem::take(&mut unit)
                            .cache(key, body)
                            .count(&self.step, "batch_answers", 1)
                            .count(&self.step, "batch_input_tokens", input)
                            .count(&self.step, "batch_output_tokens", output);
                        if unit_answers >= ANSWERS_PER_COMMIT || unit_bytes >= BYTES_PER_COMMIT {
                            self.ctx.commit(std::mem::take(&mut unit))?;
                            (unit_answers, unit_bytes) = (0, 0);
                        }
                    }
                    Err(why) if !answered.contains(&key) => {
                        failures.insert(key, why);
                    }
                    Err(_) => {}
                }
                Ok(())
            })?;
        }
        let why = match batch.status {
            BatchStatus::Expired => "the batch job expired before this request was done".into(),
            BatchStatus::Cancelled => {
                "the batch job was cancelled before this request was done".into()
            }
            BatchStatus::Failed => format!("the batch job failed: {}", batch.error_text()),
            _ => "the batch job's results have nothing for this request".into(),
        };
        for key in &keys {
            if !answered.contains(key) && !failures.contains_key(key) {
                failures.insert(*key, why.clone());
            }
        }
        if !failures.is_empty() {
            unit = unit.count(&self.step, "batch_failures", failures.len() as u64);
        }
        let job = &mut self.jobs[i];
        let mut record = job.record.clone();
        record.phase = Phase::Collected;
        record.answered = answered.len() as u64;
        record.failures = failures
            .iter()
            .map(|(k, why)| (hex(k), why.clone()))
            .collect();
        let keys_key = record.keys_key();
        self.save(&mut record, unit.record(keys_key, None))?;
        tracing::info!(step = %self.step, batch = %batch.id, answered = record.answered, failed = failures.len(), "batch job collected");
        self.jobs[i].record = record;
        if let Some(reservation) = self.jobs[i].reservation.take() {
            let paid = self
                .price
                .map_or(Cost::ZERO, |p| p.batch(paid_input, paid_output));
            reservation.settle(paid);
        }
        self.settle(failures);
        Ok(())
    }

    /// One line of a result file: the request's key (one of `keys`), and its answer (body,
    /// input and output tokens) or why it has none. `None`: not a request of this job.
    #[allow(clippy::type_complexity)]
    fn result_line(
        &self,
        line: &[u8],
        keys: &HashSet<Key>,
    ) -> Result<Option<(Key, std::result::Result<(Vec<u8>, u64, u64), String>)>> {
        let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| Error::Batch {
            detail: format!("a line of a batch job's results is not JSON: {e}"),
        })?;
        let custom_id = value["custom_id"].as_str().unwrap_or_default();
        let Some(key) = from_hex(custom_id).filter(|k| keys.contains(k)) else {
            tracing::warn!(step = %self.step, custom_id, "a batch result for no request of the job was ignored");
            return Ok(None);
        };
        let error = &value["error"];
        if !error.is_null() {
            return Ok(Some((key, Err(error_text(error)))));
        }
        let response = &value["response"];
        let status = response["status_code"].as_u64().unwrap_or(0);
        let body = &response["body"];
        if status != 200 {
            let detail = if body["error"].is_null() {
                body.to_string()
            } else {
                error_text(&body["error"])
            };
            return Ok(Some((key, Err(format!("HTTP {status}: {detail}")))));
        }
        let body = serde_json::to_vec(body).unwrap_or_default();
        Ok(Some((
            key,
            self.planner.accept(body).map_err(|e| e.to_string()),
        )))
    }

    /// A collected job's requests have their outcome: the windows waiting on them look again
    /// (a request failed may go into another job, an answer may call for another request).
    fn answered(&mut self, keys: &[Key]) -> Result<()> {
        let keys: HashSet<Key> = keys.iter().copied().collect();
        for key in &keys {
            self.in_jobs.remove(key);
        }
        let touched: Vec<u64> = self
            .windows
            .iter_mut()
            .filter_map(|(id, w)| {
                let before = w.keys.len();
                w.keys.retain(|k| !keys.contains(k));
                (w.keys.len() < before && w.keys.is_empty()).then_some(*id)
            })
            .collect();
        for window in touched {
            self.plan(window)?;
        }
        Ok(())
    }
}

/// `{"code", "message"}` in one line.
fn error_text(error: &serde_json::Value) -> String {
    let code = error["code"].as_str().unwrap_or("error");
    match error["message"].as_str() {
        Some(message) => format!("{code}: {message}"),
        None => format!("{code}: {error}"),
    }
}
