//! A run with everything: every built-in step, and the push section's pusher and the
//! checkpoint section's checkpointer beside the run.

use crate::error::Result;
use distill_checkpoint::{CheckpointStatus, CheckpointWorker, Identity, Restored};
use distill_engine::step::StepResult;
use distill_engine::{
    BuildContext, Pipeline, PipelineSpec, Registry, Role, RunOptions, RunSession,
};
use distill_hub::{HubAccess, PushStatus, PushWorker};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Whether progress from an earlier session was found.
    pub resumed: bool,
    /// Each leaf step with its committed row count.
    pub leaves: Vec<(String, u64)>,
    /// Where the push to the Hub stands, when the pipeline has a push section.
    pub push: Option<PushStatus>,
    /// The global step a shard (or the global run) stopped before: status `at_barrier`.
    pub barrier: Option<String>,
    /// Where the checkpoints stand, when the pipeline has a checkpoint section.
    pub checkpoint: Option<CheckpointStatus>,
}

/// A registry with every built-in step: the engine's CPU steps and file loaders, the LLM
/// tasks, the Parquet and Arrow loaders and the Hub loader.
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    distill_llm::register(&mut registry);
    distill_distiset::read::register(&mut registry);
    distill_hub::load::register(&mut registry);
    distill_vector::register(&mut registry);
    registry
}

/// Registers the step types of a family that no registry holds by name (Python steps,
/// `py:MODULE:NAME`): called with a type name a pipeline uses, it registers that type and
/// returns true, or returns false when the name is not of its family. Its error (the module
/// cannot be imported, say) names what is wrong.
pub type Resolver = Arc<dyn Fn(&str, &mut Registry) -> StepResult<bool> + Send + Sync>;

/// The resolvers [`registry_for`] asks, in the order added.
static RESOLVERS: RwLock<Vec<Resolver>> = RwLock::new(Vec::new());

/// Adds a resolver of step types for every later [`load_pipeline`] and [`registry_for`] of
/// this process: the Python package adds the one of `py:` types when it is imported, so the
/// `distill` command run from Python runs Python steps.
pub fn add_resolver(resolver: Resolver) {
    RESOLVERS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .push(resolver);
}

/// [`registry`], plus the types `spec` names that a resolver (see [`add_resolver`]) knows. A
/// type no one knows is left out: building the pipeline reports it.
pub fn registry_for(spec: &PipelineSpec) -> Result<Registry> {
    let mut registry = registry();
    resolve(spec, &mut registry)?;
    Ok(registry)
}

/// Adds to `registry` the types `spec` names that it lacks and a resolver knows (see
/// [`add_resolver`]).
pub fn resolve(spec: &PipelineSpec, registry: &mut Registry) -> Result<()> {
    let resolvers = RESOLVERS.read().unwrap_or_else(|p| p.into_inner()).clone();
    for step in &spec.steps {
        if registry.get(&step.kind).is_some() {
            continue;
        }
        for resolver in &resolvers {
            match resolver(&step.kind, registry) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    return Err(distill_engine::Error::BadStep {
                        step: step.name.clone(),
                        detail: format!("type '{}': {e}", step.kind),
                    }
                    .into());
                }
            }
        }
    }
    Ok(())
}

/// Reads and validates a pipeline file with every built-in step (and the types resolvers
/// know, see [`add_resolver`]); relative paths in it are resolved against the file's
/// directory.
pub fn load_pipeline(path: &Path) -> Result<Pipeline> {
    load_pipeline_for(path, 1)
}

/// [`load_pipeline`] for one of `shards` processes: the pipeline's limits (budget, request
/// rates, concurrency) split evenly over them (see [`PipelineSpec::split_limits`]).
pub fn load_pipeline_for(path: &Path, shards: u32) -> Result<Pipeline> {
    let mut spec = PipelineSpec::load(path)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let registry = registry_for(&spec)?;
    if shards > 1 {
        // A task's default concurrency is the pipeline's too: write it, so that it is split.
        for step in &mut spec.steps {
            let takes = registry
                .operational(&step.kind)
                .iter()
                .any(|p| p == "concurrency");
            if let Some(params) = step.params.as_object_mut().filter(|_| takes) {
                params
                    .entry("concurrency")
                    .or_insert(distill_llm::DEFAULT_CONCURRENCY.into());
            }
        }
    }
    spec.split_limits(shards);
    Ok(Pipeline::build(
        spec,
        &registry,
        &BuildContext { base_dir },
    )?)
}

/// Runs `pipeline` as [`distill_engine::run`] does, and pushes to the Hub as its push section
/// says, with the address and token of `HF_ENDPOINT` and `HF_TOKEN`.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunSummary> {
    run_with_hub(pipeline, options, &HubAccess::from_env())
}

