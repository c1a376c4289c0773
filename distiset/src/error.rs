//! The one error type of the distiset crate.

use distill_engine::ErrorKind;
use std::path::PathBuf;

/// What can go wrong exporting a run or writing its rows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Arrow or Parquet refused the rows (a bug in the type rules, or a full disk underneath).
    #[error("writing Parquet{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parquet {
        /// The file, when writing one.
        path: Option<PathBuf>,
        /// The library's error.
        source: parquet::errors::ParquetError,
    },
    /// The output directory holds something an earlier distill export did not write; nothing
    /// in it was touched.
    #[error(
        "--out {path} is not a distill export: {detail}; export replaces only its own files, so choose an empty or new --out (or move those entries away)"
    )]
    NotAnExport {
        /// The directory.
        path: PathBuf,
        /// What in it is foreign (named), or why its `distiset.json` is not trusted.
        detail: String,
    },
    /// `--out` names something that is not a directory.
    #[error("--out {path} exists and is not a directory")]
    OutNotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The run database lies inside the output directory.
    #[error(
        "the run database {db} is inside --out {out}; export never writes where the database is: choose an --out outside it"
    )]
    DatabaseInsideOut {
        /// The database.
        db: PathBuf,
        /// The output directory.
        out: PathBuf,
    },
    /// An input file cannot be read as Parquet or Arrow (damaged, cut short, another format).
    #[error("reading {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        detail: String,
    },
    /// A column of an input file has an Arrow type that has no value in distill.
    #[error(
        "{path}: column '{column}' has type {data_type}, which distill cannot read (interval, union, run-end-encoded and list-view columns have no value); leave it out with `columns`"
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: String,
    },
    /// A column asked for is not in an input file.
    #[error("{path}: has no column '{column}' (its columns: {available})")]
    NoSuchColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The file's columns.
        available: String,
    },
    /// A folder given to `load_disk` is not what `datasets.save_to_disk` writes.
    #[error("{path}: {detail}")]
    BadDatasetFolder {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No leaf has a committed batch yet.
    #[error("nothing to export: {detail}")]
    NothingToExport {
        /// Why.
        detail: String,
    },
    /// The pipeline stored in the run database cannot be read.
    #[error(transparent)]
    Pipeline(#[from] distill_engine::Error),
    /// Databases given to one export that are not the shards (and global database) of one
    /// sharded run.
    #[error("cannot export these databases together: {detail}")]
    Shards {
        /// What is wrong.
        detail: String,
    },
    /// The run log failed.
    #[error(transparent)]
    Storage(#[from] distill_storage::Error),
}

impl Error {
    /// The error's kind, in the engine's classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            // Exit code 1, as for any file problem (not 2: the command line is well formed;
            // the same command works once the entries are moved away).
            Error::NotAnExport { .. }
            | Error::OutNotADirectory { .. }
            | Error::DatabaseInsideOut { .. } => ErrorKind::Other,
            Error::Parquet { .. } | Error::Read { .. } => ErrorKind::Io,
            Error::UnsupportedType { .. }
            | Error::NoSuchColumn { .. }
            | Error::BadDatasetFolder { .. } => ErrorKind::Invalid,
            Error::NothingToExport { .. } => ErrorKind::Other,
            Error::Shards { .. } => ErrorKind::Invalid,
            Error::Pipeline(e) => e.kind(),
            Error::Storage(_) => ErrorKind::Storage,
        }
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(source: arrow_schema::ArrowError) -> Self {
        Error::Parquet {
            path: None,
            source: source.into(),
        }
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(source: parquet::errors::ParquetError) -> Self {
        Error::Parquet { path: None, source }
    }
}

/// Result with the distiset [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
