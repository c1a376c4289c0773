//! Writes a leaf's rows as JSON Lines.

use crate::error::{Error, Result};
use distill_storage::Snapshot;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes every committed row of `step` in `snapshots` (one after the other) to `file`;
/// returns the row count and,
/// per column, the non-finite floats (NaN, ±Infinity) written as null: JSON has no such
/// numbers, and null keeps a float column float for readers such as `datasets`.
pub fn write(
    snapshots: &[&Snapshot],
    step: &str,
    file: &Path,
) -> Result<(u64, BTreeMap<String, u64>)> {
    let io = |source| Error::Io {
        path: file.to_path_buf(),
        source,
    };
    let mut w = BufWriter::new(std::fs::File::create(file).map_err(io)?);
    let mut rows = 0;
    let mut lost = BTreeMap::new();
    for batch in crate::batches_of(snapshots, step)? {
        for row in batch?.rows {
            for (column, value) in row.iter() {
                let n = crate::schema::non_finite(value);
                if n > 0 {
                    *lost.entry(column.to_owned()).or_insert(0) += n;
                }
            }
            serde_json::to_writer(&mut w, &row.to_json()).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
            rows += 1;
        }
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok((rows, lost))
}
