//! A validated pipeline: steps built, DAG checked, columns resolved, stages cut.

use crate::error::{Error, Result};
use crate::lifecycle::StepSlot;
use crate::registry::Registry;
use crate::signature::step_signatures_with;
use crate::spec::{DEFAULT_BATCH_SIZE, OnError, PipelineSpec, StepSpec};
use crate::step::{BuildContext, NodeKind, StepKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One step of a validated pipeline.
pub struct Node {
    /// The step as written.
    pub spec: StepSpec,
    /// The built step, with its lifecycle.
    pub slot: Arc<StepSlot>,
    /// Indices of predecessors, in the order written.
    pub preds: Vec<usize>,
    /// Indices of successors.
    pub succs: Vec<usize>,
    /// Stage index.
    pub stage: usize,
    /// Rows per batch: generator output or input window.
    pub batch_size: usize,
    /// Columns of the rows this step receives.
    pub received: Vec<String>,
    /// Columns of the rows this step outputs.
    pub columns: Vec<String>,
    /// Which kind of step it is.
    pub kind: NodeKind,
}

impl Node {
    /// The step's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether the step sees all upstream rows at once.
    pub fn is_global(&self) -> bool {
        self.kind == NodeKind::Global
    }

    /// Whether the step produces rows from nothing.
    pub fn is_generator(&self) -> bool {
        self.kind == NodeKind::Generator
    }

    /// The failure policy.
    pub fn on_error(&self) -> OnError {
        self.spec.on_error
    }
}

/// A pipeline ready to run.
pub struct Pipeline {
    spec: PipelineSpec,
    nodes: Vec<Node>,
    stages: Vec<Vec<usize>>,
    signatures: BTreeMap<String, String>,
    registry: Registry,
}

impl Pipeline {
    /// Builds and validates `spec` with the step types of `registry`. Checks names, edges,
    /// cycles, step types, parameters, batch sizes and columns; each error names the step.
    pub fn build(spec: PipelineSpec, registry: &Registry, ctx: &BuildContext) -> Result<Self> {
        Self::build_with(spec, registry, ctx, &HashMap::new())
    }

    /// [`Pipeline::build`], with some steps built beforehand: the step named by a key of
    /// `prebuilt` is that slot (maybe loaded by hand already, which a run then uses as it is:
    /// see [`StepSlot::acquire`]) instead of one its type's constructor makes. The slot is
    /// checked like any built step.
    pub fn build_with(
        spec: PipelineSpec,
        registry: &Registry,
        ctx: &BuildContext,
        prebuilt: &HashMap<String, Arc<StepSlot>>,
    ) -> Result<Self> {
        if let Some(push) = &spec.push {
            push.check()?;
        }
        if let Some(checkpoint) = &spec.checkpoint {
            checkpoint.check()?;
        }
        spec.check_budget()?;
        if spec.steps.is_empty() {
            return Err(Error::BadSection {
                section: "steps",
                detail: "a pipeline needs at least one step".into(),
            });
        }
        let index = index_names(&spec)?;
        let preds = resolve_edges(&spec, &index)?;
        let order = topological_order(&spec, &preds)?;
        let mut built: Vec<Option<Arc<StepSlot>>> = Vec::with_capacity(spec.steps.len());
        for step in &spec.steps {
            let slot = match prebuilt.get(&step.name) {
                Some(slot) => slot.clone(),
                None => Arc::new(StepSlot::new(&step.name, construct(step, registry, ctx)?)),
            };
            built.push(Some(slot));
        }
        let mut code = BTreeMap::new();
        let mut nodes: Vec<Option<Node>> = (0..spec.steps.len()).map(|_| None).collect();
        let mut columns: Vec<Vec<String>> = vec![Vec::new(); spec.steps.len()];
        let mut stage: Vec<usize> = vec![0; spec.steps.len()];
        // Where each step's rows come from: the nearest step upstream that makes rows of its
        // own (a generator, a global step, a filter...), through steps that keep rows.
        let mut origin: Vec<usize> = (0..spec.steps.len()).collect();
        for &i in &order {
            let step = &spec.steps[i];
            let slot = built[i].take().ok_or_else(|| bad(step, "built twice"))?;
            let guard = slot.read();
            let kind = &*guard;
            if let Some(version) = kind.code_version() {
                code.insert(step.name.clone(), version);
            }
            check_shape(step, kind, &preds[i])?;
            if spec.budget_usd.is_some()
                && let StepKind::Task(task) = &kind
            {
                task.check_budgeted()
                    .map_err(|e| bad(step, &e.to_string()))?;
            }
            check_alignment(&spec, i, kind, &preds[i], &origin)?;
            if kind.keeps_rows() {
                origin[i] = origin[preds[i][0]];
            }
            let received = received_columns(&preds[i], &columns);
            check_inputs(step, kind, &received)?;
            columns[i] = output_columns(step, kind, &received);
            stage[i] = stage_of(kind, &preds[i], &stage, &nodes);
            let batch_size = batch_size(step, kind)?;
            let kind_name = kind.kind();
            drop(guard);
            nodes[i] = Some(Node {
                spec: step.clone(),
                slot,
                preds: preds[i].clone(),
                succs: Vec::new(),
                stage: stage[i],
                batch_size,
                received,
                columns: columns[i].clone(),
                kind: kind_name,
            });
        }
        let mut nodes: Vec<Node> = nodes.into_iter().flatten().collect();
        for i in 0..nodes.len() {
            for p in nodes[i].preds.clone() {
                nodes[p].succs.push(i);
            }
        }
        let stage_count = nodes.iter().map(|n| n.stage + 1).max().unwrap_or(0);
        let mut stages = vec![Vec::new(); stage_count];
        for &i in &order {
            stages[nodes[i].stage].push(i);
        }
        Ok(Self {
            signatures: step_signatures_with(&spec, registry, &code),
            registry: registry.clone(),
            spec,
            nodes,
            stages,
        })
    }

    /// Each step's signature (see [`step_signatures`]), by name.
    pub fn step_signatures(&self) -> &BTreeMap<String, String> {
        &self.signatures
    }

    /// The registry the pipeline was built with (it signs other versions of the pipeline the
    /// same way).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The pipeline as written.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The steps, in the order written.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The stages: step indices in topological order, stage by stage.
    pub fn stages(&self) -> &[Vec<usize>] {
        &self.stages
    }

    /// Indices of the steps no other step comes after.
    pub fn leaves(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].succs.is_empty())
            .collect()
    }

    /// The pipeline's signature (see [`PipelineSpec::signature`]).
    pub fn signature(&self) -> String {
        self.spec.signature()
    }

    /// Whether step `i`'s batches are deleted from the run database once its consumers are
    /// past them (reclaimed): neither the pipeline nor the step keeps intermediate batches,
    /// and every consumer is in its stage (a later stage reads a stage-boundary output from
    /// the log, and a changed step restarts from it). Leaves have no consumer and are kept.
    pub fn reclaims(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        !self.spec.keep_intermediate
            && !node.spec.keep_intermediate
            && !node.succs.is_empty()
            && node
                .succs
                .iter()
                .all(|&c| self.nodes[c].stage == node.stage && !self.nodes[c].is_global())
    }
}

