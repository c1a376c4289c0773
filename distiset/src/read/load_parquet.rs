//! `load_parquet`: rows of Parquet files, streamed row group by row group.

use super::parquet_file::{ParquetFile, footer_digest};
use super::{DECODE_ROWS, LoadParams, check_columns};
use crate::error::Error;
use distill_engine::input::{self, FileRows, FileSet, RowStream};
use distill_engine::step::{
    BuildContext, Generator, Lifecycle, StepKind, StepResult, parse_params,
};
use distill_storage::Row;

/// The files of a `load_parquet` step, their footers read.
struct ParquetFiles {
    files: Vec<ParquetFile>,
}

impl FileSet for ParquetFiles {
    fn count(&self) -> usize {
        self.files.len()
    }

    fn known_rows(&mut self, index: usize) -> StepResult<Option<u64>> {
        Ok(Some(self.files[index].rows()))
    }

    fn open(
        &mut self,
        index: usize,
        start: u64,
        _wanted: Option<u64>,
    ) -> StepResult<(Box<dyn FileRows>, u64)> {
        let file = &self.files[index];
        let start = start.min(file.rows());
        Ok((Box::new(file.read_from(start, DECODE_ROWS)?), start))
    }
}

/// `load_parquet`: Parameters: `path` (a file, a directory's `*.parquet` files, a glob or a
/// list, in sorted order), `columns` (read only those, in that order), `limit` (at most this
/// many rows). Every file must have the columns read. Memory stays bounded whatever the file's
/// size; a resumed run starts at the row group holding its next row.
pub struct LoadParquet {
    columns: Vec<String>,
    stream: RowStream<ParquetFiles>,
}

/// Builds a `load_parquet` generator: reads every file's footer and checks its columns.
pub fn load_parquet(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let p: LoadParams = parse_params(params)?;
    check_columns(p.columns.as_deref())?;
    let paths = input::expand(&p.path, ctx, &["parquet"])?;
    let first = ParquetFile::open(&paths[0], p.columns.as_deref())?;
    let columns = first.columns();
    let mut files = vec![first];
    for path in &paths[1..] {
        let file = ParquetFile::open(path, Some(&columns))?;
        if p.columns.is_none() {
            let all = ParquetFile::open(path, None)?.columns();
            if all.len() != columns.len() {
                let extra: Vec<&str> = all
                    .iter()
                    .filter(|c| !columns.contains(c))
                    .map(String::as_str)
                    .collect();
                return Err(Error::Read {
                    path: path.clone(),
                    detail: format!(
                        "it has columns the first file ({}) lacks: [{}]; list the columns to read in `columns`",
                        paths[0].display(),
                        extra.join(", ")
                    ),
                }
                .into());
            }
        }
        files.push(file);
    }
    Ok(StepKind::Generator(Box::new(LoadParquet {
        columns,
        stream: RowStream::new(ParquetFiles { files }, p.limit),
    })))
}

impl Lifecycle for LoadParquet {
    fn unload(&mut self) {
        self.stream.close();
    }
}

impl Generator for LoadParquet {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        let paths: Vec<_> = self
            .stream
            .set()
            .files
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect();
        Ok(Some(input::fingerprint(&paths, |p| Ok(footer_digest(p)?))?))
    }

    fn row_count(&mut self) -> StepResult<Option<u64>> {
        Ok(Some(self.stream.total_rows()?))
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        self.stream.read(offset, count)
    }
}
