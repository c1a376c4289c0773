//! Reading rows from files: the readers behind `load_jsonl` and `load_csv`, public so that
//! other crates' generators (the Hub loader) read the same formats the same way.
//!
//! A `path` parameter ([`Paths`]) names a file, a directory, a glob or a list of them
//! ([`expand`]); files ending in `.gz` or `.zst` are decompressed as they are read
//! ([`open_decoded`]). [`RowChain`] streams the rows of several files as one sequence, and
//! [`fingerprint`] says whether a set of files changed without reading them.

mod csv;
mod files;
mod jsonl;

pub use self::csv::CsvRows;
pub use files::{
    Compression, Paths, expand, fingerprint, has_extension, open_decoded, size_and_mtime,
};
pub use jsonl::JsonlRows;

use crate::step::StepResult;
use distill_storage::Row;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A reader of one file's rows, in order.
pub trait RowReader: Send + Sync {
    /// The next row, or `None` at the end of the file.
    fn read_row(&mut self) -> StepResult<Option<Row>>;
}

/// Opens one file of a [`RowChain`].
pub type Opener<R> = Arc<dyn Fn(&Path) -> StepResult<R> + Send + Sync>;

/// The rows of several files, one after the other, with the position of the next row. A read
/// at another position (a resumed run) starts over from the first file and skips to it: rows
/// of text formats have no index.
pub struct RowChain<R> {
    files: Vec<PathBuf>,
    open: Opener<R>,
    /// Index of the next file to open.
    next_file: usize,
    reader: Option<R>,
    /// Rows returned so far.
    position: u64,
    /// A row read ahead to know whether another follows.
    peeked: Option<Row>,
}

impl<R: RowReader> RowChain<R> {
    /// A chain over `files`, each opened with `open` when its turn comes.
    pub fn new(files: Vec<PathBuf>, open: Opener<R>) -> Self {
        Self {
            files,
            open,
            next_file: 0,
            reader: None,
            position: 0,
            peeked: None,
        }
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Rows returned so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn read_row(&mut self) -> StepResult<Option<Row>> {
        loop {
            if let Some(reader) = &mut self.reader {
                if let Some(row) = reader.read_row()? {
                    return Ok(Some(row));
                }
                self.reader = None;
            }
            let Some(file) = self.files.get(self.next_file) else {
                return Ok(None);
            };
            self.reader = Some((self.open)(file)?);
            self.next_file += 1;
        }
    }

    /// The next row, or `None` after the last file.
    pub fn next_row(&mut self) -> StepResult<Option<Row>> {
        let row = match self.peeked.take() {
            Some(row) => Some(row),
            None => self.read_row()?,
        };
        if row.is_some() {
            self.position += 1;
        }
        Ok(row)
    }

    /// Whether another row follows.
    pub fn has_more(&mut self) -> StepResult<bool> {
        if self.peeked.is_none() {
            self.peeked = self.read_row()?;
        }
        Ok(self.peeked.is_some())
    }

    /// Back to the first row.
    pub fn rewind(&mut self) {
        self.next_file = 0;
        self.reader = None;
        self.position = 0;
        self.peeked = None;
    }

    /// Up to `count` rows from row `offset`, and whether no row follows them: what
    /// [`crate::step::Generator::generate`] returns.
    pub fn read(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        if self.position != offset {
            self.rewind();
            while self.position < offset && self.next_row()?.is_some() {}
        }
        let mut rows = Vec::with_capacity(count.min(1 << 16));
        while rows.len() < count {
            match self.next_row()? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        let last = !self.has_more()?;
        Ok((rows, last))
    }

    /// Closes the open file (the next read opens it again where it is needed).
    pub fn close(&mut self) {
        self.rewind();
    }
}
