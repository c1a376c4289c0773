//! The stage loop: forms input windows, dispatches jobs to workers, puts results back in batch
//! order, and hands them to the committer.
//!
//! Rows flow between steps as a stream: a step's input window `j` is rows `[j*N, (j+1)*N)` of
//! each predecessor's output, whatever the predecessor's own batch boundaries. So every batch
//! is a deterministic function of its predecessors' batches, and a resumed run forms exactly
//! the windows an uninterrupted run would.
//!
//! When a batch becomes visible downstream depends on the consumer. A plain step (`Step`)
//! sees it once it is submitted to the committer: the committer writes units in submission
//! order and a failed group stops every later one, so the consumer's output is never durable
//! without the input it came from, and a chain of steps shares group commits instead of
//! waiting for one durable commit per step. A task (paid LLM calls) and a streaming global
//! step see a batch only once it is durable: a crash never makes a task ask again about rows
//! that were not yet saved.

use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::mapping;
use crate::observer::{Observer, RunEvent};
use crate::pipeline::Pipeline;
use crate::spec::OnError;
use crate::step::{GlobalStream, NodeKind, StepKind, StepResult};
use crate::task::{Prefetch, Ready};
use crate::worker::{Input, JobError, Output, StepInfo, run_job};
use crossbeam_channel::{Receiver, Sender, unbounded};
use distill_storage::{
    Batch, BatchLife, EncodedBatch, EncodedRows, GroupCommitter, Progress, Row, RunLog, RunState,
    RunStatus, Snapshot, StepState, Ticket,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Batches of one step that may be between dispatch and durable commit at once (processing,
/// waiting for their turn, or committing), at least: see [`StepRun::max_in_flight`]. This bounds
/// memory: the pipeline never runs ahead of the disk by more than this many batches per step.
/// Windows of a batch-mode task waiting on their prefetcher are not in flight: they are
/// bounded by its `max_waiting_rows`.
const MIN_IN_FLIGHT: usize = 8;
/// Most batches of one step in flight, however small they are.
const MOST_IN_FLIGHT: usize = 64;
/// Bytes (encoded) of one step's batches that may be in flight when its batches are small:
/// small batches get more of them in flight (up to [`MOST_IN_FLIGHT`]), so each group commit
/// carries many and the run is not bound by one durable transaction per few rows.
const IN_FLIGHT_BYTES: u64 = 512 << 10;
/// Jobs that take longer than this on average keep [`MIN_IN_FLIGHT`] (a durable commit takes
/// about a millisecond).
const QUICK_JOB: Duration = Duration::from_millis(1);

/// Name of the cursor of `step` on its predecessor `pred`.
pub(crate) fn cursor_name(step: &str, pred: &str) -> String {
    format!("{step}<-{pred}")
}

/// A step of the stage whose batches are deleted from the log once every consumer has
/// committed past them (see [`Pipeline::reclaims`]).
struct Reclaimer {
    node: usize,
    /// Batches deleted (or in submitted units) from the step's start, and the rows they held.
    batches: u64,
    rows: u64,
    /// The end row of each later batch submitted to the committer, in order.
    ends: VecDeque<u64>,
    /// Each consumer's cursor name and its position in the last unit submitted.
    cursors: Vec<(String, u64)>,
}

/// Committed progress of one step, as found in the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Committed {
    /// Output batches committed.
    pub batches: u64,
    /// Output rows committed.
    pub rows: u64,
    /// Whether the last batch is committed.
    pub done: bool,
}

/// One predecessor's rows as a consumer sees them.
struct Edge {
    pred: usize,
    /// Rows taken into dispatched windows (the cursor).
    taken: u64,
    /// Rows from `taken` on that are in memory.
    buffer: VecDeque<Row>,
    /// Predecessor batches already in `buffer` or skipped; later ones are read from the log.
    loaded_batches: u64,
    /// Rows of the predecessor's first `loaded_batches` batches.
    loaded_rows: u64,
    /// Rows still to skip when reading from the log (the cursor found on resume).
    skip: u64,
    /// The consumer sees the predecessor's batches once submitted, not once durable.
    early: bool,
}

/// What a consumer's edge sees of its predecessor's output.
#[derive(Debug, Clone, Copy)]
struct Visible {
    /// Rows the edge can take (from its cursor on: `rows - taken`).
    rows: u64,
    /// Whether `rows` is every row the predecessor gives.
    done: bool,
    /// Predecessor batches that may be read from the log (the durable ones).
    durable_batches: u64,
}

/// A processed job waiting for its turn to commit: its output and the cursors it advances.
type Finished = (std::result::Result<Output, JobError>, Vec<(String, u64)>);

/// A window handed to a step's prefetcher, until it is dispatched to a worker.
struct Waiting {
    /// The window's rows per predecessor.
    parts: Vec<Vec<Row>>,
    last: bool,
    cursors: Vec<(String, u64)>,
    rows: u64,
    /// What the prefetcher said, once it did.
    ready: Option<StepResult<()>>,
}

/// One window formed from a step's inputs: rows per predecessor, whether it is the last, and
/// the cursors it advances.
type Window = (Vec<Vec<Row>>, bool, Vec<(String, u64)>);

struct StepRun {
    node: usize,
    committed: Committed,
    /// Progress handed to the committer (durable or not yet): what early consumers see.
    submitted: Committed,
    /// Batches committed before this session: job `k` of the session is batch
    /// `first_batch + k` of the step, the same number in every session.
    first_batch: u64,
    /// Jobs dispatched so far in this session; also the order of their results.
    next_job: u64,
    next_submit: u64,
    in_flight: usize,
    /// Output batches of this session encoded by their jobs, and their encoded bytes: the
    /// measure of a batch's size behind [`StepRun::max_in_flight`].
    sized_batches: u64,
    sized_bytes: u64,
    /// Jobs of this session measured, and the time they took on their workers.
    sized_jobs: u32,
    busy: Duration,
    last_dispatched: bool,
    /// Rows handed to generator jobs so far.
    generated: u64,
    /// Batches handed to the committer and not yet acknowledged.
    pending_batches: u64,
    /// A job of this step failed or gave up (the run is stopping): nothing after it may be
    /// committed.
    halted: bool,
    reorder: BTreeMap<u64, Finished>,
    edges: Vec<Edge>,
    /// Whether a consumer in this stage takes this step's rows from memory once submitted
    /// (`feeds_early`), or once durable (`feeds_late`).
    feeds_early: bool,
    feeds_late: bool,
    /// The task's prefetcher (batch mode): its windows wait in `waiting` until it reports
    /// them ready, and go to workers in job order.
    prefetch: Option<Box<dyn Prefetch>>,
    waiting: BTreeMap<u64, Waiting>,
    /// Rows of the windows in `waiting`.
    waiting_rows: u64,
    /// A streaming global step's state (one job at a time uses it).
    stream: Option<Arc<std::sync::Mutex<Box<dyn GlobalStream>>>>,
    /// Rows per predecessor its committed windows consumed, pushed again by the session's
    /// first window to rebuild the stream's state (resume).
    replay: Vec<(String, u64)>,
}

impl StepRun {
    /// Batches that may be in flight at once: [`MIN_IN_FLIGHT`], or more while its jobs are
    /// quick and its batches are small (as many as fit in [`IN_FLIGHT_BYTES`], at most [`MOST_IN_FLIGHT`]).
    fn max_in_flight(&self) -> usize {
        // Only quick jobs are worth more in flight: slow ones (an LLM call, a Python step that
        // waits) already share commits, and more of them queued ahead of their consumers
        // would only delay the rows downstream.
        if self.sized_jobs == 0 || self.busy / self.sized_jobs > QUICK_JOB {
            return MIN_IN_FLIGHT;
        }
        let per_batch = (self.sized_bytes / self.sized_batches).max(1);
        (IN_FLIGHT_BYTES / per_batch).clamp(MIN_IN_FLIGHT as u64, MOST_IN_FLIGHT as u64) as usize
    }

    /// Batches dispatched and not yet durable.
    fn unfinished(&self) -> usize {
        self.in_flight + self.reorder.len() + self.pending_batches as usize
    }
}

enum Event {
    Processed {
        step: usize,
        job: u64,
        result: std::result::Result<Output, JobError>,
        cursors: Vec<(String, u64)>,
    },
    Committed {
        step: usize,
        batches: Vec<Vec<Row>>,
        rows_per_batch: Vec<u64>,
        last: bool,
    },
    CommitFailed(distill_storage::Error),
    /// A prefetcher says a window is ready (or cannot be).
    Prefetched {
        step: usize,
        window: u64,
        result: StepResult<()>,
    },
}

/// What one unit handed to the committer holds, for the early consumers.
struct Handed {
    /// The rows, when an early consumer in the stage needs them in memory (else empty).
    batches: Vec<Vec<Row>>,
    rows_per_batch: Vec<u64>,
    last: bool,
}

struct Pending {
    ticket: Ticket,
    step: usize,
    /// The rows, when a late consumer in the stage needs them in memory (else empty vectors).
    batches: Vec<Vec<Row>>,
    rows_per_batch: Vec<u64>,
    last: bool,
}

/// Runs the steps of one stage until all are done, or until failure or stop.
pub struct StageRunner<'a> {
    pipeline: &'a Pipeline,
    infos: &'a [Arc<StepInfo>],
    log: &'a Arc<RunLog>,
    committer: &'a Arc<GroupCommitter>,
    pool: &'a rayon::ThreadPool,
    observer: Option<&'a Arc<dyn Observer>>,
    stop: &'a AtomicBool,
    /// Committed progress of every step of the pipeline.
    progress: &'a mut [Committed],
    /// The stage's steps whose batches are reclaimed.
    reclaimers: Vec<Reclaimer>,
}

