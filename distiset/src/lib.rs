//! The distiset: a run's output dataset, one config per leaf step, exported from one consistent
//! snapshot of the run log (also while the run goes on, from another process).
//!
//! Layout: `DIR/README.md` (dataset card, configs in its front matter), `DIR/CONFIG/train/*.parquet`
//! (or `.jsonl`), `DIR/pipeline.yaml`, `DIR/distiset.json` (run and leaf status). The export is
//! built in a temporary directory beside `DIR` and renamed into place. Column types follow the
//! rules of [`Inferred`]; [`write_parquet`] is the one Parquet writer (the Hub's shards use it).
#![deny(missing_docs)]

mod card;
mod error;
mod jsonl;
mod parquet;
mod schema;

pub use card::dataset_card;
pub use error::{Error, Result};
pub use parquet::{ROWS_PER_GROUP, arrow_schema, write_parquet};
pub use schema::{Inferred, Ty};

use distill_engine::PipelineSpec;
use distill_storage::{RunReader, RunStatus, Snapshot, StepRecord, StepState};
use serde::Serialize;
use std::path::{Path, PathBuf};

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
}

/// Exports the run in `db` to `out` (replacing an earlier distill export there).
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
    };
    for leaf in spec.leaves() {
        let record = snapshot.step(&leaf)?.unwrap_or_default();
        distiset.leaves.push(LeafExport {
            name: leaf,
            status: LeafStatus::of(&record),
            rows: 0,
            batches: record.batches,
            error: record.error,
            files: Vec::new(),
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
    let staging = sibling(out, ".distill-export-tmp");
    let _ = std::fs::remove_dir_all(&staging);
    write_all(&snapshot, &staging, &meta.pipeline, &mut distiset)?;
    replace_dir(&staging, out)?;
    Ok(distiset)
}

fn write_all(snapshot: &Snapshot, dir: &Path, pipeline: &str, d: &mut Distiset) -> Result<()> {
    create_dir(dir)?;
    write_file(&dir.join("pipeline.yaml"), pipeline.as_bytes())?;
    for leaf in &mut d.leaves {
        let split = dir.join(&leaf.name).join("train");
        create_dir(&split)?;
        let name = format!("data-00000.{}", d.format.extension());
        let file = split.join(&name);
        leaf.rows = match d.format {
            ExportFormat::Jsonl => jsonl::write(snapshot, &leaf.name, &file)?,
            ExportFormat::Parquet => parquet_file(snapshot, &leaf.name, &file)?,
        };
        leaf.files.push(format!("{}/train/{name}", leaf.name));
    }
    let json = serde_json::to_vec_pretty(&*d).map_err(|e| Error::Io {
        path: dir.join("distiset.json"),
        source: e.into(),
    })?;
    write_file(&dir.join("distiset.json"), &json)?;
    write_file(&dir.join("README.md"), dataset_card(d).as_bytes())
}

/// Two passes over the same snapshot: infer the column types, then write the rows.
fn parquet_file(snapshot: &Snapshot, step: &str, file: &Path) -> Result<u64> {
    let mut inferred = Inferred::default();
    for batch in snapshot.batches(step, 0)? {
        for row in &batch?.rows {
            inferred.add(row);
        }
    }
    let out = std::fs::File::create(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let rows = snapshot.batches(step, 0)?.map(|b| b.map(|b| b.rows));
    let (_, count) = write_parquet(out, &inferred, rows).map_err(|e| match e {
        Error::Parquet { path: None, source } => Error::Parquet {
            path: Some(file.to_path_buf()),
            source,
        },
        other => other,
    })?;
    Ok(count)
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    out.with_file_name(name)
}

/// Puts `staging` at `out`; an earlier distill export there is replaced, anything else refused.
fn replace_dir(staging: &Path, out: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: out.to_path_buf(),
        source,
    };
    if out.exists() {
        let ours = out.join("distiset.json").exists();
        let empty = std::fs::read_dir(out).map_err(io)?.next().is_none();
        if !ours && !empty {
            let _ = std::fs::remove_dir_all(staging);
            return Err(Error::NotAnExport {
                path: out.to_path_buf(),
            });
        }
        let old = sibling(out, ".distill-export-old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old).map_err(io)?;
        std::fs::rename(staging, out).map_err(io)?;
        let _ = std::fs::remove_dir_all(&old);
        return Ok(());
    }
    std::fs::rename(staging, out).map_err(io)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
