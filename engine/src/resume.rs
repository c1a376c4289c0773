//! What a run keeps of a database's earlier progress: everything, for the same pipeline; the
//! committed batches of every step whose signature is unchanged, for a changed one; nothing,
//! for a new run. Generators' inputs are fingerprinted, so a file changed under a run is
//! noticed instead of resumed at a stale offset.

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::scheduler::cursor_name;
use crate::signature::step_signatures;
use crate::spec::PipelineSpec;
use crate::step::StepKind;
use distill_storage::{Rebase, Snapshot};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Prefix of the records holding each step's signature.
const SIGNATURE_RECORD: &str = "sig:";
/// Prefix of the records holding each generator's input fingerprint.
const INPUT_RECORD: &str = "input:";
/// Prefix of the records marking when a step's batches were last dropped (see [`step_epoch`]).
const EPOCH_RECORD: &str = "epoch:";

/// When `step`'s committed batches were last dropped by a changed pipeline, as an opaque
/// token (`None`: never, in this run). Consumers of a step's batches (the Hub pusher) start
/// that step over when it changes.
pub fn step_epoch(snapshot: &Snapshot, step: &str) -> Result<Option<String>> {
    Ok(snapshot
        .record(&format!("{EPOCH_RECORD}{step}"))?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// What a run does with what the database holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResumePlan {
    /// The kind of start.
    pub mode: PlanMode,
    /// Each step of the pipeline (and each step of the stored run that is gone), in the
    /// pipeline's order.
    pub steps: Vec<StepPlan>,
}

/// How a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// A new database.
    Fresh,
    /// A new run in an existing database (`--new`): progress dropped, request cache kept.
    Restart,
    /// The same pipeline: everything committed is kept.
    Resume,
    /// A changed pipeline: what is still valid is kept, the rest is dropped.
    Changed,
}

/// What happens to one step's committed batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepPlan {
    /// The step.
    pub step: String,
    /// What happens to it.
    pub action: StepAction,
    /// Its committed batches in the database.
    pub batches: u64,
}

/// What happens to a step's committed batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "because")]
pub enum StepAction {
    /// Kept: the run goes on from them.
    Keep,
    /// The step is new (or the run is): it starts from nothing.
    New,
    /// Dropped: the step changed.
    DropChanged,
    /// Dropped: a step it comes after was dropped (named).
    DropUpstream(String),
    /// Dropped: its input changed (the stored and the current fingerprint).
    DropInputChanged(String),
    /// Dropped and regenerated: a dropped or new step (named) must read this step's output
    /// again, and the batches it had consumed were deleted (reclaimed). The step is unchanged,
    /// so it gives the same rows at the same offsets again: its other consumers keep their
    /// batches and their cursors on it (they are not dropped), and read on from where they
    /// were.
    DropReclaimed(String),
    /// Dropped: the step is no longer in the pipeline.
    DropRemoved,
}

impl StepAction {
    /// Whether the step's batches go.
    pub fn drops(&self) -> bool {
        !matches!(self, StepAction::Keep | StepAction::New)
    }
}

impl std::fmt::Display for StepPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (step, n) = (&self.step, self.batches);
        match &self.action {
            StepAction::Keep => write!(f, "{step}: kept ({n} batches)"),
            StepAction::New => write!(f, "{step}: new"),
            StepAction::DropChanged => write!(f, "{step}: changed, {n} batches dropped"),
            StepAction::DropUpstream(up) => {
                write!(f, "{step}: after changed step '{up}', {n} batches dropped")
            }
            StepAction::DropInputChanged(why) => {
                write!(f, "{step}: its input changed ({why}), {n} batches dropped")
            }
            StepAction::DropRemoved => write!(f, "{step}: removed, {n} batches dropped"),
            StepAction::DropReclaimed(by) => write!(
                f,
                "{step}: '{by}' reads it again and its consumed batches were reclaimed, {n} \
                 batches dropped and made again (same rows); its other consumers keep theirs"
            ),
        }
    }
}

impl ResumePlan {
    /// Whether anything committed is dropped.
    pub fn drops(&self) -> bool {
        self.steps.iter().any(|s| s.action.drops())
    }
}

/// Each generator's current input fingerprint.
fn fingerprints(pipeline: &Pipeline) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for node in pipeline.nodes() {
        let step = node.slot.read();
        if let StepKind::Generator(g) = &*step {
            let fingerprint = g.fingerprint().map_err(|source| Error::LoadFailed {
                step: node.name().to_owned(),
                source,
            })?;
            if let Some(f) = fingerprint {
                out.insert(node.name().to_owned(), f);
            }
        }
    }
    Ok(out)
}

