//! One Arrow IPC file (the stream format `datasets.save_to_disk` writes, or the file format),
//! read one record batch at a time.

use super::values::{batch_rows, in_order};
use crate::error::{Error, Result};
use arrow_array::RecordBatch;
use arrow_ipc::reader::{FileReader, StreamReader};
use arrow_schema::{ArrowError, SchemaRef};
use distill_engine::input::FileRows;
use distill_engine::step::StepResult;
use distill_storage::Row;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The magic bytes that open an Arrow IPC file (not stream).
const FILE_MAGIC: &[u8; 6] = b"ARROW1";

enum Reader {
    Stream(StreamReader<BufReader<File>>),
    File(FileReader<BufReader<File>>),
}

impl Reader {
    fn schema(&self) -> SchemaRef {
        match self {
            Reader::Stream(r) => r.schema(),
            Reader::File(r) => r.schema(),
        }
    }

    fn next(&mut self) -> Option<Result<RecordBatch, ArrowError>> {
        match self {
            Reader::Stream(r) => r.next(),
            Reader::File(r) => r.next(),
        }
    }
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn open(path: &Path, projection: Option<Vec<usize>>) -> Result<Reader> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 6];
    let is_file =
        File::open(path).map_err(io)?.read_exact(&mut magic).is_ok() && &magic == FILE_MAGIC;
    let file = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
    let reader = if is_file {
        Reader::File(FileReader::try_new(file, projection).map_err(|e| read_error(path, e))?)
    } else {
        Reader::Stream(StreamReader::try_new(file, projection).map_err(|e| read_error(path, e))?)
    };
    Ok(reader)
}

/// The schema of the Arrow IPC file `path`.
pub fn ipc_schema(path: &Path) -> Result<SchemaRef> {
    Ok(open(path, None)?.schema())
}

/// Rows of an Arrow IPC file, one record batch at a time.
pub struct IpcRows {
    path: PathBuf,
    reader: Reader,
    order: Vec<String>,
}

impl IpcRows {
    /// Opens `path`, reading the columns `order` (which must be in it).
    pub fn open(path: &Path, order: &[String]) -> Result<Self> {
        let schema = ipc_schema(path)?;
        let indices = super::parquet_file::select_columns(path, &schema, Some(order))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: open(path, Some(indices))?,
            order: order.to_vec(),
        })
    }
}

impl FileRows for IpcRows {
    fn next_rows(&mut self, _max: usize) -> StepResult<Option<Vec<Row>>> {
        loop {
            match self.reader.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(read_error(&self.path, e).into()),
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => {
                    let batch =
                        in_order(batch, &self.order).map_err(|e| read_error(&self.path, e))?;
                    return Ok(Some(batch_rows(&batch)));
                }
            }
        }
    }
}

impl IpcRows {
    /// Passes over up to `n` rows, decoding whole record batches without converting them;
    /// returns how many there were. A batch cut by `n` is kept for the next read.
    pub fn skip(&mut self, n: u64) -> Result<(u64, Option<Vec<Row>>)> {
        let mut skipped = 0u64;
        while skipped < n {
            match self.reader.next() {
                None => return Ok((skipped, None)),
                Some(Err(e)) => return Err(read_error(&self.path, e)),
                Some(Ok(batch)) => {
                    let rows = batch.num_rows() as u64;
                    if skipped + rows <= n {
                        skipped += rows;
                        continue;
                    }
                    let cut = (n - skipped) as usize;
                    let batch = in_order(batch.slice(cut, batch.num_rows() - cut), &self.order)
                        .map_err(|e| read_error(&self.path, e))?;
                    return Ok((n, Some(batch_rows(&batch))));
                }
            }
        }
        Ok((skipped, None))
    }
}
