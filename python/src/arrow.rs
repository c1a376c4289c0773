//! Rows as `pyarrow` tables and back, through the Arrow IPC stream format: columns cross the
//! boundary as Arrow buffers (no JSON, no Python object per value), with the column types of
//! the Parquet export.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use distill_distiset::{Inferred, record_batch};
use distill_storage::Row;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

fn arrow_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("Arrow: {e}"))
}

/// Record batches as Arrow IPC stream bytes.
pub fn ipc_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(arrow_err)?;
        for batch in batches {
            writer.write(batch).map_err(arrow_err)?;
        }
        writer.finish().map_err(arrow_err)?;
    }
    Ok(out)
}

/// Record batches as a `pyarrow.Table`.
pub fn table<'py>(
    py: Python<'py>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> PyResult<Bound<'py, PyAny>> {
    let bytes = ipc_bytes(schema, batches)?;
    py.import("distill._arrow")?
        .call_method1("from_ipc", (PyBytes::new(py, &bytes),))
}

/// Rows as a `pyarrow.Table` (types inferred from the values, as the export does).
pub fn rows_to_table<'py>(py: Python<'py>, rows: &[Row]) -> PyResult<Bound<'py, PyAny>> {
    let mut inferred = Inferred::default();
    for row in rows {
        inferred.add(row);
    }
    let batch = record_batch(&inferred, rows).map_err(arrow_err)?;
    table(py, &batch.schema(), &[batch])
}

/// A `pyarrow.Table` or `RecordBatch` (anything `distill._arrow.to_ipc` takes) as rows.
pub fn table_to_rows(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Row>> {
    let py = obj.py();
    let bytes = py
        .import("distill._arrow")?
        .call_method1("to_ipc", (obj,))?;
    let bytes = bytes.cast::<PyBytes>()?;
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.as_bytes()), None)
            .map_err(arrow_err)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err)?;
        if let Some(field) = batch
            .schema()
            .fields()
            .iter()
            .find(|f| distill_distiset::read::unsupported(f.data_type()).is_some())
        {
            return Err(PyValueError::new_err(format!(
                "column '{}' has Arrow type {}, which distill cannot store",
                field.name(),
                field.data_type()
            )));
        }
        rows.extend(distill_distiset::read::batch_rows(&batch));
    }
    Ok(rows)
}
