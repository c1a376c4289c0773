//! The rows of a sequence of files as one stream, positioned by row: what every file
//! generator's `generate(offset, count)` reads from.

use crate::step::StepResult;
use distill_storage::Row;
use std::collections::VecDeque;

/// The rows of one open file, in order.
pub trait FileRows: Send + Sync {
    /// Up to `max` next rows (at least one), or `None` at the end of the file.
    fn next_rows(&mut self, max: usize) -> StepResult<Option<Vec<Row>>>;
}

/// The files a [`RowStream`] reads, in order.
pub trait FileSet: Send + Sync {
    /// How many files there are.
    fn count(&self) -> usize;

    /// The rows of file `index` when known without reading its data (a Parquet footer says
    /// it), so that a seek can pass over the file.
    fn known_rows(&mut self, index: usize) -> StepResult<Option<u64>> {
        let _ = index;
        Ok(None)
    }

    /// Opens file `index` at its row `start` (reading past earlier rows where the format has
    /// no index), returning the reader and the rows it passed over: fewer than `start` when
    /// the file has fewer rows. `wanted` is how many rows the stream still needs after
    /// `start`, when a limit says so (a loader may fetch the next file ahead otherwise).
    fn open(
        &mut self,
        index: usize,
        start: u64,
        wanted: Option<u64>,
    ) -> StepResult<(Box<dyn FileRows>, u64)>;

    /// Releases what the set holds open or in flight (called on unload).
    fn close(&mut self) {}
}

/// Reads past `n` rows of `reader`; returns how many there were (fewer at the end).
pub fn skip_rows(reader: &mut dyn FileRows, n: u64) -> StepResult<u64> {
    let mut skipped = 0;
    while skipped < n {
        let want = usize::try_from(n - skipped).unwrap_or(usize::MAX).min(4096);
        match reader.next_rows(want)? {
            Some(rows) => skipped += rows.len() as u64,
            None => break,
        }
    }
    Ok(skipped)
}

/// The rows of a [`FileSet`], one file after the other, cut at an optional `limit`. It keeps
/// its place between calls, so consecutive reads stream; a read at another row (a resumed run)
/// seeks: files whose row count is known are passed over unread.
pub struct RowStream<S> {
    set: S,
    limit: Option<u64>,
    /// The file the reader reads.
    file: usize,
    reader: Option<Box<dyn FileRows>>,
    /// Row number of the next row (the first of `buffer`, if any).
    position: u64,
    /// Rows read but not returned yet.
    buffer: VecDeque<Row>,
    /// Whether the reader is positioned at all (false before the first read and after close).
    positioned: bool,
}

impl<S: FileSet> RowStream<S> {
    /// A stream over `set`, ending after `limit` rows when given.
    pub fn new(set: S, limit: Option<u64>) -> Self {
        Self {
            set,
            limit,
            file: 0,
            reader: None,
            position: 0,
            buffer: VecDeque::new(),
            positioned: false,
        }
    }

    /// The files.
    pub fn set(&self) -> &S {
        &self.set
    }

    /// The files, to change them (a pinned revision).
    pub fn set_mut(&mut self) -> &mut S {
        self.close();
        &mut self.set
    }

    /// Forgets the position and closes the open file; the next read seeks again.
    pub fn close(&mut self) {
        self.reader = None;
        self.buffer.clear();
        self.positioned = false;
        self.set.close();
    }

