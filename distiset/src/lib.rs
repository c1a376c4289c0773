//! The distiset: a run's output dataset, one config per leaf step, exported from one consistent
//! snapshot of the run log (also while the run goes on, from another process).
//!
//! Layout: `DIR/README.md` (dataset card, configs in its front matter), `DIR/CONFIG/train/*.parquet`
//! (or `.jsonl`), `DIR/pipeline.yaml`, `DIR/distiset.json` (run and leaf status, and every file
//! the export wrote). The export is built in `DIR/.distill-export-tmp/` and moved into place
//! file by file; it replaces only the files of an earlier export and refuses a directory that
//! holds anything else (see the `out` module's rules). Column types follow the rules of
//! [`Inferred`]; [`write_parquet`] is the one Parquet writer (the Hub's shards use it).
//!
//! The [`read`] module goes the other way: Parquet and Arrow files into rows, for the
//! `load_parquet` and `load_disk` generators ([`read::register`]) and the Hub loader.
#![deny(missing_docs)]

mod card;
mod error;
mod jsonl;
mod out;
mod parquet;
pub mod read;
mod schema;
mod shards;

pub use card::dataset_card;
pub use error::{Error, Result};
pub use parquet::{
    ROWS_PER_GROUP, Written, arrow_schema, record_batch, write_parquet, write_parquet_counted,
};
pub use schema::{Inferred, Ty};
pub use shards::export_shards;

use distill_engine::PipelineSpec;
use distill_storage::{Row, RunReader, RunStatus, Snapshot, StepRecord, StepState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// File format of the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Apache Parquet (the default), readable by pyarrow and `datasets`.
    #[default]
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

impl ExportFormat {
    /// The data files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

/// Where a leaf stands, for readers of an export or a pushed dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeafStatus {
    /// Nothing committed yet.
    Pending,
    /// Batches committed, more to come.
    Running,
    /// Its last batch is committed.
    Finished,
    /// The step failed; its committed rows are exported.
    Failed,
}

impl LeafStatus {
    /// The status of a leaf whose step record is `record`.
    pub fn of(record: &StepRecord) -> Self {
        let failed = record.state == StepState::Failed || record.error.is_some();
        match () {
            _ if failed => LeafStatus::Failed,
            _ if record.done => LeafStatus::Finished,
            _ if record.batches > 0 || record.state == StepState::Running => LeafStatus::Running,
            _ => LeafStatus::Pending,
        }
    }

    /// Lower-case name, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            LeafStatus::Pending => "pending",
            LeafStatus::Running => "running",
            LeafStatus::Finished => "finished",
            LeafStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for LeafStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One exported config (leaf step).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeafExport {
    /// The leaf step, also the config name.
    pub name: String,
    /// Where the leaf stands as of the snapshot.
    pub status: LeafStatus,
    /// Rows exported.
    pub rows: u64,
    /// Committed batches exported.
    pub batches: u64,
    /// The step's error, if it failed.
    pub error: Option<String>,
    /// Data files, relative to the export directory.
    pub files: Vec<String>,
    /// Per column, the non-finite floats (NaN, ±Infinity) written as null: all of them in
    /// JSON Lines (JSON has no such numbers), in Parquet only those inside a text column of
    /// mixed kinds (float columns keep them as floats).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub non_finite_as_null: BTreeMap<String, u64>,
}

/// What was exported, also written as `distiset.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distiset {
    /// The pipeline's name.
    pub pipeline_name: String,
    /// Its description.
    pub description: Option<String>,
    /// Its signature.
    pub signature: String,
    /// The run's status as of the snapshot.
    pub run_status: RunStatus,
    /// The run's current stage.
    pub stage: Option<u32>,
    /// Number of log entries in the snapshot: the point in the run the export shows.
    pub snapshot_log: u64,
    /// Data file format.
    pub format: ExportFormat,
    /// One per leaf.
    pub leaves: Vec<LeafExport>,
    /// Every file the export wrote (this one included), relative to the export directory and
    /// `/`-separated: what a later export into the same directory replaces, and all it touches.
    pub files: Vec<String>,
}

/// Exports the run in `db` to `out`, which must be missing, empty, or hold only the files of
/// earlier distill exports (those are replaced; anything else is refused and left untouched).
pub fn export(db: &Path, out: &Path, format: ExportFormat) -> Result<Distiset> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let meta = snapshot.meta()?;
    let spec = PipelineSpec::from_yaml(&meta.pipeline, db)?;
    let run = snapshot.run_state()?;
    let mut distiset = Distiset {
        pipeline_name: spec.name.clone(),
        description: spec.description.clone(),
        signature: meta.signature.clone(),
        run_status: run.status,
        stage: run.stage,
        snapshot_log: snapshot.log_len()?,
        format,
        leaves: Vec::new(),
        files: Vec::new(),
    };
    for leaf in spec.safe_leaves()? {
        let record = snapshot.step(&leaf)?.unwrap_or_default();
        distiset.leaves.push(LeafExport {
            name: leaf,
            status: LeafStatus::of(&record),
            rows: 0,
            batches: record.batches,
            error: record.error,
            files: Vec::new(),
            non_finite_as_null: BTreeMap::new(),
        });
    }
    if distiset.leaves.iter().all(|l| l.batches == 0) {
        return Err(Error::NothingToExport {
            detail: format!(
                "no leaf step of {} has committed a batch yet (run status: {})",
                db.display(),
                run.status
            ),
        });
    }
    let mut out = out::OutDir::prepare(out, db)?;
    let staging = out::Staging::create(&out)?;
    write_all(
        |_| vec![&snapshot],
        &staging.path,
        &meta.pipeline,
        &mut distiset,
    )?;
    out.commit(&staging.path, &distiset.files)?;
    drop(staging);
    out.finish();
    Ok(distiset)
}

