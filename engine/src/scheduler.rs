//! The stage loop: forms input windows, dispatches jobs to workers, puts results back in batch
//! order, hands them to the committer, and makes a batch visible downstream only once durable.
//!
//! Rows flow between steps as a stream: a step's input window `j` is rows `[j*N, (j+1)*N)` of
//! each predecessor's committed output, whatever the predecessor's own batch boundaries. So
//! every batch is a deterministic function of committed data, and a resumed run forms exactly
//! the windows an uninterrupted run would.

use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::observer::{Observer, RunEvent};
use crate::pipeline::Pipeline;
use crate::step::{GlobalStream, StepKind};
use crate::worker::{Input, JobError, Output, StepInfo, run_job};
use crossbeam_channel::{Receiver, Sender, unbounded};
use distill_storage::{
    Batch, GroupCommitter, Progress, Row, RunLog, RunState, RunStatus, Snapshot, StepState, Ticket,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Batches of one step that may be between dispatch and durable commit at once (processing,
/// waiting for their turn, or committing). This bounds memory: the pipeline never runs ahead
/// of the disk by more than this many batches per step.
const MAX_IN_FLIGHT: usize = 8;
/// A producer pauses while a consumer has this many input windows waiting.
const HIGH_WATER_WINDOWS: u64 = 8;

/// Name of the cursor of `step` on its predecessor `pred`.
pub(crate) fn cursor_name(step: &str, pred: &str) -> String {
    format!("{step}<-{pred}")
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
    /// Rows still to skip when reading from the log (the cursor found on resume).
    skip: u64,
}

/// A processed job waiting for its turn to commit: its output and the cursors it advances.
type Finished = (std::result::Result<Output, JobError>, Vec<(String, u64)>);

struct StepRun {
    node: usize,
    committed: Committed,
    /// Batches committed before this session: job `k` of the session is batch
    /// `first_batch + k` of the step, the same number in every session.
    first_batch: u64,
    /// Jobs dispatched so far in this session; also the order of their results.
    next_job: u64,
    next_submit: u64,
    in_flight: usize,
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
    /// Whether committed rows are kept in memory for a consumer in this stage.
    feeds_stage: bool,
    /// A streaming global step's state (one job at a time uses it).
    stream: Option<Arc<std::sync::Mutex<Box<dyn GlobalStream>>>>,
    /// Rows per predecessor its committed windows consumed, pushed again by the session's
    /// first window to rebuild the stream's state (resume).
    replay: Vec<(String, u64)>,
}

impl StepRun {
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
}

struct Pending {
    ticket: Ticket,
    step: usize,
    /// The rows, when a consumer in the stage needs them in memory (else empty vectors).
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
        }
    }

    /// Runs stage `stage` to its end.
    pub fn run(&mut self, stage: usize) -> Result<()> {
        let nodes = self.pipeline.nodes();
        let members: Vec<usize> = self.pipeline.stages()[stage]
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
                edges.push(Edge {
                    pred: p,
                    taken,
                    buffer: VecDeque::new(),
                    loaded_batches: 0,
                    skip: taken,
                });
            }
            let feeds_stage = node
                .succs
                .iter()
                .any(|&c| members.contains(&c) && !nodes[c].is_global());
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
                first_batch: self.progress[i].batches,
                next_job: 0,
                next_submit: 0,
                in_flight: 0,
                last_dispatched: false,
                generated: self.progress[i].rows,
                pending_batches: 0,
                halted: false,
                reorder: BTreeMap::new(),
                edges,
                feeds_stage,
                stream,
                replay,
            });
        }
        drop(snapshot);
        let (events_tx, events) = unbounded::<Event>();
        let (acks_tx, acks) = unbounded::<Pending>();
        let acker = {
            let events_tx = events_tx.clone();
            std::thread::spawn(move || acknowledge(&acks, &events_tx))
        };
        let outcome = self.drive(&mut runs, &events_tx, &events, &acks_tx);
        drop(acks_tx);
        let _ = acker.join();
        for run in &runs {
            self.progress[run.node] = run.committed;
        }
        outcome
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
            if outstanding == 0 {
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
                        && self.pipeline.nodes()[step].is_generator()
                    {
                        runs[r].generated +=
                            out.batches.iter().map(|b| b.len() as u64).sum::<u64>();
                        runs[r].last_dispatched |= out.last;
                    }
                    runs[r].reorder.insert(job, (result, cursors));
                    match self.submit_ready(&mut runs[r], acks) {
                        Ok(n) => outstanding += n,
                        Err(e) => {
                            if failure.is_none() {
                                failure = Some(e);
                            }
                        }
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
                && runs[r].unfinished() < MAX_IN_FLIGHT
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
        let n = node.batch_size as u64;
        while runs[r].unfinished() < MAX_IN_FLIGHT && !runs[r].last_dispatched {
            let ready = runs[r].edges.iter().all(|e| {
                let pred = self.committed(runs, e.pred);
                pred.rows - e.taken >= n || pred.done
            });
            if !ready || self.backlogged(runs, r) {
                break;
            }
            let mut parts = Vec::with_capacity(runs[r].edges.len());
            let mut last = true;
            let mut cursors = Vec::new();
            for e in 0..runs[r].edges.len() {
                let pred = runs[r].edges[e].pred;
                let committed = self.committed(runs, pred);
                let available = committed.rows - runs[r].edges[e].taken;
                let take = available.min(n);
                let rows =
                    self.take_rows(&mut runs[r].edges[e], take as usize, committed.batches)?;
                last &= committed.done && available == take;
                runs[r].edges[e].taken += take;
                parts.push(rows);
                cursors.push((
                    cursor_name(node.name(), nodes[pred].name()),
                    runs[r].edges[e].taken,
                ));
            }
            runs[r].last_dispatched = last;
            self.spawn(&mut runs[r], Input::Window(parts), last, cursors, events);
            count += 1;
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
            || runs[r].unfinished() >= MAX_IN_FLIGHT
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
            let take = (committed.rows - runs[r].edges[e].taken).min(need);
            let rows = self.take_rows(&mut runs[r].edges[e], take as usize, committed.batches)?;
            runs[r].edges[e].taken += take;
            need -= take;
            last &= committed.done && runs[r].edges[e].taken == committed.rows;
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

    fn committed(&self, runs: &[StepRun], step: usize) -> Committed {
        runs.iter()
            .find(|r| r.node == step)
            .map_or(self.progress[step], |r| r.committed)
    }

    /// Whether a consumer of step `r` in this stage already has enough input waiting.
    fn backlogged(&self, runs: &[StepRun], r: usize) -> bool {
        let nodes = self.pipeline.nodes();
        let me = runs[r].node;
        let produced = runs[r].committed.rows;
        runs.iter().any(|c| {
            c.edges.iter().any(|e| {
                e.pred == me
                    && produced - e.taken.min(produced)
                        > HIGH_WATER_WINDOWS * nodes[c.node].batch_size as u64
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
        let mut batches = snap.batches(pred, edge.loaded_batches)?;
        while edge.buffer.len() < count && edge.loaded_batches < pred_batches {
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            edge.loaded_batches = batch.seq + 1;
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
        let info = self.infos[run.node].clone();
        let events = events.clone();
        let step = run.node;
        let job = run.next_job;
        run.next_job += 1;
        run.in_flight += 1;
        self.pool.spawn_fifo(move || {
            let result = run_job(&info, input, last);
            let _ = events.send(Event::Processed {
                step,
                job,
                result,
                cursors,
            });
        });
    }

    /// Hands results to the committer in job order; returns how many commits it started.
    fn submit_ready(&mut self, run: &mut StepRun, acks: &Sender<Pending>) -> Result<usize> {
        let mut started = 0;
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
            let mut kept = Vec::with_capacity(count);
            let mut rows_per_batch = Vec::with_capacity(count);
            for (k, rows) in output.batches.into_iter().enumerate() {
                rows_per_batch.push(rows.len() as u64);
                kept.push(if run.feeds_stage {
                    rows.clone()
                } else {
                    Vec::new()
                });
                unit = unit.batch(Batch {
                    step: name.clone(),
                    seq: first_seq + k as u64,
                    rows,
                    last: output.last && k + 1 == count,
                });
            }
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
                batches: kept,
                rows_per_batch,
                last: output.last,
            })
            .map_err(|_| distill_storage::Error::CommitterStopped)?;
            started += 1;
        }
        Ok(started)
    }
}

impl StageRunner<'_> {
    /// A batch is durable: count it, and hand its rows to consumers in this stage.
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
        let consumers: Vec<(usize, usize)> = runs
            .iter()
            .enumerate()
            .flat_map(|(c, run)| {
                run.edges
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.pred == step)
                    .map(move |(e, _)| (c, e))
            })
            .collect();
        for (rows, &count) in batches.into_iter().zip(rows_per_batch) {
            let seq = runs[r].committed.batches;
            let mut rows = Some(rows);
            for (k, &(c, e)) in consumers.iter().enumerate() {
                let edge = &mut runs[c].edges[e];
                // Only an edge that is caught up takes the rows from memory; one with a
                // backlog reads them from the log in order.
                if edge.loaded_batches == seq && edge.skip == 0 {
                    let batch = if k + 1 == consumers.len() {
                        rows.take()
                    } else {
                        rows.clone()
                    };
                    edge.buffer.extend(batch.unwrap_or_default());
                    edge.loaded_batches = seq + 1;
                }
            }
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
