//! Rows of a CSV file with a header row.

use super::RowReader;
use super::files::open_decoded;
use crate::step::StepResult;
use distill_storage::{Row, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a CSV file (plain, `.gz` or `.zst`) with a header row. Every cell is a string, except
/// an empty cell, which is null. A header naming a column twice, or a record of another length
/// than the header, is an error naming the file (and the line).
pub struct CsvRows {
    path: PathBuf,
    columns: Vec<String>,
    records: csv::StringRecordsIntoIter<Box<dyn Read + Send + Sync>>,
}

impl CsvRows {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path, delimiter: u8) -> StepResult<Self> {
        let reader: Box<dyn Read + Send + Sync> = Box::new(open_decoded(path)?);
        let mut csv = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .from_reader(reader);
        let columns: Vec<String> = csv
            .headers()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .iter()
            .map(str::to_owned)
            .collect();
        for (i, c) in columns.iter().enumerate() {
            if let Some(first) = columns[..i].iter().position(|x| x == c) {
                return Err(format!(
                    "{}: the header names column '{c}' twice (columns {} and {}); rename one",
                    path.display(),
                    first + 1,
                    i + 1
                )
                .into());
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns,
            records: csv.into_records(),
        })
    }

    /// The header's columns.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

impl RowReader for CsvRows {
    fn read_row(&mut self) -> StepResult<Option<Row>> {
        let Some(record) = self.records.next() else {
            return Ok(None);
        };
        let record = record.map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(Some(
            self.columns
                .iter()
                .zip(record.iter())
                .map(|(c, cell)| {
                    let v = if cell.is_empty() {
                        Value::Null
                    } else {
                        Value::Str(cell.to_owned())
                    };
                    (c.clone(), v)
                })
                .collect(),
        ))
    }
}
