//! A run from start (or resume) to end: open the log, check the pipeline, go stage by stage.

use crate::budget::{Budget, Cost, Price};
use crate::error::{Error, Result};
use crate::lifecycle::{Listener, LoadGuard};
use crate::observer::{Observer, RunEvent};
use crate::pipeline::Pipeline;
use crate::resume::{self, PlanMode, ResumePlan, StepAction};
use crate::scheduler::{Committed, StageRunner};
use crate::shard::{Role, SHARD_RECORD};
use crate::worker::{LogTaskContext, StepInfo};
use distill_storage::{
    GroupCommitter, LogOptions, NewRun, Progress, RunLog, RunState, RunStatus, StepState,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// The run database (created if missing, resumed if it holds this pipeline).
    pub db: PathBuf,
    /// Worker threads for steps (0: one per core).
    pub workers: usize,
    /// Set to stop the run cleanly (Ctrl-C): in-flight work is committed, then it returns.
    pub stop: Arc<AtomicBool>,
    /// Told of progress.
    pub observer: Option<Arc<dyn Observer>>,
    /// How the run log is opened; keep the default (durable) outside benchmarks.
    pub log: LogOptions,
    /// Start a new run in an existing database instead of resuming: its progress is dropped,
    /// its request cache kept, so a changed pipeline is not charged again for the same requests.
    pub new_run: bool,
    /// When a generator's input changed since the run read from it, recompute from that
    /// generator on (instead of refusing to resume).
    pub allow_changed_inputs: bool,
    /// One shard of a sharded run, or its global steps (see [`crate::shard`]); part of the
    /// database's identity: a shard's database is refused to another shard.
    pub role: Role,
}

impl RunOptions {
    /// Options for a run on `db` with defaults.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        Self {
            db: db.into(),
            workers: 0,
            stop: Arc::new(AtomicBool::new(false)),
            observer: None,
            log: LogOptions::default(),
            new_run: false,
            allow_changed_inputs: false,
            role: Role::Single,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Whether progress from an earlier session was found.
    pub resumed: bool,
    /// Each leaf step with its committed row count.
    pub leaves: Vec<(String, u64)>,
    /// The global step this shard (or global run) stopped before, its status `at_barrier`:
    /// the run is not finished, the global run (or the shards) go on from here.
    pub barrier: Option<String>,
}

/// Runs `pipeline` on the database in `options`, resuming what it holds (see
/// [`RunSession::open`]).
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunSummary> {
    RunSession::open(pipeline, options)?.run()
}

/// What a run of `pipeline` on `options.db` would keep and drop, without changing anything:
/// `distill run --dry-run`.
pub fn plan(pipeline: &Pipeline, options: &RunOptions) -> Result<ResumePlan> {
    if options.new_run || !options.db.exists() {
        let mode = if options.db.exists() {
            PlanMode::Restart
        } else {
            PlanMode::Fresh
        };
        return Ok(resume::fresh(pipeline, mode));
    }
    let reader = distill_storage::RunReader::open(&options.db)?;
    let (plan, _) = resume::plan(
        pipeline,
        &reader.snapshot()?,
        &options.db,
        options.allow_changed_inputs,
    )?;
    Ok(plan)
}

/// A run with its database open: what [`run`] does in two steps, so that consumers of the log
/// (the Hub pusher) can start on the open log before the steps do.
pub struct RunSession<'a> {
    pipeline: &'a Pipeline,
    options: &'a RunOptions,
    log: Arc<RunLog>,
    committer: Arc<GroupCommitter>,
    plan: ResumePlan,
}

