//! Global steps across shards: rows moved between the shards' databases and the global one.
//!
//! Only committed rows move, and only by reading closed (or live) databases through
//! snapshots: the global run copies every shard's rows of a global step's predecessors into
//! its own database, shard after shard ([`gather`]); a shard copies its contiguous share of
//! the global step's output into its own ([`take_share`]). Each copy is committed in units
//! that carry how far it got, so a copy killed half way resumes where it stopped.

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::scheduler::Committed;
use crate::shard::{Behind, SHARD_RECORD, ShardSpec};
use distill_storage::{
    Batch, GroupCommitter, Progress, Row, RunLog, RunReader, RunStatus, Snapshot, StepState,
};
use std::path::{Path, PathBuf};

/// Rows per batch (and transaction) copied between databases.
const COPY_ROWS: usize = 512;

/// Dies here when the `copy-kill` fault is armed (tests of a copy killed half way).
fn after_copied_unit() {
    if crate::fault::Fault::CopyKill.armed() {
        std::process::abort();
    }
}

/// The record of how many shards' rows of a step the global run copied (`gathered:STEP`).
fn gathered_key(step: &str) -> String {
    format!("gathered:{step}")
}

fn shard_record(snapshot: &Snapshot) -> Result<Option<String>> {
    Ok(snapshot
        .record(SHARD_RECORD)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

fn same_pipeline(pipeline: &Pipeline, snapshot: &Snapshot, db: &Path) -> Result<()> {
    let meta = snapshot.meta()?;
    if meta.signature != pipeline.signature() {
        return Err(Error::BadShard {
            detail: format!(
                "{} holds another pipeline (signature {}, this one is {}): every shard and the global run must run the same pipeline file with the same number of shards",
                db.display(),
                meta.signature,
                pipeline.signature()
            ),
        });
    }
    Ok(())
}

fn committed(snapshot: &Snapshot, step: &str) -> Result<Committed> {
    let record = snapshot.step(step)?.unwrap_or_default();
    Ok(Committed {
        batches: record.batches,
        rows: record.rows,
        done: record.done,
    })
}

/// Copies shard `spec`'s share of global step `g`'s output from `global_db` into the shard's
/// database, once the global run finished the step: `None` while it has not (the shard is at
/// the barrier).
pub(crate) fn take_share(
    pipeline: &Pipeline,
    g: usize,
    spec: ShardSpec,
    global_db: &Path,
    log: &RunLog,
    committer: &GroupCommitter,
) -> Result<Option<Committed>> {
    let step = pipeline.nodes()[g].name();
    if !global_db.exists() {
        return Ok(None);
    }
    let reader = RunReader::open(global_db)?;
    let global = reader.snapshot()?;
    let expected = format!("global/{}", spec.count);
    let recorded = shard_record(&global)?;
    if recorded.as_deref() != Some(expected.as_str()) {
        return Err(Error::BadShard {
            detail: format!(
                "{} is not the global database of {} shards (it records {})",
                global_db.display(),
                spec.count,
                recorded.as_deref().unwrap_or("an unsharded run")
            ),
        });
    }
    same_pipeline(pipeline, &global, global_db)?;
    let out = committed(&global, step)?;
    if !out.done {
        return Ok(None);
    }
    let (start, end) = spec.range(out.rows);
    let mine = committed(&log.snapshot()?, step)?;
    // Rows of the share already copied by an earlier session.
    let mut at = start + mine.rows;
    let mut seq = mine.batches;
    let mut position = 0u64;
    let mut pending: Vec<Row> = Vec::new();
    let flush = |rows: Vec<Row>, seq: &mut u64, last: bool| -> Result<()> {
        let mut unit = Progress::new().batch(Batch {
            step: step.to_owned(),
            seq: *seq,
            rows,
            last,
        });
        if last {
            unit = unit.state(step, StepState::Finished);
        }
        committer.commit(unit)?;
        after_copied_unit();
        *seq += 1;
        Ok(())
    };
    for batch in global.batches(step, 0)? {
        let rows = batch?.rows;
        let n = rows.len() as u64;
        let (from, to) = (position, position + n);
        position = to;
        if to <= at || from >= end {
            continue;
        }
        let skip = (at.max(from) - from) as usize;
        let take = (end.min(to) - at.max(from)) as usize;
        pending.extend(rows.into_iter().skip(skip).take(take));
        at += take as u64;
        if pending.len() >= COPY_ROWS && at < end {
            flush(std::mem::take(&mut pending), &mut seq, false)?;
        }
    }
    flush(pending, &mut seq, true)?;
    tracing::info!(
        step,
        rows = end - start,
        "took this shard's share of a global step"
    );
    Ok(Some(committed(&log.snapshot()?, step)?))
}

/// The shards' databases in shard order, checked: every one records a shard of the same
/// count, the count is how many there are, each shard once, the same pipeline.
fn ordered_shards(pipeline: &Pipeline, shards: &[PathBuf]) -> Result<Vec<(PathBuf, RunReader)>> {
    let n = shards.len();
    let mut slots: Vec<Option<(PathBuf, RunReader)>> = (0..n).map(|_| None).collect();
    for db in shards {
        let reader = RunReader::open(db)?;
        let snapshot = reader.snapshot()?;
        let recorded = shard_record(&snapshot)?;
        let spec: Option<ShardSpec> = recorded.as_deref().and_then(|r| r.parse().ok());
        let Some(spec) = spec.filter(|s| s.count as usize == n) else {
            return Err(Error::BadShard {
                detail: format!(
                    "{} is not a shard of {n} (it records {}); --shards must name every shard's database of one run",
                    db.display(),
                    recorded.as_deref().unwrap_or("an unsharded run")
                ),
            });
        };
        same_pipeline(pipeline, &snapshot, db)?;
        drop(snapshot);
        let slot = &mut slots[spec.index as usize];
        if let Some((other, _)) = slot {
            return Err(Error::BadShard {
                detail: format!(
                    "{} and {} are both shard {spec}",
                    other.display(),
                    db.display()
                ),
            });
        }
        *slot = Some((db.clone(), reader));
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Copies every shard's rows of global step `g`'s predecessors into the global run's
/// database, in shard order, once every shard committed all of them; returns the
/// predecessors' progress. [`Error::ShardsBehind`] names the shards that have not.
pub(crate) fn gather(
    pipeline: &Pipeline,
    g: usize,
    shards: &[PathBuf],
    log: &RunLog,
    committer: &GroupCommitter,
) -> Result<Vec<(usize, Committed)>> {
    if shards.is_empty() {
        return Err(Error::BadShard {
            detail: "no shard databases given (--shards)".into(),
        });
    }
    let node = &pipeline.nodes()[g];
    // Predecessors the global database has already (another global step's output, or a copy
    // an earlier session finished) need no shard.
    let mine = log.snapshot()?;
    let mut needed = Vec::new();
    let mut out = Vec::new();
    for &p in &node.preds {
        let have = committed(&mine, pipeline.nodes()[p].name())?;
        if have.done {
            out.push((p, have));
        } else {
            needed.push(p);
        }
    }
    drop(mine);
    if needed.is_empty() {
        return Ok(out);
    }
    let not_started: Vec<(PathBuf, String)> = shards
        .iter()
        .filter(|db| !db.exists())
        .map(|db| (db.clone(), "not started".to_owned()))
        .collect();
    if !not_started.is_empty() {
        return Err(Error::ShardsBehind {
            step: node.name().to_owned(),
            behind: Behind {
                shards: not_started,
            }
            .to_string(),
        });
    }
    let shards = ordered_shards(pipeline, shards)?;
    let mut behind = Behind { shards: Vec::new() };
    for (db, reader) in &shards {
        let snapshot = reader.snapshot()?;
        for &p in &needed {
            let pred = pipeline.nodes()[p].name();
            if !committed(&snapshot, pred)?.done {
                let run = snapshot.run_state()?;
                let at = match run.status {
                    RunStatus::AtBarrier | RunStatus::Finished => run.status.to_string(),
                    status => format!("{status}, step '{pred}' not finished"),
                };
                behind.shards.push((db.clone(), at));
                break;
            }
        }
    }
    if !behind.shards.is_empty() {
        return Err(Error::ShardsBehind {
            step: node.name().to_owned(),
            behind: behind.to_string(),
        });
    }
    for &p in &needed {
        let pred = pipeline.nodes()[p].name();
        let key = gathered_key(pred);
        let mine = log.snapshot()?;
        // Where the copy stands: shard k, and rows of it already copied.
        let (first, mut done) = mine
            .record(&key)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| {
                let (k, rows) = v.split_once(' ')?;
                Some((k.parse::<usize>().ok()?, rows.parse::<u64>().ok()?))
            })
            .unwrap_or((0, 0));
        let mut seq = committed(&mine, pred)?.batches;
        drop(mine);
        for (k, (db, reader)) in shards.iter().enumerate().skip(first) {
            let snapshot = reader.snapshot()?;
            let mut pending: Vec<Row> = Vec::new();
            let mut position = 0u64;
            // Each unit of rows commits with the place the copy reached: a killed copy
            // resumes there, and memory holds one unit at a time.
            let flush = |rows: Vec<Row>, (k, done): (usize, u64), seq: &mut u64| -> Result<()> {
                let mut unit =
                    Progress::new().record(&key, Some(format!("{k} {done}").into_bytes()));
                if !rows.is_empty() {
                    unit = unit.batch(Batch {
                        step: pred.to_owned(),
                        seq: *seq,
                        rows,
                        last: false,
                    });
                    *seq += 1;
                }
                committer.commit(unit)?;
                after_copied_unit();
                Ok(())
            };
            for batch in snapshot.batches(pred, 0)? {
                let rows = batch?.rows;
                let n = rows.len() as u64;
                let skip = done.saturating_sub(position).min(n) as usize;
                position += n;
                pending.extend(rows.into_iter().skip(skip));
                if pending.len() >= COPY_ROWS {
                    done += pending.len() as u64;
                    flush(std::mem::take(&mut pending), (k, done), &mut seq)?;
                }
            }
            // The shard's last rows commit with the start of the next shard.
            flush(pending, (k + 1, 0), &mut seq)?;
            done = 0;
            tracing::info!(step = pred, shard = k, db = %db.display(), "gathered a shard's rows");
        }
        committer.commit(
            Progress::new()
                .batch(Batch {
                    step: pred.to_owned(),
                    seq,
                    rows: Vec::new(),
                    last: true,
                })
                .state(pred, StepState::Finished),
        )?;
        out.push((p, committed(&log.snapshot()?, pred)?));
    }
    Ok(out)
}