/// Writes the whole export into `dir`, `distiset.json` last (it lists every file); each
/// leaf's rows come from the snapshots `sources` gives for it, one after the other.
fn write_all<'s>(
    sources: impl Fn(&str) -> Vec<&'s Snapshot>,
    dir: &Path,
    pipeline: &str,
    d: &mut Distiset,
) -> Result<()> {
    write_file(&dir.join("pipeline.yaml"), pipeline.as_bytes())?;
    d.files.push("pipeline.yaml".into());
    for leaf in &mut d.leaves {
        let split = dir.join(&leaf.name).join("train");
        create_dir(&split)?;
        let name = format!("data-00000.{}", d.format.extension());
        let file = split.join(&name);
        (leaf.rows, leaf.non_finite_as_null) = match d.format {
            ExportFormat::Jsonl => jsonl::write(&sources(&leaf.name), &leaf.name, &file)?,
            ExportFormat::Parquet => parquet_file(&sources(&leaf.name), &leaf.name, &file)?,
        };
        leaf.files.push(format!("{}/train/{name}", leaf.name));
        d.files.extend(leaf.files.iter().cloned());
    }
    write_file(&dir.join("README.md"), dataset_card(d).as_bytes())?;
    d.files.push("README.md".into());
    d.files.push(out::MANIFEST.into());
    let manifest = dir.join(out::MANIFEST);
    let json = serde_json::to_vec_pretty(&*d).map_err(|e| Error::Io {
        path: manifest.clone(),
        source: e.into(),
    })?;
    write_file(&manifest, &json)
}

/// A leaf step's committed rows in `snapshot` as Arrow record batches of at most
/// [`ROWS_PER_GROUP`] rows, with the column types of the Parquet export (two passes over the
/// snapshot: infer the types, then build the arrays).
pub fn leaf_batches(
    snapshot: &Snapshot,
    step: &str,
) -> Result<(arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>)> {
    let mut inferred = Inferred::default();
    for batch in snapshot.batches(step, 0)? {
        for row in &batch?.rows {
            inferred.add(row);
        }
    }
    let mut out = Vec::new();
    let mut pending: Vec<distill_storage::Row> = Vec::new();
    for batch in snapshot.batches(step, 0)? {
        pending.extend(batch?.rows);
        while pending.len() >= ROWS_PER_GROUP {
            let rest = pending.split_off(ROWS_PER_GROUP);
            out.push(record_batch(&inferred, &pending)?);
            pending = rest;
        }
    }
    if !pending.is_empty() || out.is_empty() {
        out.push(record_batch(&inferred, &pending)?);
    }
    Ok((std::sync::Arc::new(arrow_schema(&inferred)), out))
}

/// Two passes over the same snapshot: infer the column types, then write the rows.
/// Rows of a leaf at most that an export keeps in memory between its schema pass and its
/// write (about 32 MB of 2 KB rows), instead of reading them from the log a second time.
const ROWS_READ_ONCE: usize = 16_384;

fn parquet_file(
    snapshots: &[&Snapshot],
    step: &str,
    file: &Path,
) -> Result<(u64, BTreeMap<String, u64>)> {
    // The schema comes from every row first; a small leaf's rows are kept from that pass, so
    // they are read from the log (and decompressed) once.
    let mut inferred = Inferred::default();
    let mut kept: Option<Vec<Vec<Row>>> = Some(Vec::new());
    let mut kept_rows = 0;
    for batch in batches_of(snapshots, step)? {
        let rows = batch?.rows;
        for row in &rows {
            inferred.add(row);
        }
        kept_rows += rows.len();
        match kept.as_mut() {
            Some(k) if kept_rows <= ROWS_READ_ONCE => k.push(rows),
            _ => kept = None,
        }
    }
    let out = std::fs::File::create(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let written = match kept {
        Some(batches) => {
            let batches = batches.into_iter().map(Ok::<_, Error>);
            write_parquet_counted(out, &inferred, batches)
        }
        None => {
            let batches = batches_of(snapshots, step)?.map(|b| b.map(|b| b.rows));
            write_parquet_counted(out, &inferred, batches)
        }
    };
    let (out, written) = written.map_err(|e| match e {
        Error::Parquet { path: None, source } => Error::Parquet {
            path: Some(file.to_path_buf()),
            source,
        },
        other => other,
    })?;
    out.sync_all().map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    Ok((written.rows, written.non_finite_as_null))
}

/// The committed batches of `step` in each of `snapshots`, one snapshot after the other.
fn batches_of(
    snapshots: &[&Snapshot],
    step: &str,
) -> Result<impl Iterator<Item = distill_storage::Result<distill_storage::Batch>> + use<>> {
    let mut all = Vec::with_capacity(snapshots.len());
    for snapshot in snapshots {
        all.push(snapshot.batches(step, 0)?);
    }
    Ok(all.into_iter().flatten())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` and syncs it: it is renamed into place next, and a rename must not
/// reach the disk before the data does.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