fn bad(step: &StepSpec, detail: &str) -> Error {
    Error::BadStep {
        step: step.name.clone(),
        detail: detail.to_owned(),
    }
}

/// Longest step name: names become directory and file names (configs, shards).
pub const MAX_NAME_LEN: usize = 64;

/// Most rows in one batch (a generator's `batch_size`, a step's `input_batch_size`): a batch is
/// held in memory whole, up to 8 per step at once.
pub const MAX_BATCH_ROWS: usize = 100_000;

/// Whether `name` is a valid step name: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`. Step names become
/// the configs of a distiset (directories) and name Hub shards, so nothing else is allowed.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn index_names(spec: &PipelineSpec) -> Result<HashMap<&str, usize>> {
    let mut index = HashMap::new();
    let mut folded: HashMap<String, &str> = HashMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        if !is_valid_name(&step.name) {
            return Err(bad(
                step,
                &format!(
                    "a step name is 1 to {MAX_NAME_LEN} letters, digits, `_` or `-`, starting with a letter or digit"
                ),
            ));
        }
        if index.insert(step.name.as_str(), i).is_some() {
            return Err(Error::DuplicateStep {
                step: step.name.clone(),
            });
        }
        // Names become directories: two that differ only in case collide on some file systems.
        if let Some(other) = folded.insert(step.name.to_ascii_lowercase(), &step.name) {
            return Err(bad(
                step,
                &format!("the name differs from step '{other}' only in case"),
            ));
        }
    }
    Ok(index)
}

