//! A run with everything: every built-in step, and the push section's pusher beside the run.

use crate::error::Result;
use distill_engine::step::StepResult;
use distill_engine::{BuildContext, Pipeline, PipelineSpec, Registry, RunOptions, RunSession};
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
    let spec = PipelineSpec::load(path)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let registry = registry_for(&spec)?;
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
    let pusher = match &pipeline.spec().push {
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
    let summary = result?;
    Ok(RunSummary {
        resumed: summary.resumed,
        leaves: summary.leaves,
        push,
    })
}
