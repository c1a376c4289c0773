//! Reading a run, finished or live (from one snapshot, never blocking the writer): status,
//! export, and the leaves as Arrow tables.

use crate::convert::to_py;
use crate::errors::{DistillError, to_py as err};
use distill::ExportFormat;
use distill_storage::RunReader;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// The status of the run in `db`: the run, each step (state, rows, counters, error with a
/// Python step's traceback) and its pushes, as `distill status --json` prints it.
#[pyfunction]
pub fn status(py: Python<'_>, db: PathBuf) -> PyResult<Bound<'_, PyAny>> {
    let status = py.detach(|| distill::status(&db)).map_err(err)?;
    to_py(py, &status)
}

/// Exports the distiset of the run in `db` to `out` (`format`: `parquet` or `jsonl`), as
/// `distill export` does; returns what `distiset.json` says.
#[pyfunction]
#[pyo3(signature = (db, out, format = "parquet"))]
pub fn export<'py>(
    py: Python<'py>,
    db: PathBuf,
    out: PathBuf,
    format: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let format = match format {
        "parquet" => ExportFormat::Parquet,
        "jsonl" => ExportFormat::Jsonl,
        other => {
            return Err(DistillError::new_err(format!(
                "format is 'parquet' or 'jsonl', not '{other}'"
            )));
        }
    };
    let distiset = py
        .detach(|| distill::export(&db, &out, format))
        .map_err(|e| err(e.into()))?;
    to_py(py, &distiset)
}

/// Each leaf of the run in `db` as a `pyarrow.Table` (the committed rows, with the Parquet
/// export's column types), from one snapshot: a live run too.
#[pyfunction]
pub fn load_tables(py: Python<'_>, db: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let leaves = py
        .detach(|| -> distill::Result<_> {
            let reader = RunReader::open(&db)?;
            let snapshot = reader.snapshot()?;
            let spec = distill::PipelineSpec::from_yaml(&snapshot.meta()?.pipeline, &db)?;
            let mut leaves = Vec::new();
            for leaf in spec.safe_leaves()? {
                let (schema, batches) = distill_distiset::leaf_batches(&snapshot, &leaf)?;
                leaves.push((leaf, schema, batches));
            }
            Ok(leaves)
        })
        .map_err(err)?;
    let out = PyDict::new(py);
    for (leaf, schema, batches) in leaves {
        out.set_item(leaf, crate::arrow::table(py, &schema, &batches)?)?;
    }
    Ok(out)
}