    fn wanted_after(&self, row: u64) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(row))
    }

    /// How many rows the stream has (the limit at most): files whose row count is known are
    /// not read, the others are read through once.
    pub fn total_rows(&mut self) -> StepResult<u64> {
        let mut total = 0u64;
        for file in 0..self.set.count() {
            if self.limit.is_some_and(|l| total >= l) {
                break;
            }
            total += match self.set.known_rows(file)? {
                Some(n) => n,
                None => {
                    let wanted = self.wanted_after(total);
                    let (mut reader, _) = self.set.open(file, 0, wanted)?;
                    skip_rows(reader.as_mut(), u64::MAX)?
                }
            };
        }
        self.close();
        Ok(self.limit.map_or(total, |l| total.min(l)))
    }

    /// Places the stream at row `offset`.
    fn seek(&mut self, offset: u64) -> StepResult<()> {
        self.reader = None;
        self.buffer.clear();
        let mut at = 0u64;
        let mut file = 0;
        while file < self.set.count() {
            if let Some(n) = self.set.known_rows(file)?
                && at + n <= offset
            {
                at += n;
                file += 1;
                continue;
            }
            let start = offset - at;
            let wanted = self.wanted_after(offset);
            let (reader, skipped) = self.set.open(file, start, wanted)?;
            at += skipped;
            if skipped == start {
                self.reader = Some(reader);
                break;
            }
            file += 1;
        }
        self.file = file;
        self.position = at;
        self.positioned = true;
        Ok(())
    }

    /// Fills the buffer with the next rows (up to `max`); false at the end of the last file.
    fn fill(&mut self, max: usize) -> StepResult<bool> {
        loop {
            if let Some(reader) = &mut self.reader {
                if let Some(rows) = reader.next_rows(max.max(1))? {
                    if rows.is_empty() {
                        continue;
                    }
                    self.buffer.extend(rows);
                    return Ok(true);
                }
                self.reader = None;
                self.file += 1;
            }
            if self.file >= self.set.count() {
                return Ok(false);
            }
            let row = self.position + self.buffer.len() as u64;
            let wanted = self.wanted_after(row);
            let (reader, _) = self.set.open(self.file, 0, wanted)?;
            self.reader = Some(reader);
        }
    }

    /// Up to `count` rows from row `offset`, and whether no row follows them: what
    /// [`crate::step::Generator::generate`] returns.
    pub fn read(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let rows = self.take(offset, count)?;
        let at_limit = self.limit.is_some_and(|l| self.position >= l);
        let last = at_limit || (self.buffer.is_empty() && !self.fill(1)?);
        Ok((rows, last))
    }

    /// Up to `count` rows from row `offset`, without looking further (the first rows, to
    /// learn the columns, stop exactly there).
    pub fn take(&mut self, offset: u64, count: usize) -> StepResult<Vec<Row>> {
        if !self.positioned || self.position != offset {
            self.seek(offset)?;
        }
        let count = match self.limit {
            Some(limit) => {
                count.min(usize::try_from(limit.saturating_sub(offset)).unwrap_or(usize::MAX))
            }
            None => count,
        };
        let mut rows = Vec::with_capacity(count.min(1 << 16));
        while rows.len() < count {
            if self.buffer.is_empty() && !self.fill(count - rows.len())? {
                break;
            }
            let take = (count - rows.len()).min(self.buffer.len());
            rows.extend(self.buffer.drain(..take));
        }
        self.position = offset + rows.len() as u64;
        Ok(rows)
    }
}

/// Files of a text format (JSONL, CSV), each opened by `open` and read row by row.
pub struct TextFiles<R> {
    files: Vec<std::path::PathBuf>,
    open: super::Opener<R>,
}

impl<R> TextFiles<R> {
    /// `files`, each opened with `open`.
    pub fn new(files: Vec<std::path::PathBuf>, open: super::Opener<R>) -> Self {
        Self { files, open }
    }

    /// The files.
    pub fn files(&self) -> &[std::path::PathBuf] {
        &self.files
    }
}

impl<R: super::RowReader + 'static> FileSet for TextFiles<R> {
    fn count(&self) -> usize {
        self.files.len()
    }

    fn open(
        &mut self,
        index: usize,
        start: u64,
        _wanted: Option<u64>,
    ) -> StepResult<(Box<dyn FileRows>, u64)> {
        let mut reader: Box<dyn FileRows> = Box::new(RowsOf((self.open)(&self.files[index])?));
        let skipped = skip_rows(reader.as_mut(), start)?;
        Ok((reader, skipped))
    }
}