impl<'a> RunSession<'a> {
    /// Opens (or creates) the run database of `options` for `pipeline`: a new run with
    /// `new_run`; else the run in it, resumed: all of it for the same pipeline, for a changed
    /// one the committed batches of every step whose signature is unchanged (see
    /// [`plan`] for what would be kept without changing anything).
    pub fn open(pipeline: &'a Pipeline, options: &'a RunOptions) -> Result<Self> {
        let new_run = NewRun {
            signature: pipeline.signature(),
            pipeline: pipeline.spec().to_yaml(),
            created_by: concat!("distill ", env!("CARGO_PKG_VERSION")).into(),
        };
        let (log, created) =
            RunLog::open_or_create_with(&options.db, new_run.clone(), options.log)?;
        if !created && !options.new_run {
            check_role(&log, &options.role)?;
        }
        let plan = if created || options.new_run {
            if !created {
                log.restart_keeping(new_run, crate::task::KEPT_RECORDS)?;
            }
            let records = resume::fresh_records(pipeline)?;
            log.commit(
                records
                    .into_iter()
                    .fold(Progress::new(), |unit, (k, v)| unit.record(k, v))
                    .record(SHARD_RECORD, options.role.record().map(String::into_bytes)),
            )?;
            let mode = if created {
                PlanMode::Fresh
            } else {
                PlanMode::Restart
            };
            resume::fresh(pipeline, mode)
        } else {
            let (plan, change) = resume::plan(
                pipeline,
                &log.snapshot()?,
                &options.db,
                options.allow_changed_inputs,
            )?;
            if let Some(change) = change {
                log.rebase(change)?;
            }
            plan
        };
        if plan.mode == PlanMode::Changed {
            for step in plan
                .steps
                .iter()
                .filter(|s| s.action != StepAction::New || s.batches > 0)
            {
                tracing::info!("{step}");
            }
        }
        if let Some(observer) = &options.observer {
            observer.on_event(&RunEvent::Planned(plan.clone()));
        }
        let log = Arc::new(log);
        let committer = Arc::new(GroupCommitter::start(log.clone()));
        Ok(Self {
            pipeline,
            options,
            log,
            committer,
            plan,
        })
    }

    /// What the run keeps of the database's earlier progress.
    pub fn plan(&self) -> &ResumePlan {
        &self.plan
    }

    /// The open run log.
    pub fn log(&self) -> &Arc<RunLog> {
        &self.log
    }

    /// The run's committer: units committed through it join the run's group commits.
    pub fn committer(&self) -> &Arc<GroupCommitter> {
        &self.committer
    }

    /// Runs the pipeline stage by stage to its end, a failure, or a stop.
    pub fn run(&self) -> Result<RunSummary> {
        let result = run_on_log(self.pipeline, self.options, &self.log, &self.committer);
        for node in self.pipeline.nodes() {
            node.slot.set_listener(None);
        }
        result
    }
}