/// [`run`], with the Hub's address and token given.
pub fn run_with_hub(
    pipeline: &Pipeline,
    options: &RunOptions,
    hub: &HubAccess,
) -> Result<RunSummary> {
    let session = RunSession::open(pipeline, options)?;
    // The checkpointer first: a target that refuses the credentials stops the run before the
    // pusher starts.
    let checkpointer = match &pipeline.spec().checkpoint {
        Some(spec) => Some(CheckpointWorker::start(
            spec,
            identity(pipeline, &options.role),
            session.log().clone(),
            session.committer().clone(),
            hub,
        )?),
        None => None,
    };
    let sharded = options.role != distill_engine::Role::Single;
    if sharded && pipeline.spec().push.is_some() {
        tracing::warn!(
            "the pipeline's push section is ignored in a sharded run (each shard would rewrite the dataset card); export all databases and upload the distiset"
        );
    }
    let pusher = match pipeline.spec().push.as_ref().filter(|_| !sharded) {
        Some(spec) => Some(PushWorker::start(
            spec.clone(),
            hub,
            session.log().clone(),
            session.committer().clone(),
        )?),
        None => None,
    };
    let result = session.run();
    let push = pusher.map(|pusher| {
        // What is committed is pushed even when a step failed; not when the user stops.
        let interrupted = matches!(result, Err(distill_engine::Error::Interrupted));
        pusher.finish(!interrupted)
    });
    // The last snapshot is taken however the run ended: a stopped run (SIGTERM before a
    // preemption) is the one most likely to resume elsewhere.
    let checkpoint = checkpointer.map(CheckpointWorker::finish);
    // The database is closed here (the pusher and the checkpointer are done with it).
    drop(session);
    let summary = result?;
    if summary.barrier.is_none() {
        compact(&options.db);
    }
    Ok(RunSummary {
        resumed: summary.resumed,
        leaves: summary.leaves,
        push,
        barrier: summary.barrier,
        checkpoint,
    })
}

/// Gives a finished run's free pages back (see [`distill_storage::compact_finished`]): the
/// file keeps the size of the run's busiest moment otherwise. Best effort: a reader holding the
/// file (a `status --watch`, a notebook's live view) leaves it as it is.
fn compact(db: &Path) {
    match distill_storage::compact_finished(db) {
        Ok(Some(c)) => tracing::info!(
            db = %db.display(),
            before = c.before,
            after = c.after,
            "compacted the finished run's database"
        ),
        Ok(None) => {}
        Err(e) => tracing::info!(db = %db.display(), "not compacted: {e}"),
    }
}

/// The identity the snapshots of `pipeline`'s run in `role` are kept under at a checkpoint
/// target (its folder there: `PIPELINE/shard-0-of-1`; a shard's `PIPELINE/shard-I-of-N`; the
/// global run's `PIPELINE.global/shard-0-of-1`).
pub fn identity(pipeline: &Pipeline, role: &Role) -> Identity {
    let name = &pipeline.spec().name;
    match role {
        Role::Single => Identity::of_pipeline(name),
        Role::Shard { spec, .. } => Identity::of_pipeline(name).shard(spec.index, spec.count),
        Role::Global { .. } => Identity::of_pipeline(&format!("{name}.global")),
    }
}

/// `--resume-from URL`: when the run database `db` is missing (or empty), puts the newest
/// complete, verified snapshot of `pipeline`'s run at `url` in its place and returns what it
/// restored; when `db` is there, leaves it alone and returns `None` (the local database is
/// never older than its own snapshots).
pub fn resume_from(
    pipeline: &Pipeline,
    role: &Role,
    db: &Path,
    url: &str,
    hub: &HubAccess,
) -> Result<Option<Restored>> {
    if std::fs::metadata(db).is_ok_and(|m| m.len() > 0) {
        return Ok(None);
    }
    Ok(Some(distill_checkpoint::restore(
        url,
        &identity(pipeline, role),
        db,
        hub,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_pipeline_splits_the_tasks_default_concurrency_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "name: p\nbudget_usd: 2.0\nsteps:\n  - {name: load, type: inline, params: {rows: [{instruction: a}]}}\n  - {name: ask, type: text_generation, after: [load], params: {base_url: 'http://127.0.0.1:9/v1', model: m}}\n  - {name: ask2, type: text_generation, after: [load], params: {base_url: 'http://127.0.0.1:9/v1', model: m, concurrency: 6}}\n",
        )
        .unwrap();
        let one = load_pipeline_for(&path, 1).unwrap();
        assert!(one.spec().steps[1].params.get("concurrency").is_none());
        let four = load_pipeline_for(&path, 4).unwrap();
        let spec = four.spec();
        assert_eq!(spec.budget_usd, Some(0.5));
        assert_eq!(spec.steps[1].params["concurrency"], 4);
        assert_eq!(spec.steps[2].params["concurrency"], 1);
        assert!(spec.steps[0].params.get("concurrency").is_none());
    }

    #[test]
    fn each_shard_and_the_global_run_checkpoint_to_a_folder_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "name: p\nsteps:\n  - {name: load, type: inline, params: {rows: [{a: 1}]}}\n",
        )
        .unwrap();
        let pipeline = load_pipeline(&path).unwrap();
        let shard = |index| Role::Shard {
            spec: distill_engine::ShardSpec { index, count: 4 },
            global_db: dir.path().join("global.redb"),
        };
        let folders = [
            identity(&pipeline, &Role::Single).folder(),
            identity(&pipeline, &shard(0)).folder(),
            identity(&pipeline, &shard(3)).folder(),
            identity(&pipeline, &Role::Global { shards: vec![] }).folder(),
        ];
        assert_eq!(folders[0], "p/shard-0-of-1");
        assert_eq!(folders[1], "p/shard-0-of-4");
        assert_eq!(folders[2], "p/shard-3-of-4");
        assert_eq!(folders[3], "p.global/shard-0-of-1");
    }
}
