//! The data files of a Hub split as a [`FileSet`]: each downloaded into the cache when its
//! turn comes, with the next one fetched ahead on a thread while it is read (unless the rows
//! still wanted end in this one), and read with the loaders' own readers.

use super::Format;
use super::cache::Cache;
use crate::client::HubClient;
use crate::error::{Error, Result};
use crate::reads::RepoFile;
use distill_distiset::read::{
    DECODE_ROWS, IpcRows, ParquetFile, Prefixed, footer_len, footer_rows,
};
use distill_engine::input::{CsvRows, FileRows, FileSet, JsonlRows, RowsOf, skip_rows};
use distill_engine::step::StepResult;
use distill_storage::Row;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Bytes read from the end of a remote Parquet file to find its row count (most footers fit).
const TAIL_GUESS: u64 = 64 * 1024;

/// The files of one split of a repository at one commit.
pub struct HubFiles {
    pub(super) client: Arc<HubClient>,
    pub(super) cache: Cache,
    pub(super) repo: String,
    pub(super) sha: String,
    pub(super) files: Vec<RepoFile>,
    pub(super) format: Format,
    pub(super) columns: Vec<String>,
    /// Row counts learnt so far (Parquet footers).
    rows: Vec<Option<u64>>,
    /// The file being fetched ahead.
    ahead: Option<(usize, JoinHandle<Result<PathBuf>>)>,
    stop: Arc<AtomicBool>,
}

