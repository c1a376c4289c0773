//! One Parquet file read in row order with bounded memory: its footer is read once, a read
//! starts at any row (the row groups before it are passed over unread, and the rows before it
//! in its row group are skipped with the offset index), and rows come one Arrow batch at a
//! time.

use super::values::{batch_rows, in_order, unsupported};
use crate::error::{Error, Result};
use arrow_schema::SchemaRef;
use distill_engine::input::FileRows;
use distill_engine::step::StepResult;
use distill_storage::Row;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::PageIndexPolicy;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A Parquet file's footer, and the columns to read.
#[derive(Debug, Clone)]
pub struct ParquetFile {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
    /// Root column indices to read, in the order asked for.
    projection: Vec<usize>,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The columns of `schema` (all, or the ones named in `columns`, which must exist) and their
/// indices; a column whose type has no value is an error naming it.
pub fn select_columns(
    path: &Path,
    schema: &SchemaRef,
    columns: Option<&[String]>,
) -> Result<Vec<usize>> {
    let indices: Vec<usize> = match columns {
        None => (0..schema.fields().len()).collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| Error::NoSuchColumn {
                    path: path.to_path_buf(),
                    column: name.clone(),
                    available: schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            })
            .collect::<Result<_>>()?,
    };
    for &i in &indices {
        let field = schema.field(i);
        if let Some(bad) = unsupported(field.data_type()) {
            return Err(Error::UnsupportedType {
                path: path.to_path_buf(),
                column: field.name().clone(),
                data_type: if bad == field.data_type() {
                    bad.to_string()
                } else {
                    format!("{} (inside {})", bad, field.data_type())
                },
            });
        }
    }
    Ok(indices)
}

impl ParquetFile {
    /// Reads the footer of `path` and checks `columns` (all when `None`).
    pub fn open(path: &Path, columns: Option<&[String]>) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let metadata =
            ArrowReaderMetadata::load(&file, options).map_err(|e| read_error(path, e))?;
        let projection = select_columns(path, metadata.schema(), columns)?;
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            projection,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .sum()
    }

    /// The columns read, in order.
    pub fn columns(&self) -> Vec<String> {
        let schema = self.metadata.schema();
        self.projection
            .iter()
            .map(|&i| schema.field(i).name().clone())
            .collect()
    }

    /// A reader from row `start` on, decoding `batch_size` rows at a time.
    pub fn read_from(&self, start: u64, batch_size: usize) -> Result<ParquetRows> {
        let file = File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        let groups = self.metadata.metadata().row_groups();
        let mut first = 0;
        let mut before = 0u64;
        while first < groups.len() && before + groups[first].num_rows().max(0) as u64 <= start {
            before += groups[first].num_rows().max(0) as u64;
            first += 1;
        }
        let mask = ProjectionMask::roots(
            self.metadata.parquet_schema(),
            self.projection.iter().copied(),
        );
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                .with_row_groups((first..groups.len()).collect())
                .with_projection(mask)
                .with_batch_size(batch_size.max(1));
        let skip = start.saturating_sub(before);
        if skip > 0 {
            builder = builder.with_offset(usize::try_from(skip).unwrap_or(usize::MAX));
        }
        let reader = builder.build().map_err(|e| read_error(&self.path, e))?;
        // The projection's order is the file's; the columns asked for come back in their order.
        let order = self.columns();
        Ok(ParquetRows {
            path: self.path.clone(),
            reader: Mutex::new(reader),
            order,
        })
    }
}

/// Rows of a [`ParquetFile`], one Arrow batch at a time.
pub struct ParquetRows {
    path: PathBuf,
    /// In a mutex only because the reader is not `Sync` and generators must be: one thread
    /// reads it at a time anyway.
    reader: Mutex<ParquetRecordBatchReader>,
    order: Vec<String>,
}

impl ParquetRows {
    /// The next batch's rows, or `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Row>>> {
        let reader = self.reader.get_mut().unwrap_or_else(|e| e.into_inner());
        match reader.next() {
            None => Ok(None),
            Some(Err(e)) => Err(read_error(&self.path, e)),
            Some(Ok(batch)) => {
                let batch = in_order(batch, &self.order).map_err(|e| read_error(&self.path, e))?;
                Ok(Some(batch_rows(&batch)))
            }
        }
    }
}

impl FileRows for ParquetRows {
    fn next_rows(&mut self, _max: usize) -> StepResult<Option<Vec<Row>>> {
        Ok(self.next_batch()?)
    }
}

/// A digest of the footer of the Parquet file `path` (its metadata bytes), read from the end
/// of the file: what changes when the file is rewritten, without reading its data.
pub fn footer_digest(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len < 12 {
        return Err(read_error(path, "too short to be a Parquet file"));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8)).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    if &tail[4..] != b"PAR1" {
        return Err(read_error(path, "not a Parquet file (no PAR1 at its end)"));
    }
    let meta_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if meta_len + 8 > len {
        return Err(read_error(path, "its footer is longer than the file"));
    }
    let mut meta = vec![0u8; meta_len as usize];
    file.seek(SeekFrom::End(-8 - meta_len as i64)).map_err(io)?;
    file.read_exact(&mut meta).map_err(io)?;
    Ok(format!("footer {}", &blake3::hash(&meta).to_hex()[..16]))
}

/// Bytes at the end of a Parquet file that hold its footer (metadata and the 8-byte trailer),
/// from at least the file's last 8 bytes (`tail`); `name` names the file in errors.
pub fn footer_len(name: &Path, tail: &[u8]) -> Result<u64> {
    let Some(trailer) = tail.len().checked_sub(8).map(|at| &tail[at..]) else {
        return Err(read_error(name, "too short to be a Parquet file"));
    };
    if &trailer[4..] != b"PAR1" {
        return Err(read_error(name, "not a Parquet file (no PAR1 at its end)"));
    }
    Ok(u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ])) + 8)
}

/// The rows of a Parquet file from the end of it (`tail`, at least [`footer_len`] bytes): a
/// remote file's row count from a small range read.
pub fn footer_rows(name: &Path, tail: &[u8]) -> Result<u64> {
    let len = usize::try_from(footer_len(name, tail)?).unwrap_or(usize::MAX);
    if tail.len() < len {
        return Err(read_error(name, "the footer read is cut short"));
    }
    let meta = &tail[tail.len() - len..tail.len() - 8];
    let metadata = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(meta)
        .map_err(|e| read_error(name, e))?;
    Ok(metadata.file_metadata().num_rows().max(0) as u64)
}