/// Tells each generator whose signature is unchanged the fingerprint the run recorded (see
/// [`crate::step::Generator::pin`]), so it reads its input as it was.
fn pin_unchanged_generators(
    pipeline: &Pipeline,
    old_sigs: &BTreeMap<String, String>,
    new_sigs: &BTreeMap<String, String>,
    stored_inputs: &BTreeMap<String, String>,
) -> Result<()> {
    for node in pipeline.nodes() {
        let name = node.name();
        let (Some(recorded), Some(old), Some(new)) = (
            stored_inputs.get(name),
            old_sigs.get(name),
            new_sigs.get(name),
        ) else {
            continue;
        };
        if old != new {
            continue;
        }
        if let StepKind::Generator(g) = &mut *node.slot.write() {
            g.pin(recorded).map_err(|source| Error::LoadFailed {
                step: name.to_owned(),
                source,
            })?;
        }
    }
    Ok(())
}

fn records(snapshot: &Snapshot, prefix: &str) -> Result<BTreeMap<String, String>> {
    Ok(snapshot
        .records(prefix)?
        .into_iter()
        .map(|(k, v)| {
            (
                k[prefix.len()..].to_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect())
}

/// The records a run of `pipeline` keeps about its steps: signatures and input fingerprints.
fn step_records(
    pipeline: &Pipeline,
    inputs: &BTreeMap<String, String>,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = pipeline
        .step_signatures()
        .iter()
        .map(|(step, sig)| {
            (
                format!("{SIGNATURE_RECORD}{step}"),
                Some(sig.clone().into_bytes()),
            )
        })
        .collect();
    out.extend(inputs.iter().map(|(step, f)| {
        (
            format!("{INPUT_RECORD}{step}"),
            Some(f.clone().into_bytes()),
        )
    }));
    out
}

/// A plan for a database that held nothing (or is restarted): every step new.
pub(crate) fn fresh(pipeline: &Pipeline, mode: PlanMode) -> ResumePlan {
    ResumePlan {
        mode,
        steps: pipeline
            .nodes()
            .iter()
            .map(|n| StepPlan {
                step: n.name().to_owned(),
                action: StepAction::New,
                batches: 0,
            })
            .collect(),
    }
}

/// The records to write for a fresh (or restarted) run of `pipeline`.
pub(crate) fn fresh_records(pipeline: &Pipeline) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    Ok(step_records(pipeline, &fingerprints(pipeline)?))
}

/// What a run of `pipeline` does with the progress in `snapshot` of database `db`, and the
/// change to apply to the database for it (`None`: nothing to change).
pub(crate) fn plan(
    pipeline: &Pipeline,
    snapshot: &Snapshot,
    db: &Path,
    allow_changed_inputs: bool,
) -> Result<(ResumePlan, Option<Rebase>)> {
    let meta = snapshot.meta()?;
    let old = PipelineSpec::from_yaml(&meta.pipeline, db)?;
    let same = meta.signature == pipeline.signature();
    if !same && old.name != pipeline.spec().name {
        return Err(Error::PipelineMismatch {
            db: db.to_path_buf(),
            found: format!("'{}'", old.name),
            expected: format!("'{}'", pipeline.spec().name),
        });
    }
    let stored_sigs = records(snapshot, SIGNATURE_RECORD)?;
    let sigs_recorded = old.steps.iter().all(|s| stored_sigs.contains_key(&s.name));
    let old_sigs = if sigs_recorded {
        stored_sigs
    } else {
        // Written by a build without step records: sign the stored pipeline the same way.
        step_signatures(&old, pipeline.registry())
    };
    let stored_inputs = records(snapshot, INPUT_RECORD)?;
    let new_sigs = pipeline.step_signatures();
    pin_unchanged_generators(pipeline, &old_sigs, new_sigs, &stored_inputs)?;
    let inputs = fingerprints(pipeline)?;
    // Steps that must run again because a dropped step reads their output again and part of
    // it was reclaimed (deleted once consumed): found by passes until none is added.
    let mut rerun: BTreeMap<String, String> = BTreeMap::new();
    let (mut dropped, mut steps) = loop {
        let (dropped, steps) = plan_steps(
            pipeline,
            snapshot,
            &old_sigs,
            &stored_inputs,
            &inputs,
            &rerun,
            allow_changed_inputs,
        )?;
        // A dropped or new step reads its inputs from their first row.
        let from_start: BTreeSet<&str> = steps
            .iter()
            .filter(|s| s.action.drops() || s.action == StepAction::New)
            .map(|s| s.step.as_str())
            .collect();
        let mut added = false;
        for node in pipeline.nodes() {
            if !from_start.contains(node.name()) {
                continue;
            }
            for &p in &node.preds {
                let pred = pipeline.nodes()[p].name();
                if !dropped.contains(pred) && snapshot.reclaimed(pred)?.1 > 0 {
                    rerun.insert(pred.to_owned(), node.name().to_owned());
                    added = true;
                }
            }
        }
        if !added {
            break (dropped, steps);
        }
    };
    // Steps of the stored run that the pipeline no longer has.
    for step in &old.steps {
        if new_sigs.contains_key(&step.name) {
            continue;
        }
        let batches = snapshot.step(&step.name)?.map_or(0, |r| r.batches);
        dropped.insert(step.name.clone());
        steps.push(StepPlan {
            step: step.name.clone(),
            action: StepAction::DropRemoved,
            batches,
        });
    }
    let mode = if same && dropped.is_empty() {
        PlanMode::Resume
    } else {
        PlanMode::Changed
    };
    let plan = ResumePlan { mode, steps };
    // Operational settings (endpoints, prices, the budget, the push section) change the
    // stored pipeline but not its signature: the database takes the new text, so `status`
    // prices and reports the run as it now runs.
    let text_changed = meta.pipeline != pipeline.spec().to_yaml();
    let records_stale = stored_inputs != inputs || !sigs_recorded || !same || text_changed;
    if mode == PlanMode::Resume && !records_stale {
        return Ok((plan, None));
    }
    // Cursors a dropped step held on its inputs, in the stored and in the new pipeline.
    let mut drop_cursors = BTreeSet::new();
    for spec in [&old, pipeline.spec()] {
        for step in spec.steps.iter().filter(|s| dropped.contains(&s.name)) {
            for pred in &step.after {
                drop_cursors.insert(cursor_name(&step.name, pred));
            }
        }
    }
    let mut records = step_records(pipeline, &inputs);
    // The log's length is unique to this change: each dropped step gets a new epoch.
    let epoch = format!("log{}", snapshot.log_len()?);
    for step in &dropped {
        records.push((
            format!("{EPOCH_RECORD}{step}"),
            new_sigs
                .contains_key(step)
                .then(|| epoch.clone().into_bytes()),
        ));
    }
    for step in old.steps.iter().filter(|s| !new_sigs.contains_key(&s.name)) {
        records.push((format!("{SIGNATURE_RECORD}{}", step.name), None));
        records.push((format!("{INPUT_RECORD}{}", step.name), None));
    }
    let rebase = Rebase {
        signature: pipeline.signature(),
        pipeline: pipeline.spec().to_yaml(),
        drop_steps: dropped.into_iter().collect(),
        drop_cursors: drop_cursors.into_iter().collect(),
        records,
    };
    Ok((plan, Some(rebase)))
}

/// What happens to each step of `pipeline` (in stage order), and which of them are dropped;
/// the steps in `rerun` are dropped and made again because a dropped step reads their output
/// again (unless their input changed: then they are changed steps, or refused). Only a step
/// that changes drops the steps after it: one made again keeps its other consumers.
fn plan_steps(
    pipeline: &Pipeline,
    snapshot: &Snapshot,
    old_sigs: &BTreeMap<String, String>,
    stored_inputs: &BTreeMap<String, String>,
    inputs: &BTreeMap<String, String>,
    rerun: &BTreeMap<String, String>,
    allow_changed_inputs: bool,
) -> Result<(BTreeSet<String>, Vec<StepPlan>)> {
    let new_sigs = pipeline.step_signatures();
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    let mut regenerated: BTreeSet<String> = BTreeSet::new();
    let mut steps = Vec::new();
    for &i in pipeline.stages().iter().flatten() {
        let node = &pipeline.nodes()[i];
        let name = node.name();
        let batches = snapshot.step(name)?.map_or(0, |r| r.batches);
        let changed_input = match (stored_inputs.get(name), inputs.get(name)) {
            (Some(then), Some(now)) if then != now => Some((then.clone(), now.clone())),
            _ => None,
        };
        // A step made again (`DropReclaimed`) gives the rows it gave before: its consumers
        // are not dropped because of it.
        let upstream = node
            .preds
            .iter()
            .map(|&p| pipeline.nodes()[p].name())
            .find(|p| dropped.contains(*p) && !regenerated.contains(*p));
        let action = match (old_sigs.get(name), upstream) {
            (None, _) => StepAction::New,
            (Some(_), Some(up)) => StepAction::DropUpstream(up.to_owned()),
            (Some(sig), None) if sig != &new_sigs[name] => StepAction::DropChanged,
            (Some(_), None) => match changed_input {
                Some((then, now)) if allow_changed_inputs => {
                    StepAction::DropInputChanged(format!("was {then}, now {now}"))
                }
                Some((then, now)) => {
                    return Err(Error::InputChanged {
                        step: name.to_owned(),
                        then,
                        now,
                    });
                }
                None => match rerun.get(name) {
                    Some(by) => StepAction::DropReclaimed(by.clone()),
                    None => StepAction::Keep,
                },
            },
        };
        if action.drops() || (action == StepAction::New && batches > 0) {
            dropped.insert(name.to_owned());
        }
        if matches!(action, StepAction::DropReclaimed(_)) {
            regenerated.insert(name.to_owned());
        }
        steps.push(StepPlan {
            step: name.to_owned(),
            action,
            batches,
        });
    }
    Ok((dropped, steps))
}
