//! One distiset from the databases of a sharded run: the shards' and the global run's.
//!
//! A leaf that is a global step comes from the global database (where it ran once); every
//! other leaf is the shards' rows one shard after the other, in shard order. With shards
//! split by contiguous ranges (generators that know their row count), that is the order a
//! one-machine run writes.

use crate::error::{Error, Result};
use crate::{Distiset, ExportFormat, LeafExport, LeafStatus, out, write_all};
use distill_engine::PipelineSpec;
use distill_engine::shard::{SHARD_RECORD, ShardSpec};
use distill_storage::{RunReader, RunStatus, Snapshot, StepRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn bad(detail: String) -> Error {
    Error::Shards { detail }
}

/// Exports the shards and global database of one sharded run (`dbs`, in any order) to `out`
/// as one distiset (see the module's rules for where each leaf's rows come from).
pub fn export_shards(dbs: &[PathBuf], out: &Path, format: ExportFormat) -> Result<Distiset> {
    let mut global: Option<(PathBuf, Snapshot)> = None;
    let mut shards: BTreeMap<u32, (PathBuf, Snapshot, u32)> = BTreeMap::new();
    let mut readers = Vec::new();
    for db in dbs {
        let reader = RunReader::open(db)?;
        let snapshot = reader.snapshot()?;
        readers.push(reader);
        let record = snapshot
            .record(SHARD_RECORD)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        match record.as_deref() {
            Some(r) if r.starts_with("global/") => {
                if let Some((other, _)) = &global {
                    return Err(bad(format!(
                        "{} and {} are both global databases",
                        other.display(),
                        db.display()
                    )));
                }
                global = Some((db.clone(), snapshot));
            }
            Some(r) => {
                let spec: ShardSpec = r
                    .parse()
                    .map_err(|_| bad(format!("{} records shard '{r}'", db.display())))?;
                if let Some((other, _, _)) = shards.get(&spec.index) {
                    return Err(bad(format!(
                        "{} and {} are both shard {spec}",
                        other.display(),
                        db.display()
                    )));
                }
                shards.insert(spec.index, (db.clone(), snapshot, spec.count));
            }
            None => {
                return Err(bad(format!(
                    "{} is not a shard (it holds an unsharded run; export it alone)",
                    db.display()
                )));
            }
        }
    }
    let Some((first_db, first, count)) = shards.values().next() else {
        return Err(bad("no shard database among them".into()));
    };
    let missing: Vec<String> = (0..*count)
        .filter(|i| !shards.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() || shards.values().any(|(_, _, n)| n != count) {
        return Err(bad(format!(
            "the shards of {count} are not all there (missing: {}); give every shard's database",
            missing.join(", ")
        )));
    }
    let meta = first.meta()?;
    for (db, snapshot) in shards
        .values()
        .map(|(db, s, _)| (db, s))
        .chain(global.as_ref().map(|(db, s)| (db, s)))
    {
        if snapshot.meta()?.signature != meta.signature {
            return Err(bad(format!(
                "{} holds another pipeline than {}",
                db.display(),
                first_db.display()
            )));
        }
    }
    let spec = PipelineSpec::from_yaml(&meta.pipeline, first_db)?;
    let ordered: Vec<&Snapshot> = shards.values().map(|(_, s, _)| s).collect();
    let all: Vec<&Snapshot> = ordered
        .iter()
        .copied()
        .chain(global.as_ref().map(|(_, s)| s))
        .collect();
    let mut status = RunStatus::Finished;
    let mut stage = None;
    let mut log = 0;
    for snapshot in &all {
        let run = snapshot.run_state()?;
        log += snapshot.log_len()?;
        if status == RunStatus::Finished && run.status != RunStatus::Finished {
            status = run.status;
            stage = run.stage;
        }
    }
    // Which snapshots hold each leaf's rows.
    let mut sources: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    let mut leaves = Vec::new();
    for leaf in spec.safe_leaves()? {
        let from_global = match &global {
            Some((_, g)) => g.step(&leaf)?.is_some_and(|r| r.done),
            None => false,
        };
        let from: Vec<&Snapshot> = if from_global {
            vec![&global.as_ref().expect("checked").1]
        } else {
            ordered.clone()
        };
        let mut records: Vec<StepRecord> = Vec::new();
        for snapshot in &from {
            records.push(snapshot.step(&leaf)?.unwrap_or_default());
        }
        let record = records
            .iter()
            .find(|r| LeafStatus::of(r) != LeafStatus::Finished)
            .cloned()
            .unwrap_or_else(|| records[0].clone());
        leaves.push(LeafExport {
            name: leaf.clone(),
            status: LeafStatus::of(&record),
            rows: 0,
            batches: records.iter().map(|r| r.batches).sum(),
            error: records.iter().find_map(|r| r.error.clone()),
            files: Vec::new(),
            non_finite_as_null: BTreeMap::new(),
        });
        sources.insert(leaf, from);
    }
    let mut distiset = Distiset {
        pipeline_name: spec.name.clone(),
        description: spec.description.clone(),
        signature: meta.signature.clone(),
        run_status: status,
        stage,
        snapshot_log: log,
        format,
        leaves,
        files: Vec::new(),
    };
    if distiset.leaves.iter().all(|l| l.batches == 0) {
        return Err(Error::NothingToExport {
            detail: format!(
                "no leaf step of the {count} shards has committed a batch yet (run status: {status})"
            ),
        });
    }
    let mut out_dir = out::OutDir::prepare(out, first_db)?;
    for db in dbs.iter().skip(1) {
        // Refuses an output directory that holds any of the databases.
        drop(out::OutDir::prepare(out, db)?);
    }
    let staging = out::Staging::create(&out_dir)?;
    write_all(
        |leaf| sources.get(leaf).cloned().unwrap_or_default(),
        &staging.path,
        &meta.pipeline,
        &mut distiset,
    )?;
    out_dir.commit(&staging.path, &distiset.files)?;
    drop(staging);
    out_dir.finish();
    drop(readers);
    Ok(distiset)
}