impl<'a> StageRunner<'a> {
    /// Prepares a stage runner.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: &'a Pipeline,
        infos: &'a [Arc<StepInfo>],
        log: &'a Arc<RunLog>,
        committer: &'a Arc<GroupCommitter>,
        pool: &'a rayon::ThreadPool,
        observer: Option<&'a Arc<dyn Observer>>,
        stop: &'a AtomicBool,
        progress: &'a mut [Committed],
    ) -> Self {
        Self {
            pipeline,
            infos,
            log,
            committer,
            pool,
            observer,
            stop,
            progress,
            reclaimers: Vec::new(),
        }
    }

    /// Runs the steps `steps` of one stage (those not done) to their end.
    pub fn run(&mut self, steps: &[usize]) -> Result<()> {
        let nodes = self.pipeline.nodes();
        let members: Vec<usize> = steps
            .iter()
            .copied()
            .filter(|&i| !self.progress[i].done)
            .collect();
        let snapshot = self.log.snapshot()?;
        let mut runs: Vec<StepRun> = Vec::new();
        for &i in &members {
            let node = &nodes[i];
            let mut edges = Vec::new();
            for &p in &node.preds {
                let taken = snapshot
                    .cursor(&cursor_name(node.name(), nodes[p].name()))?
                    .unwrap_or(0);
                // The predecessor's batches before its reclaimed ones are gone: reading starts
                // after them.
                let (gone_batches, gone_rows) = snapshot.reclaimed(nodes[p].name())?;
                if gone_rows > taken {
                    return Err(Error::Internal {
                        detail: format!(
                            "'{}' needs rows of '{}' from {taken} on, but its first {gone_rows} \
                             were deleted",
                            node.name(),
                            nodes[p].name()
                        ),
                    });
                }
                edges.push(Edge {
                    pred: p,
                    taken,
                    buffer: VecDeque::new(),
                    loaded_batches: gone_batches,
                    loaded_rows: gone_rows,
                    skip: taken - gone_rows,
                    early: sees_early(node.kind),
                });
            }
            let in_stage = |early: bool| {
                node.succs.iter().any(|&c| {
                    members.contains(&c)
                        && !nodes[c].is_global()
                        && sees_early(nodes[c].kind) == early
                })
            };
            let (feeds_early, feeds_late) = (in_stage(true), in_stage(false));
            let stream = match &*self.infos[i].slot.read() {
                StepKind::Global(g) => g.stream().map(|s| Arc::new(std::sync::Mutex::new(s))),
                _ => None,
            };
            let replay = if stream.is_some() && edges.iter().any(|e| e.taken > 0) {
                edges
                    .iter()
                    .map(|e| (nodes[e.pred].name().to_owned(), e.taken))
                    .collect()
            } else {
                Vec::new()
            };
            runs.push(StepRun {
                node: i,
                committed: self.progress[i],
                submitted: self.progress[i],
                first_batch: self.progress[i].batches,
                next_job: 0,
                next_submit: 0,
                in_flight: 0,
                sized_batches: 0,
                sized_bytes: 0,
                sized_jobs: 0,
                busy: Duration::ZERO,
                last_dispatched: false,
                generated: self.progress[i].rows,
                pending_batches: 0,
                halted: false,
                reorder: BTreeMap::new(),
                edges,
                feeds_early,
                feeds_late,
                prefetch: None,
                waiting: BTreeMap::new(),
                waiting_rows: 0,
                stream,
                replay,
            });
        }
        self.reclaimers = self.reclaimers_of(steps, &snapshot)?;
        drop(snapshot);
        let (events_tx, events) = unbounded::<Event>();
        let mut outcome = self.start_prefetch(&mut runs, &events_tx);
        if outcome.is_ok() {
            let (acks_tx, acks) = unbounded::<Pending>();
            let acker = {
                let events_tx = events_tx.clone();
                std::thread::spawn(move || acknowledge(&acks, &events_tx))
            };
            outcome = self.drive(&mut runs, &events_tx, &events, &acks_tx);
            drop(acks_tx);
            let _ = acker.join();
        }
        for run in &runs {
            if let Some(prefetch) = &run.prefetch {
                prefetch.close();
            }
            self.progress[run.node] = run.committed;
        }
        if outcome.is_ok() {
            let snapshot = self.log.snapshot()?;
            let ran: Vec<usize> = runs.iter().map(|r| r.node).collect();
            outcome = check_reads(self.pipeline, &snapshot, self.progress, &ran);
        }
        if let Err(error) = &outcome
            && let Error::Regenerated { step, .. } = error
        {
            self.fail(step, error)?;
        }
        outcome
    }

    /// The steps of the stage of `steps` whose batches are reclaimed, and where each stands. Files of
    /// a format before 3 never reclaim.
    fn reclaimers_of(&self, steps: &[usize], snapshot: &Snapshot) -> Result<Vec<Reclaimer>> {
        let mut out = Vec::new();
        if snapshot.format_version()? < 3 {
            return Ok(out);
        }
        let nodes = self.pipeline.nodes();
        let Some(&first) = steps.first() else {
            return Ok(out);
        };
        // The stage's steps this session runs, and those of its other steps that a session
        // before finished (a generator done before a kill: its consumers may still be behind).
        let candidates = self.pipeline.stages()[nodes[first].stage]
            .iter()
            .copied()
            .filter(|&p| steps.contains(&p) || (self.progress[p].done && !nodes[p].is_global()));
        for p in candidates {
            if !self.pipeline.reclaims(p) {
                continue;
            }
            let name = nodes[p].name();
            let cursors = nodes[p]
                .succs
                .iter()
                .map(|&c| {
                    let cursor = cursor_name(nodes[c].name(), name);
                    let at = snapshot.cursor(&cursor)?.unwrap_or(0);
                    Ok((cursor, at))
                })
                .collect::<Result<Vec<_>>>()?;
            if nodes[p].succs.iter().all(|&c| self.progress[c].done) {
                continue;
            }
            let (batches, rows) = snapshot.reclaimed(name)?;
            let mut ends = VecDeque::new();
            let mut end = rows;
            for batch in snapshot
                .batches(name, batches)?
                .take((self.progress[p].batches - batches) as usize)
            {
                end += batch?.rows.len() as u64;
                ends.push_back(end);
            }
            out.push(Reclaimer {
                node: p,
                batches,
                rows,
                ends,
                cursors,
            });
        }
        Ok(out)
    }

    /// Adds to `unit` the deletion of the batches every consumer is past once `cursors` (the
    /// unit's) are committed.
    fn reclaim(&mut self, mut unit: Progress, cursors: &[(String, u64)]) -> Progress {
        let pipeline = self.pipeline;
        let nodes = pipeline.nodes();
        for rc in &mut self.reclaimers {
            let mut moved = false;
            for (cursor, position) in cursors {
                if let Some(slot) = rc.cursors.iter_mut().find(|(c, _)| c == cursor) {
                    slot.1 = *position;
                    moved = true;
                }
            }
            if !moved {
                continue;
            }
            let floor = rc.cursors.iter().map(|c| c.1).min().unwrap_or(0);
            let before = rc.batches;
            while let Some(&end) = rc.ends.front()
                && end <= floor
            {
                rc.ends.pop_front();
                rc.batches += 1;
                rc.rows = end;
            }
            if rc.batches > before {
                unit = unit.reclaim(
                    nodes[rc.node].name(),
                    rc.batches,
                    rc.rows,
                    rc.cursors.iter().map(|c| c.0.clone()).collect(),
                );
            }
        }
        unit
    }

    /// Asks each task of the stage for its prefetcher (batch mode), telling it to send its
    /// reports as events.
    fn start_prefetch(&self, runs: &mut [StepRun], events: &Sender<Event>) -> Result<()> {
        for run in runs.iter_mut() {
            let info = &self.infos[run.node];
            let step = info.slot.read();
            let StepKind::Task(task) = &*step else {
                continue;
            };
            let ready: Ready = {
                let (events, step) = (events.clone(), run.node);
                Arc::new(move |window, result| {
                    let _ = events.send(Event::Prefetched {
                        step,
                        window,
                        result,
                    });
                })
            };
            let name = self.pipeline.nodes()[run.node].name();
            match task.prefetch(name, &info.task_context, ready) {
                Ok(prefetch) => run.prefetch = prefetch,
                Err(source) => {
                    let error = Error::LoadFailed {
                        step: name.to_owned(),
                        source,
                    };
                    self.fail(name, &error)?;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn drive(
        &mut self,
        runs: &mut [StepRun],
        events_tx: &Sender<Event>,
        events: &Receiver<Event>,
        acks: &Sender<Pending>,
    ) -> Result<()> {
        let mut failure: Option<Error> = None;
        let mut outstanding = 0usize; // jobs dispatched + commits pending
        let mut flushed = false; // prefetchers told that nothing else moves
        loop {
            let stopping = failure.is_some() || self.stop.load(Ordering::SeqCst);
            if !stopping {
                for r in 0..runs.len() {
                    outstanding += self.dispatch(runs, r, events_tx)?;
                }
            }
            if runs.iter().all(|r| r.committed.done) {
                return Ok(());
            }
            if outstanding > 0 {
                flushed = false;
            } else if runs.iter().any(|r| !r.waiting.is_empty()) && !stopping {
                // Only prefetched windows wait: what the prefetchers hold goes out now, and
                // the run may end here if they say so.
                let waiting = runs.iter().filter(|r| !r.waiting.is_empty());
                if !flushed {
                    waiting
                        .clone()
                        .flat_map(|r| &r.prefetch)
                        .for_each(|p| p.flush());
                    flushed = true;
                }
                let exit = waiting.clone().all(|r| {
                    r.prefetch
                        .as_ref()
                        .is_some_and(|p| p.exit_when_parked() && p.parked())
                });
                if exit && events.is_empty() {
                    let detail = waiting
                        .filter_map(|r| {
                            let p = r.prefetch.as_ref()?;
                            Some(format!(
                                "{}: {}",
                                self.pipeline.nodes()[r.node].name(),
                                p.describe()
                            ))
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(Error::Waiting { detail });
                }
            } else {
                if let Some(e) = failure {
                    return Err(e);
                }
                if stopping {
                    return Err(Error::Interrupted);
                }
                let waiting: Vec<&str> = runs
                    .iter()
                    .filter(|r| !r.committed.done)
                    .map(|r| self.pipeline.nodes()[r.node].name())
                    .collect();
                return Err(Error::Internal {
                    detail: format!(
                        "the stage stalled with no work in flight; waiting: {}",
                        waiting.join(", ")
                    ),
                });
            }
            let event = match events.recv_timeout(Duration::from_millis(100)) {
                Ok(event) => event,
                Err(_) => continue,
            };
            match event {
                Event::Processed {
                    step,
                    job,
                    result,
                    cursors,
                } => {
                    outstanding -= 1;
                    let r = runs.iter().position(|r| r.node == step).unwrap_or(0);
                    runs[r].in_flight -= 1;
                    if let Ok(out) = &result
                        && out.encoded_len > 0
                    {
                        runs[r].sized_batches += out.batches.len() as u64;
                        runs[r].sized_bytes += out.encoded_len;
                        runs[r].sized_jobs += 1;
                        runs[r].busy += out.busy;
                    }
                    if let Ok(out) = &result
                        && self.pipeline.nodes()[step].is_generator()
                    {
                        runs[r].generated +=
                            out.batches.iter().map(|b| b.len() as u64).sum::<u64>();
                        runs[r].last_dispatched |= out.last;
                    }
                    runs[r].reorder.insert(job, (result, cursors));
                    let mut submitted = Vec::new();
                    let outcome = self.submit_ready(&mut runs[r], acks, &mut submitted);
                    outstanding += submitted.len();
                    for handed in submitted {
                        self.on_submitted(runs, step, handed);
                    }
                    if let Err(e) = outcome
                        && failure.is_none()
                    {
                        failure = Some(e);
                    }
                }
                Event::Committed {
                    step,
                    batches,
                    rows_per_batch,
                    last,
                } => {
                    outstanding -= 1;
                    self.on_committed(runs, step, batches, &rows_per_batch, last);
                }
                Event::CommitFailed(e) => return Err(e.into()),
                Event::Prefetched {
                    step,
                    window,
                    result,
                } => {
                    if let Some(w) = runs
                        .iter_mut()
                        .find(|r| r.node == step)
                        .and_then(|r| r.waiting.get_mut(&window))
                    {
                        w.ready = Some(result);
                    }
                }
            }
        }
    }

    /// Dispatches every job step `r` can take now; returns how many.
    fn dispatch(
        &mut self,
        runs: &mut [StepRun],
        r: usize,
        events: &Sender<Event>,
    ) -> Result<usize> {
        let nodes = self.pipeline.nodes();
        let node = &nodes[runs[r].node];
        let mut count = 0;
        if node.is_generator() {
            // One generate job at a time (it reads on), up to the in-flight limit uncommitted.
            if runs[r].in_flight == 0
                && runs[r].unfinished() < runs[r].max_in_flight()
                && !runs[r].last_dispatched
                && !self.backlogged(runs, r)
            {
                let input = Input::Generate {
                    offset: runs[r].generated,
                };
                self.spawn(&mut runs[r], input, false, Vec::new(), events);
                count += 1;
            }
            return Ok(count);
        }
        if node.is_global() && runs[r].stream.is_some() {
            return self.dispatch_stream(runs, r, events);
        }
        if node.is_global() {
            if runs[r].next_job == 0 {
                let input = Input::All {
                    log: self.log.clone(),
                    preds: node
                        .preds
                        .iter()
                        .map(|&p| nodes[p].name().to_owned())
                        .collect(),
                };
                let cursors = node
                    .preds
                    .iter()
                    .map(|&p| {
                        (
                            cursor_name(node.name(), nodes[p].name()),
                            self.progress[p].rows,
                        )
                    })
                    .collect();
                self.spawn(&mut runs[r], input, true, cursors, events);
                count += 1;
            }
            return Ok(count);
        }
        if runs[r].prefetch.is_some() {
            return self.dispatch_prefetched(runs, r, events);
        }
        while runs[r].unfinished() < runs[r].max_in_flight() && !runs[r].last_dispatched {
            let Some((parts, last, cursors)) = self.form_window(runs, r)? else {
                break;
            };
            self.spawn(&mut runs[r], Input::Window(parts), last, cursors, events);
            count += 1;
        }
        Ok(count)
    }

    /// The next input window of step `r`, when its inputs have it and its consumers are not
    /// backlogged; the rows are taken and the step's cursors advanced in memory.
    fn form_window(&mut self, runs: &mut [StepRun], r: usize) -> Result<Option<Window>> {
        let nodes = self.pipeline.nodes();
        let node = &nodes[runs[r].node];
        let n = node.batch_size as u64;
        // A predecessor made again (its output was reclaimed and a changed step reads it
        // again) may be behind a consumer that kept its cursor on it: the consumer waits
        // until rows past its cursor are committed again.
        let ready = runs[r].edges.iter().all(|e| {
            let pred = self.visible(runs, e);
            pred.rows.saturating_sub(e.taken) >= n || pred.done
        });
        if !ready || self.backlogged(runs, r) {
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(runs[r].edges.len());
        let mut last = true;
        let mut cursors = Vec::new();
        for e in 0..runs[r].edges.len() {
            let pred = runs[r].edges[e].pred;
            let visible = self.visible(runs, &runs[r].edges[e]);
            let taken = runs[r].edges[e].taken;
            if visible.rows < taken {
                // Done with fewer rows than the consumer read before.
                return Err(self.regenerated(pred, visible.rows, runs[r].node, taken));
            }
            let available = visible.rows - taken;
            let take = available.min(n);
            let rows = self.take_rows(
                &mut runs[r].edges[e],
                take as usize,
                visible.durable_batches,
            )?;
            last &= visible.done && available == take;
            runs[r].edges[e].taken += take;
            parts.push(rows);
            cursors.push((
                cursor_name(node.name(), nodes[pred].name()),
                runs[r].edges[e].taken,
            ));
        }
        runs[r].last_dispatched = last;
        Ok(Some((parts, last, cursors)))
    }

    /// A batch-mode task: ready windows go to workers in job order (within the in-flight
    /// bound), and new windows go to the prefetcher while few enough rows wait on it.
    fn dispatch_prefetched(
        &mut self,
        runs: &mut [StepRun],
        r: usize,
        events: &Sender<Event>,
    ) -> Result<usize> {
        let mut count = 0;
        while runs[r].unfinished() < runs[r].max_in_flight() {
            let run = &mut runs[r];
            let Some(entry) = run.waiting.first_entry() else {
                break;
            };
            if entry.get().ready.is_none() {
                break;
            }
            let (job, window) = entry.remove_entry();
            run.waiting_rows -= window.rows;
            match window.ready {
                Some(Err(source)) => {
                    // Reported as the job's outcome, so that it takes its turn: the rows
                    // marked failed (`on_error: mark`), or the step failed.
                    let info = &self.infos[run.node];
                    let result = if info.spec.on_error == OnError::Mark {
                        Ok(Output::unencoded(
                            vec![mapping::mark_failed(
                                &info.spec,
                                &info.outputs,
                                window.parts.concat(),
                                &source.to_string(),
                            )],
                            window.last,
                        ))
                    } else {
                        Err(JobError::Failed(source))
                    };
                    run.in_flight += 1;
                    let _ = events.send(Event::Processed {
                        step: run.node,
                        job,
                        result,
                        cursors: window.cursors,
                    });
                }
                _ => self.spawn_job(
                    run,
                    job,
                    Input::Window(window.parts),
                    window.last,
                    window.cursors,
                    events,
                ),
            }
            count += 1;
        }
        let node = &self.pipeline.nodes()[runs[r].node];
        let most = runs[r]
            .prefetch
            .as_ref()
            .map_or(0, |p| p.max_waiting_rows())
            .max(node.batch_size as u64);
        while !runs[r].last_dispatched && runs[r].waiting_rows < most {
            let Some((parts, last, cursors)) = self.form_window(runs, r)? else {
                break;
            };
            let run = &mut runs[r];
            let job = run.next_job;
            run.next_job += 1;
            let mut rows: Vec<Row> = parts.iter().flatten().cloned().collect();
            mapping::before(&node.spec, &mut rows);
            let size = rows.len() as u64;
            run.waiting.insert(
                job,
                Waiting {
                    parts,
                    last,
                    cursors,
                    rows: size,
                    ready: None,
                },
            );
            run.waiting_rows += size;
            if let Some(prefetch) = &run.prefetch {
                prefetch.window(job, rows, last);
            }
        }
        Ok(count)
    }

    /// Dispatches the next window of a streaming global step: up to `batch_size` rows of its
    /// predecessors' committed output, one predecessor after the other, once the job before
    /// it is done with the stream.
    fn dispatch_stream(
        &mut self,
        runs: &mut [StepRun],
        r: usize,
        events: &Sender<Event>,
    ) -> Result<usize> {
        let nodes = self.pipeline.nodes();
        let node = &nodes[runs[r].node];
        if runs[r].in_flight > 0
            || runs[r].last_dispatched
            || runs[r].unfinished() >= runs[r].max_in_flight()
            || self.backlogged(runs, r)
        {
            return Ok(0);
        }
        let mut need = node.batch_size as u64;
        let mut parts = Vec::with_capacity(runs[r].edges.len());
        let mut cursors = Vec::new();
        let mut last = true;
        for e in 0..runs[r].edges.len() {
            let pred = runs[r].edges[e].pred;
            let committed = self.committed(runs, pred);
            let take = committed
                .rows
                .saturating_sub(runs[r].edges[e].taken)
                .min(need);
            let rows = self.take_rows(&mut runs[r].edges[e], take as usize, committed.batches)?;
            runs[r].edges[e].taken += take;
            need -= take;
            last &= committed.done && runs[r].edges[e].taken >= committed.rows;
            parts.push(rows);
            cursors.push((
                cursor_name(node.name(), nodes[pred].name()),
                runs[r].edges[e].taken,
            ));
        }
        let replay = std::mem::take(&mut runs[r].replay);
        let input = Input::Stream {
            stream: runs[r].stream.clone().ok_or_else(|| Error::Internal {
                detail: "a streaming step without its stream".into(),
            })?,
            parts,
            replay: (!replay.is_empty()).then(|| (self.log.clone(), replay)),
        };
        runs[r].last_dispatched = last;
        self.spawn(&mut runs[r], input, last, cursors, events);
        Ok(1)
    }

    /// A consumer read `read` rows of `step`, which gave `rows` (see [`Error::Regenerated`]).
    fn regenerated(&self, step: usize, rows: u64, consumer: usize, read: u64) -> Error {
        let nodes = self.pipeline.nodes();
        Error::Regenerated {
            step: nodes[step].name().to_owned(),
            rows,
            consumer: nodes[consumer].name().to_owned(),
            read,
        }
    }

    fn committed(&self, runs: &[StepRun], step: usize) -> Committed {
        runs.iter()
            .find(|r| r.node == step)
            .map_or(self.progress[step], |r| r.committed)
    }

    /// What `edge` sees of its predecessor: the durable rows, or for an early edge also the
    /// submitted rows it holds in memory.
    fn visible(&self, runs: &[StepRun], edge: &Edge) -> Visible {
        let committed = self.committed(runs, edge.pred);
        if !edge.early {
            return Visible {
                rows: committed.rows,
                done: committed.done,
                durable_batches: committed.batches,
            };
        }
        let submitted = runs
            .iter()
            .find(|r| r.node == edge.pred)
            .map_or(committed, |r| r.submitted);
        // The edge holds the submitted rows it was handed (it is caught up), or reads the
        // durable ones from the log.
        let rows = committed.rows.max(edge.loaded_rows);
        Visible {
            rows,
            done: submitted.done && rows == submitted.rows,
            durable_batches: committed.batches,
        }
    }

    /// Whether a consumer of step `r` in this stage already has enough input waiting: as many
    /// windows as it may have in flight.
    fn backlogged(&self, runs: &[StepRun], r: usize) -> bool {
        let nodes = self.pipeline.nodes();
        let me = runs[r].node;
        let produced = runs[r].submitted.rows;
        runs.iter().any(|c| {
            c.edges.iter().any(|e| {
                e.pred == me
                    && produced - e.taken.min(produced)
                        > (c.max_in_flight() * nodes[c.node].batch_size) as u64
            })
        })
    }

    /// Takes `count` rows from an edge, reading predecessor batches from the log as needed.
    fn take_rows(&self, edge: &mut Edge, count: usize, pred_batches: u64) -> Result<Vec<Row>> {
        if edge.buffer.len() < count && edge.loaded_batches < pred_batches {
            let snapshot = self.log.snapshot()?;
            self.fill(edge, count, pred_batches, &snapshot)?;
        }
        Ok(edge.buffer.drain(..count.min(edge.buffer.len())).collect())
    }

    fn fill(
        &self,
        edge: &mut Edge,
        count: usize,
        pred_batches: u64,
        snap: &Snapshot,
    ) -> Result<()> {
        let pred = self.pipeline.nodes()[edge.pred].name();
        // Batches this edge had yet to pass over may have been reclaimed meanwhile (every
        // consumer was past them): their rows were all to be skipped.
        let (gone_batches, gone_rows) = snap.reclaimed(pred)?;
        if gone_batches > edge.loaded_batches {
            let passed = gone_rows - edge.loaded_rows;
            if passed > edge.skip || !edge.buffer.is_empty() {
                return Err(Error::Internal {
                    detail: format!(
                        "rows {}..{gone_rows} of '{pred}' were reclaimed before a consumer read them",
                        edge.loaded_rows
                    ),
                });
            }
            edge.skip -= passed;
            edge.loaded_batches = gone_batches;
            edge.loaded_rows = gone_rows;
        }
        let mut batches = snap.batches(pred, edge.loaded_batches)?;
        while edge.buffer.len() < count && edge.loaded_batches < pred_batches {
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            if batch.seq != edge.loaded_batches {
                return Err(Error::Internal {
                    detail: format!(
                        "batch {} of '{pred}' is missing from the log",
                        edge.loaded_batches
                    ),
                });
            }
            edge.loaded_batches = batch.seq + 1;
            edge.loaded_rows += batch.rows.len() as u64;
            let skip = edge.skip.min(batch.rows.len() as u64);
            edge.skip -= skip;
            edge.buffer
                .extend(batch.rows.into_iter().skip(skip as usize));
        }
        Ok(())
    }

    fn spawn(
        &self,
        run: &mut StepRun,
        input: Input,
        last: bool,
        cursors: Vec<(String, u64)>,
        events: &Sender<Event>,
    ) {
        let job = run.next_job;
        run.next_job += 1;
        self.spawn_job(run, job, input, last, cursors, events);
    }

    /// Runs job `job` of `run` (numbered when its window was formed) on the pool.
    fn spawn_job(
        &self,
        run: &mut StepRun,
        job: u64,
        input: Input,
        last: bool,
        cursors: Vec<(String, u64)>,
        events: &Sender<Event>,
    ) {
        let info = self.infos[run.node].clone();
        let events = events.clone();
        let step = run.node;
        let log = self.log.clone();
        let life = if self.pipeline.reclaims(step) {
            BatchLife::Transient
        } else {
            BatchLife::Kept
        };
        run.in_flight += 1;
        self.pool.spawn_fifo(move || {
            let started = std::time::Instant::now();
            let mut result = run_job(&info, input, last);
            if let Ok(output) = &mut result {
                encode_output(&log, output, life);
                output.busy = started.elapsed();
            }
            let _ = events.send(Event::Processed {
                step,
                job,
                result,
                cursors,
            });
        });
    }

    /// Hands results to the committer in job order; pushes what each unit holds to `submitted`
    /// (one entry per commit started), for [`StageRunner::on_submitted`].
    fn submit_ready(
        &mut self,
        run: &mut StepRun,
        acks: &Sender<Pending>,
        submitted: &mut Vec<Handed>,
    ) -> Result<()> {
        let name = self.pipeline.nodes()[run.node].name().to_owned();
        while !run.halted {
            let Some((result, cursors)) = run.reorder.remove(&run.next_submit) else {
                break;
            };
            let job = run.next_submit;
            run.next_submit += 1;
            let output = match result {
                Ok(output) => output,
                Err(JobError::Stopped) => {
                    // The run is stopping: this batch is done again on resume.
                    run.halted = true;
                    break;
                }
                Err(JobError::Failed(source)) => {
                    run.halted = true;
                    let error = Error::StepFailed {
                        step: name.clone(),
                        batch: run.first_batch + job,
                        source,
                    };
                    self.fail(&name, &error)?;
                    return Err(error);
                }
            };
            let mut unit = Progress::new();
            let first_seq = run.committed.batches + run.pending_batches;
            let count = output.batches.len();
            let mut early = Vec::with_capacity(count);
            let mut late = Vec::with_capacity(count);
            let mut keep = |rows: Vec<Row>| {
                let (e, l) = match (run.feeds_early, run.feeds_late) {
                    (true, true) => (rows.clone(), rows),
                    (true, false) => (rows, Vec::new()),
                    (false, true) => (Vec::new(), rows),
                    (false, false) => (Vec::new(), Vec::new()),
                };
                early.push(e);
                late.push(l);
            };
            let mut rows_per_batch = Vec::with_capacity(count);
            let mut encoded = output.encoded.into_iter();
            for (k, rows) in output.batches.into_iter().enumerate() {
                let seq = first_seq + k as u64;
                let last = output.last && k + 1 == count;
                rows_per_batch.push(rows.len() as u64);
                match encoded.next() {
                    // Already encoded: the rows go to the consumers in the stage, uncopied.
                    Some(payload) => {
                        unit = unit.encoded_batch(EncodedBatch {
                            step: name.clone(),
                            seq,
                            rows: rows.len() as u64,
                            last,
                            payload,
                        });
                        keep(rows);
                    }
                    None => {
                        if run.feeds_early || run.feeds_late {
                            keep(rows.clone());
                        } else {
                            keep(Vec::new());
                        }
                        unit = unit.batch(Batch {
                            step: name.clone(),
                            seq,
                            rows,
                            last,
                        });
                    }
                }
            }
            unit = self.reclaim(unit, &cursors);
            for (cursor, position) in cursors {
                unit = unit.cursor(cursor, position);
            }
            if output.last {
                unit = unit.state(&name, StepState::Finished);
            }
            let ticket = self.committer.submit(unit)?;
            run.pending_batches += count as u64;
            acks.send(Pending {
                ticket,
                step: run.node,
                batches: late,
                rows_per_batch: rows_per_batch.clone(),
                last: output.last,
            })
            .map_err(|_| distill_storage::Error::CommitterStopped)?;
            submitted.push(Handed {
                batches: early,
                rows_per_batch,
                last: output.last,
            });
        }
        Ok(())
    }
}

impl StageRunner<'_> {
    /// A unit of `step` went to the committer: count it as submitted, note its batches' ends
    /// for reclamation, and hand its rows to the early consumers that are caught up.
    fn on_submitted(&mut self, runs: &mut [StepRun], step: usize, handed: Handed) {
        let Some(r) = runs.iter().position(|r| r.node == step) else {
            return;
        };
        // A consumer's unit that moves its cursor past these batches is submitted after this
        // one, so deleting them there never comes before they are written.
        if let Some(rc) = self.reclaimers.iter_mut().find(|rc| rc.node == step) {
            let mut end = rc.ends.back().copied().unwrap_or(rc.rows);
            for &count in &handed.rows_per_batch {
                end += count;
                rc.ends.push_back(end);
            }
        }
        let consumers = consumers_of(runs, step, true);
        for (rows, &count) in handed.batches.into_iter().zip(&handed.rows_per_batch) {
            let seq = runs[r].submitted.batches;
            hand_over(runs, &consumers, seq, count, rows);
            runs[r].submitted.batches += 1;
            runs[r].submitted.rows += count;
        }
        runs[r].submitted.done |= handed.last;
    }

    /// A batch is durable: count it, and hand its rows to the late consumers in this stage.
    fn on_committed(
        &mut self,
        runs: &mut [StepRun],
        step: usize,
        batches: Vec<Vec<Row>>,
        rows_per_batch: &[u64],
        last: bool,
    ) {
        let Some(r) = runs.iter().position(|r| r.node == step) else {
            return;
        };
        let consumers = consumers_of(runs, step, false);
        for (rows, &count) in batches.into_iter().zip(rows_per_batch) {
            let seq = runs[r].committed.batches;
            hand_over(runs, &consumers, seq, count, rows);
            let run = &mut runs[r];
            run.committed.batches += 1;
            run.committed.rows += count;
            run.pending_batches -= 1;
        }
        if Fault::EnginePanic.armed() {
            panic!(
                "injected engine fault after a batch of '{}' was committed",
                self.pipeline.nodes()[step].name()
            );
        }
        let run = &mut runs[r];
        run.committed.done |= last;
        if let Some(observer) = self.observer {
            observer.on_event(&RunEvent::BatchCommitted {
                step: self.pipeline.nodes()[step].name().to_owned(),
                rows: run.committed.rows,
                batches: run.committed.batches,
                last,
            });
        }
    }

    /// Records a step's failure and the run's, durably.
    fn fail(&self, step: &str, error: &Error) -> Result<()> {
        if let Some(observer) = self.observer {
            observer.on_event(&RunEvent::StepFailed {
                step: step.to_owned(),
                error: error.to_string(),
            });
        }
        self.committer.commit(
            Progress::new()
                .failed(step, error.to_string())
                .run(RunState {
                    status: RunStatus::Failed,
                    stage: self
                        .pipeline
                        .nodes()
                        .iter()
                        .find(|n| n.name() == step)
                        .map(|n| n.stage as u32),
                    message: Some(error.to_string()),
                    ..RunState::default()
                }),
        )?;
        Ok(())
    }
}

/// Checks that each finished step of `steps` had each of its rows read, no more, by every
/// consumer in its stage that finished, and no more by the others. A step run again because
/// its output was reclaimed (see [`crate::StepAction::DropReclaimed`]) must give the rows it
/// gave the first time: its consumers that kept their batches read up to where they were
/// then. Checked when a stage ends and when a session starts (so a run that stopped on it
/// does not resume as if nothing was wrong).
pub(crate) fn check_reads(
    pipeline: &Pipeline,
    snapshot: &Snapshot,
    progress: &[Committed],
    steps: &[usize],
) -> Result<()> {
    let nodes = pipeline.nodes();
    for &p in steps {
        if !progress[p].done {
            continue;
        }
        let rows = progress[p].rows;
        for &c in &nodes[p].succs {
            if nodes[c].stage != nodes[p].stage || nodes[c].is_global() {
                continue;
            }
            let read = snapshot
                .cursor(&cursor_name(nodes[c].name(), nodes[p].name()))?
                .unwrap_or(0);
            if read > rows || (progress[c].done && read != rows) {
                return Err(Error::Regenerated {
                    step: nodes[p].name().to_owned(),
                    rows,
                    consumer: nodes[c].name().to_owned(),
                    read,
                });
            }
        }
    }
    Ok(())
}

/// Encodes a job's output batches for the log on the worker's thread (bincode and zstd are
/// most of a commit's work; batches to be reclaimed are not compressed); on an encoding error nothing is encoded, and the committer
/// reports the error when it encodes the rows itself.
fn encode_output(log: &RunLog, output: &mut Output, life: BatchLife) {
    let count = output.batches.len();
    let encoded: distill_storage::Result<Vec<EncodedRows>> = output
        .batches
        .iter()
        .enumerate()
        .map(|(k, rows)| log.encode_rows(rows, output.last && k + 1 == count, life))
        .collect();
    if let Ok(encoded) = encoded {
        output.encoded_len = encoded.iter().map(|e| e.encoded_len as u64).sum();
        output.encoded = encoded.into_iter().map(|e| e.stored).collect();
    }
}

/// The edges `(consumer, edge)` of the stage's consumers of `step` that see its batches once
/// submitted (`early`) or once durable.
fn consumers_of(runs: &[StepRun], step: usize, early: bool) -> Vec<(usize, usize)> {
    runs.iter()
        .enumerate()
        .flat_map(|(c, run)| {
            run.edges
                .iter()
                .enumerate()
                .filter(move |(_, e)| e.pred == step && e.early == early)
                .map(move |(e, _)| (c, e))
        })
        .collect()
}

/// Hands batch `seq` (`count` rows) to the edges `consumers` that are caught up; an edge with
/// a backlog reads it from the log in order, once durable.
fn hand_over(
    runs: &mut [StepRun],
    consumers: &[(usize, usize)],
    seq: u64,
    count: u64,
    rows: Vec<Row>,
) {
    let mut rows = Some(rows);
    for (k, &(c, e)) in consumers.iter().enumerate() {
        let edge = &mut runs[c].edges[e];
        if edge.loaded_batches == seq && edge.skip == 0 {
            let batch = if k + 1 == consumers.len() {
                rows.take()
            } else {
                rows.clone()
            };
            edge.buffer.extend(batch.unwrap_or_default());
            edge.loaded_batches = seq + 1;
            edge.loaded_rows += count;
        }
    }
}

/// Whether a consumer of this kind sees its predecessors' batches once submitted to the
/// committer (a plain step), rather than once durable (a task, whose calls are paid, and a
/// global step).
fn sees_early(kind: NodeKind) -> bool {
    kind == NodeKind::Step
}

/// Waits for each commit in order and tells the scheduler.
fn acknowledge(pending: &Receiver<Pending>, events: &Sender<Event>) {
    for p in pending {
        let event = match p.ticket.wait() {
            Ok(_) => Event::Committed {
                step: p.step,
                batches: p.batches,
                rows_per_batch: p.rows_per_batch,
                last: p.last,
            },
            Err(e) => Event::CommitFailed(e),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}
