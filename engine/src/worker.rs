//! What a worker does with one job: run the step on its input window, outside the scheduler.

use crate::budget::Budget;
use crate::error::{ErrorKind, classified};
use crate::fault::Fault;
use crate::lifecycle::{StepSlot, panic_message};
use crate::mapping;
use crate::shard::{ShardSpec, ShardView};
use crate::spec::{OnError, StepSpec};
use crate::step::{GlobalStream, StepError, StepKind, StepResult};
use crate::task::{Stopped, TaskContext};
use distill_storage::{GroupCommitter, Progress, Row, RunLog};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What a worker needs to know about a step.
pub struct StepInfo {
    /// The step as written.
    pub spec: StepSpec,
    /// The built step.
    pub slot: Arc<StepSlot>,
    /// The step's own output names (before output mappings).
    pub outputs: Vec<String>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Gives tasks the request cache.
    pub task_context: Arc<dyn TaskContext>,
    /// The shard this run is, for generators (`None`: every row).
    pub shard: Option<ShardSpec>,
    /// A generator's rows this shard reads, found on its first job (the step is loaded then).
    pub view: std::sync::OnceLock<ShardView>,
}

impl StepInfo {
    /// The generator's rows this run reads (see [`crate::shard`]).
    fn view(&self, generator: &mut dyn crate::step::Generator) -> StepResult<ShardView> {
        if let Some(view) = self.view.get() {
            return Ok(*view);
        }
        let view = match self.shard {
            None => ShardView::All,
            Some(spec) => match generator.row_count()? {
                Some(total) => {
                    let (start, end) = spec.range(total);
                    ShardView::Range { start, end }
                }
                None => ShardView::Blocks {
                    spec,
                    block: self.batch_size.max(1) as u64,
                },
            },
        };
        tracing::debug!(step = %self.spec.name, ?view, "rows of this shard");
        Ok(*self.view.get_or_init(|| view))
    }
}

/// Rows to push through a stream again: the log, and per predecessor how many of its rows.
pub type Replay = (Arc<RunLog>, Vec<(String, u64)>);

/// The input of one job.
pub enum Input {
    /// A generator's next rows from this offset.
    Generate {
        /// Rows generated so far.
        offset: u64,
    },
    /// A window of rows per predecessor.
    Window(Vec<Vec<Row>>),
    /// The next window of a streaming global step: its rows (predecessors one after the
    /// other), and on the first window of a resumed session the rows to push again first.
    Stream {
        /// The step's stream, used by one job at a time.
        stream: Arc<std::sync::Mutex<Box<dyn GlobalStream>>>,
        /// The window's rows per predecessor.
        parts: Vec<Vec<Row>>,
        /// Rows the committed windows consumed, per predecessor, to push again (their output
        /// is dropped) before the window.
        replay: Option<Replay>,
    },
    /// All rows of all predecessors (global steps), read from the log by the worker.
    All {
        /// The log to read from.
        log: Arc<RunLog>,
        /// Predecessor names, in order.
        preds: Vec<String>,
    },
}

/// What a job produced: output batches (one, or several for a global step) and whether the
/// step has no more output.
pub struct Output {
    /// Rows of each output batch.
    pub batches: Vec<Vec<Row>>,
    /// Whether this ends the step's output.
    pub last: bool,
    /// The batches in their stored form, when the job encoded them (on its worker thread, so
    /// the committer only writes); empty otherwise.
    pub encoded: Vec<Vec<u8>>,
    /// Bytes of the batches encoded, before compression (0 when not encoded).
    pub encoded_len: u64,
    /// Time the job took on its worker, processing and encoding (zero when not measured).
    pub busy: std::time::Duration,
}

impl Output {
    /// Output batches not yet encoded for the log, nor measured.
    pub fn unencoded(batches: Vec<Vec<Row>>, last: bool) -> Self {
        Self {
            batches,
            last,
            encoded: Vec::new(),
            encoded_len: 0,
            busy: std::time::Duration::ZERO,
        }
    }
}

/// Why a job produced no output.
#[derive(Debug)]
pub enum JobError {
    /// The step failed (an error or a panic); the scheduler names the step and the batch.
    Failed(StepError),
    /// The step gave the batch up because the run is stopping: neither committed nor failed.
    Stopped,
}

