//! Reading Parquet and Arrow files into rows: the `load_parquet` and `load_disk` generators,
//! and the pieces other loaders share ([`ParquetFile`], [`batch_rows`]; the Hub loader reads
//! its Parquet files through them).

mod ipc_file;
mod load_disk;
mod load_parquet;
mod parquet_file;
mod values;

pub use ipc_file::{IpcRows, ipc_schema};
pub use load_disk::{LoadDisk, load_disk};
pub use load_parquet::{LoadParquet, load_parquet};
pub use parquet_file::{
    ParquetFile, ParquetRows, footer_digest, footer_len, footer_rows, select_columns,
};
pub use values::{batch_rows, unsupported, values};

use distill_engine::Registry;
use distill_engine::input::{FileRows, Paths};
use distill_engine::step::StepResult;
use distill_storage::Row;
use serde::Deserialize;

/// Rows decoded at once from a Parquet or Arrow file (the memory a reader holds is about this
/// many rows, whatever the file's size).
pub const DECODE_ROWS: usize = 2048;

/// Registers `load_parquet` and `load_disk`.
pub fn register(registry: &mut Registry) {
    registry.register("load_parquet", load_parquet);
    registry.register("load_disk", load_disk);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadParams {
    path: Paths,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<u64>,
}

/// A `columns` parameter lists at least one column, each once.
pub fn check_columns(columns: Option<&[String]>) -> StepResult<()> {
    let Some(columns) = columns else {
        return Ok(());
    };
    if columns.is_empty() {
        return Err(
            "`columns` is an empty list; name at least one column (or leave it out for all)".into(),
        );
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(format!("`columns` names '{c}' twice").into());
        }
    }
    Ok(())
}

/// Rows already read (the rest of a record batch cut by a seek), then the rest of a file.
pub struct Prefixed<R> {
    /// The rows to give first.
    pub first: Option<Vec<Row>>,
    /// The file's further rows.
    pub rest: R,
}

impl<R: FileRows> FileRows for Prefixed<R> {
    fn next_rows(&mut self, max: usize) -> StepResult<Option<Vec<Row>>> {
        match self.first.take() {
            Some(rows) => Ok(Some(rows)),
            None => self.rest.next_rows(max),
        }
    }
}
