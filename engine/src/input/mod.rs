//! Reading rows from files: the readers behind `load_jsonl` and `load_csv`, public so that
//! other crates' generators (the Hub loader) read the same formats the same way.
//!
//! A `path` parameter ([`Paths`]) names a file, a directory, a glob or a list of them
//! ([`expand`]); files ending in `.gz` or `.zst` are decompressed as they are read
//! ([`open_decoded`]). [`RowStream`] streams the rows of a [`FileSet`] as one sequence, positioned by row (files whose row count is known, like Parquet's, are passed over unread on a seek), and
//! [`fingerprint`] says whether a set of files changed without reading them.

mod csv;
mod files;
mod jsonl;
mod stream;

pub use self::csv::CsvRows;
pub use files::{
    Compression, Paths, expand, fingerprint, has_extension, open_decoded, size_and_mtime,
};
pub use jsonl::JsonlRows;
pub use stream::{FileRows, FileSet, RowStream, RowsOf, TextFiles, skip_rows};

use crate::step::StepResult;
use distill_storage::Row;
use std::path::Path;
use std::sync::Arc;

/// Rows read to learn the columns of a format whose rows name their own (JSON Lines): the
/// columns are the union of the keys of the first this many rows, in first-seen order.
pub const COLUMN_SCAN_ROWS: usize = 1000;

/// The union of the columns of `rows`, in first-seen order.
pub fn columns_of_rows(rows: &[Row]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for c in row.columns() {
            if !columns.iter().any(|x| x == c) {
                columns.push(c.to_owned());
            }
        }
    }
    columns
}

/// A reader of one file's rows, in order.
pub trait RowReader: Send + Sync {
    /// The next row, or `None` at the end of the file.
    fn read_row(&mut self) -> StepResult<Option<Row>>;
}

/// Opens one file of [`TextFiles`].
pub type Opener<R> = Arc<dyn Fn(&Path) -> StepResult<R> + Send + Sync>;