impl From<StepError> for JobError {
    fn from(error: StepError) -> Self {
        if error.is::<Stopped>() {
            JobError::Stopped
        } else {
            JobError::Failed(error)
        }
    }
}

impl From<distill_storage::Error> for JobError {
    fn from(error: distill_storage::Error) -> Self {
        JobError::Failed(Box::new(error))
    }
}

/// A job given to a step of the wrong kind: the scheduler's mistake, not the step's.
fn bug(detail: String) -> StepError {
    classified(ErrorKind::Bug, detail)
}

/// Runs one job, catching a panic of the step.
pub fn run_job(info: &StepInfo, input: Input, last: bool) -> Result<Output, JobError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| execute(info, input, last)));
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(JobError::Failed(
            format!("panicked: {}", panic_message(&panic)).into(),
        )),
    }
}

fn execute(info: &StepInfo, input: Input, last: bool) -> Result<Output, JobError> {
    match input {
        Input::Generate { offset } => {
            let mut step = info.slot.write();
            let StepKind::Generator(generator) = &mut *step else {
                return Err(JobError::Failed(bug(format!(
                    "a {} cannot generate rows",
                    step.kind()
                ))));
            };
            let view = info.view(generator.as_mut())?;
            let (at, count) = view.locate(offset, info.batch_size);
            let generated = if count == 0 {
                Ok((Vec::new(), true))
            } else {
                generator.generate_in(at, count, &info.task_context)
            };
            info.task_context.flush();
            let (mut rows, last) = generated?;
            let last = view.ends(offset + rows.len() as u64, last);
            mapping::after(&info.spec, &mut rows);
            Ok(Output::unencoded(vec![rows], last))
        }
        Input::Window(parts) => {
            let keep = (info.spec.on_error == OnError::Mark).then(|| parts.concat());
            match process_window(info, parts) {
                Ok(rows) => Ok(Output::unencoded(vec![rows], last)),
                Err(e) if e.is::<Stopped>() => Err(JobError::Stopped),
                Err(e) => match keep {
                    Some(rows) => Ok(Output::unencoded(
                        vec![mapping::mark_failed(
                            &info.spec,
                            &info.outputs,
                            rows,
                            &e.to_string(),
                        )],
                        last,
                    )),
                    None => Err(JobError::Failed(e)),
                },
            }
        }
        Input::Stream {
            stream,
            parts,
            replay,
        } => {
            let mut stream = stream.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((log, preds)) = replay {
                let snapshot = log.snapshot()?;
                for (pred, count) in preds {
                    let mut left = count as usize;
                    for batch in snapshot.batches(&pred, 0)? {
                        if left == 0 {
                            break;
                        }
                        let mut rows = batch?.rows;
                        rows.truncate(left);
                        left -= rows.len();
                        mapping::before(&info.spec, &mut rows);
                        stream.push(rows)?;
                    }
                }
            }
            let mut rows = join(parts);
            mapping::before(&info.spec, &mut rows);
            let mut out = stream.push(rows)?;
            mapping::after(&info.spec, &mut out);
            Ok(Output::unencoded(vec![out], last))
        }
        Input::All { log, preds } => {
            let snapshot = log.snapshot()?;
            let mut parts = Vec::with_capacity(preds.len());
            for pred in &preds {
                let mut rows = Vec::new();
                for batch in snapshot.batches(pred, 0)? {
                    rows.extend(batch?.rows);
                }
                mapping::before(&info.spec, &mut rows);
                parts.push(rows);
            }
            drop(snapshot);
            let step = info.slot.read();
            let StepKind::Global(global) = &*step else {
                return Err(JobError::Failed(bug(format!(
                    "a {} cannot process all rows at once",
                    step.kind()
                ))));
            };
            let mut out = match parts.len() {
                1 => global.process_all(join(parts))?,
                _ => global.process_all_parts(parts)?,
            };
            mapping::after(&info.spec, &mut out);
            let mut batches: Vec<Vec<Row>> = Vec::new();
            let mut rest = out.into_iter().peekable();
            while rest.peek().is_some() {
                batches.push(rest.by_ref().take(info.batch_size).collect());
            }
            if batches.is_empty() {
                batches.push(Vec::new());
            }
            Ok(Output::unencoded(batches, true))
        }
    }
}

