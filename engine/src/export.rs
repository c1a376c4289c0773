//! Writes the rows of a run's leaf steps, from one consistent snapshot of the run log.

use crate::error::{Error, Result};
use crate::spec::PipelineSpec;
use distill_storage::{RunReader, Snapshot};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    /// Per leaf: name, rows written, file.
    pub leaves: Vec<(String, u64, PathBuf)>,
}

/// Exports every leaf step of the run in `db` to `out`: `out/LEAF/train/data.jsonl` plus
/// `out/pipeline.yaml`. Works on a live run (read-only, consistent snapshot).
pub fn export(db: &Path, out: &Path, format: ExportFormat) -> Result<ExportSummary> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let meta = snapshot.meta()?;
    let spec = PipelineSpec::from_yaml(&meta.pipeline, db)?;
    let leaves = spec.leaves();
    if leaves.is_empty() {
        return Err(Error::NothingToExport {
            detail: format!("the pipeline in {} has no steps", db.display()),
        });
    }
    create_dir(out)?;
    write_file(&out.join("pipeline.yaml"), meta.pipeline.as_bytes())?;
    let mut summary = ExportSummary { leaves: Vec::new() };
    for leaf in leaves {
        let dir = out.join(&leaf).join("train");
        create_dir(&dir)?;
        let file = match format {
            ExportFormat::Jsonl => dir.join("data.jsonl"),
        };
        let rows = write_jsonl(&snapshot, &leaf, &file)?;
        summary.leaves.push((leaf, rows, file));
    }
    Ok(summary)
}

fn write_jsonl(snapshot: &Snapshot, step: &str, file: &Path) -> Result<u64> {
    let io = |source| Error::Io {
        path: file.to_path_buf(),
        source,
    };
    let mut w = BufWriter::new(std::fs::File::create(file).map_err(io)?);
    let mut rows = 0;
    for batch in snapshot.batches(step, 0)? {
        for row in batch?.rows {
            serde_json::to_writer(&mut w, &row.to_json()).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
            rows += 1;
        }
    }
    w.flush().map_err(io)?;
    Ok(rows)
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