/// The step's batch size: a generator's `batch_size` (rows per output batch), another step's
/// `input_batch_size` (rows per input window); the other one is an error, as is a size out of
/// `1..=MAX_BATCH_ROWS`.
fn batch_size(step: &StepSpec, kind: &StepKind) -> Result<usize> {
    let (size, unused) = match kind {
        StepKind::Generator(_) => (
            step.batch_size,
            step.input_batch_size.map(|_| {
                (
                    "input_batch_size",
                    "a generator has no input; its batch size is `batch_size`",
                )
            }),
        ),
        _ => (
            step.input_batch_size,
            step.batch_size.map(|_| {
                (
                    "batch_size",
                    "only generators take `batch_size`; a step's batch size is `input_batch_size`",
                )
            }),
        ),
    };
    if let Some((_, why)) = unused {
        return Err(bad(step, why));
    }
    let size = size.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=MAX_BATCH_ROWS).contains(&size) {
        return Err(bad(
            step,
            &format!("the batch size must be from 1 to {MAX_BATCH_ROWS} rows, not {size}"),
        ));
    }
    Ok(size)
}

fn resolve_edges(spec: &PipelineSpec, index: &HashMap<&str, usize>) -> Result<Vec<Vec<usize>>> {
    spec.steps
        .iter()
        .map(|step| {
            let mut preds = Vec::new();
            for after in &step.after {
                let p = *index
                    .get(after.as_str())
                    .ok_or_else(|| Error::UnknownPredecessor {
                        step: step.name.clone(),
                        after: after.clone(),
                    })?;
                if preds.contains(&p) {
                    return Err(bad(step, &format!("comes after '{after}' twice")));
                }
                preds.push(p);
            }
            Ok(preds)
        })
        .collect()
}