/// A [`super::RowReader`] read in batches.
pub struct RowsOf<R>(pub R);

impl<R: super::RowReader> FileRows for RowsOf<R> {
    fn next_rows(&mut self, max: usize) -> StepResult<Option<Vec<Row>>> {
        let mut rows = Vec::with_capacity(max.min(4096));
        while rows.len() < max {
            match self.0.read_row()? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Files of known sizes holding consecutive numbers; logs every open as (file, start).
    struct Numbers {
        sizes: Vec<u64>,
        known: bool,
        opens: Arc<Mutex<Vec<(usize, u64)>>>,
    }

    struct Range {
        next: u64,
        end: u64,
    }

    impl FileRows for Range {
        fn next_rows(&mut self, max: usize) -> StepResult<Option<Vec<Row>>> {
            let end = self.end.min(self.next + max as u64);
            let rows: Vec<Row> = (self.next..end)
                .map(|i| Row::new().with("i", i as i64))
                .collect();
            self.next = end;
            Ok((!rows.is_empty()).then_some(rows))
        }
    }

    impl FileSet for Numbers {
        fn count(&self) -> usize {
            self.sizes.len()
        }

        fn known_rows(&mut self, index: usize) -> StepResult<Option<u64>> {
            Ok(self.known.then(|| self.sizes[index]))
        }

        fn open(
            &mut self,
            index: usize,
            start: u64,
            _wanted: Option<u64>,
        ) -> StepResult<(Box<dyn FileRows>, u64)> {
            self.opens.lock().unwrap().push((index, start));
            let first: u64 = self.sizes[..index].iter().sum();
            let skipped = start.min(self.sizes[index]);
            let reader = Range {
                next: first + skipped,
                end: first + self.sizes[index],
            };
            Ok((Box::new(reader), skipped))
        }
    }

    fn numbers(rows: &[Row]) -> Vec<i64> {
        rows.iter()
            .map(|r| r.get("i").unwrap().as_int().unwrap())
            .collect()
    }

    #[test]
    fn streams_across_files_and_seeks_past_files_of_known_size() {
        for known in [true, false] {
            let opens = Arc::new(Mutex::new(Vec::new()));
            let set = Numbers {
                sizes: vec![3, 0, 4, 2],
                known,
                opens: opens.clone(),
            };
            let mut stream = RowStream::new(set, None);
            let mut all = Vec::new();
            loop {
                let (rows, last) = stream.read(all.len() as u64, 2).unwrap();
                all.extend(numbers(&rows));
                if last {
                    break;
                }
            }
            assert_eq!(all, (0..9).collect::<Vec<_>>());
            // A seek (a resumed run) to row 5: with known sizes, only file 2 is opened, at 2.
            opens.lock().unwrap().clear();
            stream.close();
            let (rows, last) = stream.read(5, 3).unwrap();
            assert_eq!(numbers(&rows), vec![5, 6, 7]);
            assert!(!last);
            let opened = opens.lock().unwrap().clone();
            if known {
                assert_eq!(opened, vec![(2, 2), (3, 0)]);
            } else {
                assert_eq!(opened[..3], [(0, 5), (1, 2), (2, 2)]);
            }
        }
    }

    #[test]
    fn a_limit_ends_the_stream_without_opening_further_files() {
        let opens = Arc::new(Mutex::new(Vec::new()));
        let set = Numbers {
            sizes: vec![3, 4, 2],
            known: false,
            opens: opens.clone(),
        };
        let mut stream = RowStream::new(set, Some(3));
        let (rows, last) = stream.read(0, 10).unwrap();
        assert_eq!(numbers(&rows), vec![0, 1, 2]);
        assert!(last);
        assert_eq!(opens.lock().unwrap().clone(), vec![(0, 0)]);
        let (rows, last) = stream.read(3, 10).unwrap();
        assert!(rows.is_empty() && last);
    }
}