fn run_on_log(
    pipeline: &Pipeline,
    options: &RunOptions,
    log: &Arc<RunLog>,
    committer: &Arc<GroupCommitter>,
) -> Result<RunSummary> {
    let nodes = pipeline.nodes();
    let snapshot = log.snapshot()?;
    let mut progress: Vec<Committed> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let record = snapshot.step(node.name())?.unwrap_or_default();
        progress.push(Committed {
            batches: record.batches,
            rows: record.rows,
            done: record.done,
        });
    }
    // A step that gave other rows when it ran again stopped an earlier session: what its
    // consumers kept does not match, and resuming would not mend it.
    let all: Vec<usize> = (0..nodes.len()).collect();
    crate::scheduler::check_reads(pipeline, &snapshot, &progress, &all)?;
    let budget = match pipeline.spec().budget_usd {
        Some(limit) => {
            let spent = committed_spend(pipeline, &snapshot)?;
            let budget = Budget::new(Cost::from_usd(limit), spent);
            tracing::info!(limit = %budget.limit(), spent = %spent, "budget");
            Some(Arc::new(budget))
        }
        None => None,
    };
    drop(snapshot);
    let resumed = progress.iter().any(|p| p.batches > 0);
    if let Some(observer) = &options.observer {
        observer.on_event(&RunEvent::Started { resumed });
    }
    // Each node's listener commits under the node's name: a slot built before the pipeline (a
    // Python step loaded by hand) may know itself by another name.
    let listener = |name: &str| -> Listener {
        let committer = committer.clone();
        let name = name.to_owned();
        Arc::new(move |_: &str, state: StepState| {
            // Lifecycle states are queued in order with the run's other units and committed
            // with the next group, without waiting: a crash can only lose a state the process
            // took with it (loading, loaded, unloaded), and `status` sees each one a commit
            // later. Waiting cost a durable transaction of its own per state.
            let _ = committer.submit(Progress::new().state(&name, state));
        })
    };
    let infos: Vec<Arc<StepInfo>> = nodes
        .iter()
        .map(|node| {
            node.slot.set_listener(Some(listener(node.name())));
            Arc::new(StepInfo {
                spec: node.spec.clone(),
                slot: node.slot.clone(),
                outputs: node.slot.read().outputs(),
                batch_size: node.batch_size,
                task_context: Arc::new(
                    LogTaskContext::new(
                        log.clone(),
                        committer.clone(),
                        node.name(),
                        options.stop.clone(),
                    )
                    .with_budget(budget.clone()),
                ),
                shard: match &options.role {
                    Role::Shard { spec, .. } => Some(*spec),
                    _ => None,
                },
                view: std::sync::OnceLock::new(),
            })
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.workers)
        .thread_name(|i| format!("distill-worker-{i}"))
        .build()
        .map_err(|e| Error::Threads {
            detail: e.to_string(),
        })?;
    let mut ran_global = false;
    for (stage, members) in pipeline.stages().iter().enumerate() {
        // Global steps of the stage a shard waits for: it stops after the stage's other steps.
        let mut waits_for: Option<usize> = None;
        let mut todo: Vec<usize> = Vec::new();
        for &i in members {
            if progress[i].done {
                continue;
            }
            match &options.role {
                Role::Single => todo.push(i),
                Role::Shard { spec, global_db } => {
                    if !nodes[i].is_global() {
                        todo.push(i);
                    } else {
                        match crate::barrier::take_share(
                            pipeline, i, *spec, global_db, log, committer,
                        )? {
                            Some(done) => progress[i] = done,
                            None => {
                                waits_for.get_or_insert(i);
                            }
                        }
                    }
                }
                Role::Global { shards } => {
                    if !nodes[i].is_global() {
                        continue;
                    }
                    match crate::barrier::gather(pipeline, i, shards, log, committer) {
                        Ok(done) => {
                            for (p, committed) in done {
                                progress[p] = committed;
                            }
                            todo.push(i);
                        }
                        Err(e @ Error::ShardsBehind { .. }) if ran_global => {
                            tracing::info!("{e}");
                            return at_barrier(pipeline, committer, stage, i, &progress);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if todo.is_empty() {
            if let Some(g) = waits_for {
                return at_barrier(pipeline, committer, stage, g, &progress);
            }
            continue;
        }
        if matches!(options.role, Role::Global { .. }) {
            ran_global = true;
        }
        let names: Vec<&str> = todo.iter().map(|&i| nodes[i].name()).collect();
        tracing::info!(stage, steps = %names.join(", "), "stage starting");
        set_run_state(committer, RunStatus::Running, Some(stage), None)?;
        let guards = match load_stage(pipeline, &todo) {
            Ok(guards) => guards,
            Err(e) => {
                set_run_state(
                    committer,
                    RunStatus::Failed,
                    Some(stage),
                    Some(e.to_string()),
                )?;
                return Err(e);
            }
        };
        let mut running = Progress::new();
        for &i in &todo {
            running = running.state(nodes[i].name(), StepState::Running);
        }
        committer.commit(running)?;
        if let Some(observer) = &options.observer {
            observer.on_event(&RunEvent::StageStarted {
                stage,
                steps: todo.iter().map(|&i| nodes[i].name().to_owned()).collect(),
            });
        }
        let outcome = StageRunner::new(
            pipeline,
            &infos,
            log,
            committer,
            &pool,
            options.observer.as_ref(),
            &options.stop,
            &mut progress,
        )
        .run(&todo);
        drop(guards);
        match outcome {
            Ok(()) => {
                tracing::info!(stage, "stage finished");
                if let Some(g) = waits_for {
                    return at_barrier(pipeline, committer, stage, g, &progress);
                }
            }
            Err(Error::Interrupted) => {
                set_run_state(committer, RunStatus::Stopped, Some(stage), None)?;
                return Err(Error::Interrupted);
            }
            Err(e @ Error::Waiting { .. }) => {
                set_run_state(
                    committer,
                    RunStatus::Waiting,
                    Some(stage),
                    Some(e.to_string()),
                )?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    set_run_state(committer, RunStatus::Finished, None, None)?;
    tracing::info!("run finished");
    Ok(RunSummary {
        resumed,
        leaves: leaves(pipeline, &progress),
        barrier: None,
    })
}

fn leaves(pipeline: &Pipeline, progress: &[Committed]) -> Vec<(String, u64)> {
    pipeline
        .leaves()
        .into_iter()
        .map(|i| (pipeline.nodes()[i].name().to_owned(), progress[i].rows))
        .collect()
}

/// Ends the session before global step `g`'s stage: status `at_barrier`.
fn at_barrier(
    pipeline: &Pipeline,
    committer: &GroupCommitter,
    stage: usize,
    g: usize,
    progress: &[Committed],
) -> Result<RunSummary> {
    let step = pipeline.nodes()[g].name().to_owned();
    set_run_state(
        committer,
        RunStatus::AtBarrier,
        Some(stage),
        Some(format!("waiting for global step '{step}'")),
    )?;
    tracing::info!(stage, step = %step, "at the barrier of a global step");
    Ok(RunSummary {
        resumed: progress.iter().any(|p| p.batches > 0),
        leaves: leaves(pipeline, progress),
        barrier: Some(step),
    })
}

/// Refuses a database recorded for another shard role than `role`.
fn check_role(log: &RunLog, role: &Role) -> Result<()> {
    let recorded = log
        .snapshot()?
        .record(SHARD_RECORD)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let wanted = role.record();
    if recorded == wanted {
        return Ok(());
    }
    let describe = |r: &Option<String>| match r {
        None => "an unsharded run".to_owned(),
        Some(r) if r.starts_with("global/") => format!("the global steps of {}", &r[7..]),
        Some(r) => format!("shard {r}"),
    };
    Err(Error::ShardMismatch {
        db: log.path().to_path_buf(),
        recorded: describe(&recorded),
        requested: describe(&wanted),
    })
}

/// What the answers committed in `snapshot` cost, at each step's `price` (steps of the
/// pipeline only; a step a changed pipeline dropped keeps its counters, so its spend counts).
fn committed_spend(pipeline: &Pipeline, snapshot: &distill_storage::Snapshot) -> Result<Cost> {
    let mut spent = Cost::ZERO;
    for node in pipeline.nodes() {
        if let Some(price) = Price::of_params(&node.spec.params)? {
            let record = snapshot.step(node.name())?.unwrap_or_default();
            spent = spent + price.spend(&record.counters).spent;
        }
    }
    Ok(spent)
}

/// Loads the steps of a stage (a step loaded by hand before the run is used as it is, see
/// [`crate::StepSlot::acquire`]); on failure the ones loaded are unloaded by their guards.
fn load_stage(pipeline: &Pipeline, steps: &[usize]) -> Result<Vec<LoadGuard>> {
    steps
        .iter()
        .map(|&i| pipeline.nodes()[i].slot.acquire())
        .collect()
}

fn set_run_state(
    committer: &GroupCommitter,
    status: RunStatus,
    stage: Option<usize>,
    message: Option<String>,
) -> Result<()> {
    committer.commit(Progress::new().run(RunState {
        status,
        stage: stage.map(|s| s as u32),
        message,
        ..RunState::default()
    }))?;
    Ok(())
}