impl HubFiles {
    /// The files `files` of `repo` at commit `sha`, all of `format`, read for `columns`.
    pub fn new(
        client: Arc<HubClient>,
        cache: Cache,
        repo: String,
        sha: String,
        files: Vec<RepoFile>,
        format: Format,
    ) -> Self {
        let n = files.len();
        Self {
            client,
            cache,
            repo,
            sha,
            files,
            format,
            columns: Vec::new(),
            rows: vec![None; n],
            ahead: None,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The local copy of file `index`, downloading it (or waiting for its fetch ahead).
    pub fn local(&mut self, index: usize) -> Result<PathBuf> {
        if let Some((at, handle)) = self.ahead.take() {
            let fetched = handle.join().unwrap_or_else(|_| {
                Err(Error::Download {
                    repo: self.repo.clone(),
                    path: self.files[at].path.clone(),
                    detail: "the download thread panicked".into(),
                })
            });
            if at == index {
                return fetched;
            }
        }
        self.cache.fetch(
            &self.client,
            &self.repo,
            &self.sha,
            &self.files[index],
            &self.stop,
        )
    }

    /// Starts fetching file `index` on a thread, unless it is cached or one is in flight.
    fn fetch_ahead(&mut self, index: usize) -> Result<()> {
        if index >= self.files.len()
            || self.ahead.is_some()
            || self.cache.cached(&self.repo, &self.files[index])?.is_some()
        {
            return Ok(());
        }
        let (client, cache, stop) = (self.client.clone(), self.cache.clone(), self.stop.clone());
        let (repo, sha, file) = (
            self.repo.clone(),
            self.sha.clone(),
            self.files[index].clone(),
        );
        let handle = std::thread::Builder::new()
            .name("distill-hub-fetch".into())
            .spawn(move || cache.fetch(&client, &repo, &sha, &file, &stop))
            .map_err(|e| Error::Cache {
                path: PathBuf::from(&self.files[index].path),
                source: e,
            })?;
        self.ahead = Some((index, handle));
        Ok(())
    }

    fn data_error(&self, index: usize, source: distill_engine::step::StepError) -> Error {
        Error::DataFile {
            repo: self.repo.clone(),
            path: self.files[index].path.clone(),
            source,
        }
    }

    /// The row count of Parquet file `index`, from the cached copy's footer or from the
    /// remote file's last bytes.
    fn parquet_rows(&mut self, index: usize) -> Result<u64> {
        if let Some(n) = self.rows[index] {
            return Ok(n);
        }
        let file = &self.files[index];
        let n = match self.cache.cached(&self.repo, file)? {
            Some(local) => ParquetFile::open(&local, None)
                .map_err(|e| self.data_error(index, e.into()))?
                .rows(),
            None => {
                let name = Path::new(&file.path);
                let load = |source| Error::Load {
                    repo: self.repo.clone(),
                    scope: format!("file {}", file.path),
                    source,
                };
                let guess = TAIL_GUESS.min(file.size);
                let mut tail = self
                    .client
                    .read_tail(&self.repo, &self.sha, &file.path, guess)
                    .map_err(load)?;
                let need = footer_len(name, &tail).map_err(|e| self.data_error(index, e.into()))?;
                if need > tail.len() as u64 {
                    tail = self
                        .client
                        .read_tail(&self.repo, &self.sha, &file.path, need)
                        .map_err(load)?;
                }
                footer_rows(name, &tail).map_err(|e| self.data_error(index, e.into()))?
            }
        };
        self.rows[index] = Some(n);
        Ok(n)
    }

    /// Opens the local copy `path` of file `index` at row `start`: the reader and the rows
    /// passed over.
    fn open_local(
        &mut self,
        index: usize,
        path: &Path,
        start: u64,
    ) -> StepResult<(Box<dyn FileRows>, u64)> {
        let columns = self.columns.clone();
        Ok(match self.format {
            Format::Parquet => {
                let file = ParquetFile::open(path, Some(&columns))?;
                self.rows[index] = Some(file.rows());
                let start = start.min(file.rows());
                (Box::new(file.read_from(start, DECODE_ROWS)?), start)
            }
            Format::Arrow => {
                let mut rows = IpcRows::open(path, &columns)?;
                let (skipped, first) = rows.skip(start)?;
                (Box::new(Prefixed { first, rest: rows }), skipped)
            }
            Format::Jsonl => {
                let mut rows: Box<dyn FileRows> = Box::new(Project {
                    inner: RowsOf(JsonlRows::open(path)?),
                    columns,
                });
                let skipped = skip_rows(rows.as_mut(), start)?;
                (rows, skipped)
            }
            Format::Csv(delimiter) => {
                let csv = CsvRows::open(path, delimiter)?;
                if let Some(missing) = columns.iter().find(|c| !csv.columns().contains(c)) {
                    return Err(format!(
                        "{}: its header has no column '{missing}' (it has: {})",
                        path.display(),
                        csv.columns().join(", ")
                    )
                    .into());
                }
                let mut rows: Box<dyn FileRows> = Box::new(Project {
                    inner: RowsOf(csv),
                    columns,
                });
                let skipped = skip_rows(rows.as_mut(), start)?;
                (rows, skipped)
            }
        })
    }
}

impl FileSet for HubFiles {
    fn count(&self) -> usize {
        self.files.len()
    }

    fn known_rows(&mut self, index: usize) -> StepResult<Option<u64>> {
        match self.format {
            Format::Parquet => Ok(Some(self.parquet_rows(index)?)),
            _ => Ok(None),
        }
    }

    fn open(
        &mut self,
        index: usize,
        start: u64,
        wanted: Option<u64>,
    ) -> StepResult<(Box<dyn FileRows>, u64)> {
        let path = self.local(index)?;
        let (reader, skipped) = self
            .open_local(index, &path, start)
            .map_err(|e| self.data_error(index, e))?;
        // Fetch the next file while this one is read, unless the rows wanted end here.
        let ends_here = match (self.rows[index], wanted) {
            (Some(n), Some(w)) => n.saturating_sub(skipped) >= w,
            _ => false,
        };
        if !ends_here {
            self.fetch_ahead(index + 1)?;
        }
        Ok((reader, skipped))
    }

    fn close(&mut self) {
        if let Some((_, handle)) = self.ahead.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
            self.stop.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for HubFiles {
    fn drop(&mut self) {
        self.close();
    }
}

/// Rows of a text format with exactly `columns`, in that order (absent ones null).
struct Project<R> {
    inner: R,
    columns: Vec<String>,
}

impl<R: FileRows> FileRows for Project<R> {
    fn next_rows(&mut self, max: usize) -> StepResult<Option<Vec<Row>>> {
        Ok(self.inner.next_rows(max)?.map(|rows| {
            rows.into_iter()
                .map(|mut row| {
                    if row.columns().eq(self.columns.iter().map(String::as_str)) {
                        return row;
                    }
                    self.columns
                        .iter()
                        .map(|c| (c.clone(), row.remove(c).unwrap_or_default()))
                        .collect()
                })
                .collect()
        }))
    }
}