/// The parts' rows in one vector, moved (`concat` would copy every row): the one part itself
/// when there is one.
fn join(mut parts: Vec<Vec<Row>>) -> Vec<Row> {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    parts.into_iter().flatten().collect()
}

fn process_window(info: &StepInfo, mut parts: Vec<Vec<Row>>) -> StepResult<Vec<Row>> {
    for part in &mut parts {
        mapping::before(&info.spec, part);
    }
    let step = info.slot.read();
    let mut rows = match &*step {
        StepKind::Step(s) if parts.len() == 1 => s.process(join(parts))?,
        StepKind::Step(s) => s.process_parts(parts)?,
        StepKind::Task(t) => {
            let result = t.process(join(parts), &info.task_context);
            info.task_context.flush();
            result?
        }
        other => return Err(bug(format!("a {} cannot process a window", other.kind()))),
    };
    mapping::after(&info.spec, &mut rows);
    Ok(rows)
}

/// Gives tasks the run's request cache and counters. Counters are accounting, not progress:
/// they are gathered in memory and ride along with the next cache commit, or with the flush
/// after each batch.
pub struct LogTaskContext {
    log: Arc<RunLog>,
    committer: Arc<GroupCommitter>,
    step: String,
    pending: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    stop: Arc<AtomicBool>,
    budget: Option<Arc<Budget>>,
}

impl LogTaskContext {
    /// A context for the task `step` of a run stopped by `stop`.
    pub fn new(
        log: Arc<RunLog>,
        committer: Arc<GroupCommitter>,
        step: &str,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            log,
            committer,
            step: step.to_owned(),
            pending: Default::default(),
            stop,
            budget: None,
        }
    }

    /// The same context with the run's spending budget.
    pub fn with_budget(mut self, budget: Option<Arc<Budget>>) -> Self {
        self.budget = budget;
        self
    }

    fn with_counts(&self, mut unit: Progress) -> Progress {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, delta) in pending {
            unit = unit.count(&self.step, name, delta);
        }
        unit
    }
}

impl TaskContext for LogTaskContext {
    fn cached(&self, key: &[u8; 32]) -> distill_storage::Result<Option<Vec<u8>>> {
        if Fault::CacheRead.armed() {
            return Err(distill_storage::Error::Io {
                path: self.log.path().to_path_buf(),
                source: std::io::Error::other("injected failure reading the request cache"),
            });
        }
        self.log.snapshot()?.cached(key)
    }

    fn cached_all(&self, keys: &[[u8; 32]]) -> distill_storage::Result<Vec<Option<Vec<u8>>>> {
        if Fault::CacheRead.armed() {
            return Err(distill_storage::Error::Io {
                path: self.log.path().to_path_buf(),
                source: std::io::Error::other("injected failure reading the request cache"),
            });
        }
        let snapshot = self.log.snapshot()?;
        keys.iter().map(|key| snapshot.cached(key)).collect()
    }

    fn store(&self, key: [u8; 32], response: Vec<u8>) -> distill_storage::Result<()> {
        self.committer
            .commit(self.with_counts(Progress::new().cache(key, response)))?;
        Ok(())
    }

    fn store_all(&self, entries: Vec<([u8; 32], Vec<u8>)>) -> distill_storage::Result<()> {
        let unit = entries
            .into_iter()
            .fold(Progress::new(), |unit, (key, response)| {
                unit.cache(key, response)
            });
        self.committer.commit(self.with_counts(unit))?;
        Ok(())
    }

    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        Some(self.stop.clone())
    }

    fn budget(&self) -> Option<Arc<Budget>> {
        self.budget.clone()
    }

    fn records(&self, prefix: &str) -> distill_storage::Result<Vec<(String, Vec<u8>)>> {
        self.log.snapshot()?.records(prefix)
    }

    fn commit(&self, unit: Progress) -> distill_storage::Result<()> {
        self.committer.commit(self.with_counts(unit))?;
        Ok(())
    }

    fn count(&self, name: &str, delta: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending.entry(name.to_owned()).or_default() += delta;
    }

    fn flush(&self) {
        let unit = self.with_counts(Progress::new());
        if !unit.is_empty()
            && let Ok(ticket) = self.committer.submit(unit)
        {
            drop(ticket);
        }
    }
}