/// Kahn's algorithm, stable in the written order; a leftover means a cycle, which is reported.
fn topological_order(spec: &PipelineSpec, preds: &[Vec<usize>]) -> Result<Vec<usize>> {
    let n = preds.len();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (j, ps) in preds.iter().enumerate() {
        for &p in ps {
            succs[p].push(j);
        }
    }
    let mut missing: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut order = Vec::with_capacity(n);
    let mut ready: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    ready.reverse();
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in succs[i].iter().rev() {
            missing[j] -= 1;
            if missing[j] == 0 {
                ready.push(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk back from a step left over until a step repeats: that walk is a cycle.
    let mut seen: Vec<usize> = Vec::new();
    let mut on_walk = vec![false; n];
    let mut at = (0..n).find(|&i| missing[i] > 0).unwrap_or(0);
    while !on_walk[at] {
        on_walk[at] = true;
        seen.push(at);
        at = preds[at]
            .iter()
            .copied()
            .find(|&p| missing[p] > 0)
            .unwrap_or(at);
    }
    let start = seen.iter().position(|&s| s == at).unwrap_or(0);
    let mut cycle: Vec<String> = seen[start..]
        .iter()
        .rev()
        .map(|&i| spec.steps[i].name.clone())
        .collect();
    cycle.push(cycle[0].clone());
    Err(Error::Cycle { steps: cycle })
}

fn construct(step: &StepSpec, registry: &Registry, ctx: &BuildContext) -> Result<StepKind> {
    let constructor = registry
        .get(&step.kind)
        .ok_or_else(|| Error::UnknownStepType {
            step: step.name.clone(),
            kind: step.kind.clone(),
            known: registry.names().collect::<Vec<_>>().join(", "),
        })?;
    constructor(&step.params, ctx).map_err(|e| {
        if e.is::<crate::step::InputUnreachable>() {
            Error::InputUnreachable {
                step: step.name.clone(),
                source: e,
            }
        } else {
            Error::BadParams {
                step: step.name.clone(),
                detail: e.to_string(),
            }
        }
    })
}

fn check_shape(step: &StepSpec, kind: &StepKind, preds: &[usize]) -> Result<()> {
    match kind {
        StepKind::Generator(_) if !preds.is_empty() => {
            Err(bad(step, "a generator cannot come after other steps"))
        }
        StepKind::Generator(_) => Ok(()),
        _ if preds.is_empty() => Err(bad(
            step,
            &format!("a '{}' step needs a predecessor (set `after`)", step.kind),
        )),
        _ => Ok(()),
    }
}

/// A step that pairs its predecessors' rows by position needs them to come from one source
/// through steps that keep rows; otherwise row k of one branch is not row k of the other.
fn check_alignment(
    spec: &PipelineSpec,
    i: usize,
    kind: &StepKind,
    preds: &[usize],
    origin: &[usize],
) -> Result<()> {
    let StepKind::Step(step) = kind else {
        return Ok(());
    };
    if !step.aligns_by_position() || preds.len() < 2 {
        return Ok(());
    }
    let first = origin[preds[0]];
    if let Some(&other) = preds.iter().find(|&&p| origin[p] != first) {
        let name = |k: usize| spec.steps[k].name.as_str();
        return Err(bad(
            &spec.steps[i],
            &format!(
                "pairs the rows of its inputs by position, but the rows of '{}' come from '{}' and those of '{}' from '{}', so they need not line up (a filter, a list expansion, a global step or another source changes which rows there are); pair them by key with `on: [COLUMNS]`",
                name(preds[0]),
                name(first),
                name(other),
                name(origin[other])
            ),
        ));
    }
    Ok(())
}

/// Columns every predecessor provides, in the first predecessor's order.
fn received_columns(preds: &[usize], columns: &[Vec<String>]) -> Vec<String> {
    let Some((first, rest)) = preds.split_first() else {
        return Vec::new();
    };
    columns[*first]
        .iter()
        .filter(|c| rest.iter().all(|p| columns[*p].contains(c)))
        .cloned()
        .collect()
}

fn check_inputs(step: &StepSpec, kind: &StepKind, received: &[String]) -> Result<()> {
    for input in step.input_mappings.keys() {
        if !kind.inputs().contains(input) {
            return Err(bad(
                step,
                &format!("input_mappings names '{input}', which is not an input of the step"),
            ));
        }
    }
    for output in step.output_mappings.keys() {
        if !kind.outputs().contains(output) {
            return Err(bad(
                step,
                &format!("output_mappings names '{output}', which is not an output of the step"),
            ));
        }
    }
    for input in kind.inputs() {
        let column = step.input_mappings.get(&input).unwrap_or(&input);
        if !received.contains(column) {
            return Err(Error::MissingColumn {
                step: step.name.clone(),
                column: column.clone(),
                available: received.to_vec(),
            });
        }
    }
    Ok(())
}

/// Columns after the step, as the next step sees them (output mappings applied).
fn output_columns(step: &StepSpec, kind: &StepKind, received: &[String]) -> Vec<String> {
    // The step sees its inputs under their own names.
    let to_input: BTreeMap<&String, &String> =
        step.input_mappings.iter().map(|(i, c)| (c, i)).collect();
    let seen: Vec<String> = received
        .iter()
        .map(|c| to_input.get(c).map_or(c, |i| *i).clone())
        .collect();
    let after = match kind {
        StepKind::Step(s) => s.columns_after(&seen),
        StepKind::Global(g) => g.columns_after(&seen),
        other => {
            let mut out = seen;
            for c in other.outputs() {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            out
        }
    };
    after
        .into_iter()
        .map(
            |c| match (step.output_mappings.get(&c), step.input_mappings.get(&c)) {
                (Some(renamed), _) => renamed.clone(),
                (None, Some(original)) => original.clone(),
                (None, None) => c,
            },
        )
        .collect()
}

/// Global steps start a new stage; steps after a global step start the next one.
fn stage_of(kind: &StepKind, preds: &[usize], stage: &[usize], nodes: &[Option<Node>]) -> usize {
    let after_preds = preds
        .iter()
        .map(|&p| {
            let global = nodes[p].as_ref().is_some_and(Node::is_global);
            stage[p] + usize::from(global)
        })
        .max()
        .unwrap_or(0);
    match kind {
        StepKind::Global(_) if !preds.is_empty() => {
            preds.iter().map(|&p| stage[p]).max().unwrap_or(0) + 1
        }
        _ => after_preds,
    }
}
