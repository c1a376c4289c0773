//! Maps redb's errors to ours, with the file's path and what was being done.

use crate::error::Error;
use std::io::ErrorKind;
use std::path::Path;

/// Converts any redb error into an [`Error`] that names `path` and `context`.
pub fn map(path: &Path, context: &'static str, err: impl Into<redb::Error>) -> Error {
    let path = path.to_path_buf();
    match err.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            Error::InUse { path }
        }
        redb::Error::RepairAborted => Error::NeedsRecovery { path },
        redb::Error::Corrupted(detail) => Error::Corrupt { path, detail },
        redb::Error::UpgradeRequired(version) => Error::NotARunDatabase {
            path,
            reason: format!("redb file format {version} is too old"),
        },
        redb::Error::Io(io) => match io.kind() {
            ErrorKind::StorageFull => Error::DiskFull { path },
            // At open, a file too short to hold redb's header is not a run database; once open,
            // a page past the end means the file was cut short.
            ErrorKind::InvalidData | ErrorKind::UnexpectedEof if context == "open" => {
                Error::NotARunDatabase {
                    path,
                    reason: format!("not a redb database or truncated ({io})"),
                }
            }
            ErrorKind::UnexpectedEof => Error::Corrupt {
                path,
                detail: format!("the file is truncated: {context} read past its end ({io})"),
            },
            _ => Error::Io { path, source: io },
        },
        other => Error::Database {
            path,
            context,
            detail: other.to_string(),
        },
    }
}

impl Error {
    /// A copy of a fatal commit error for the other units of the same failed group.
    pub(crate) fn for_group(&self) -> Error {
        match self {
            Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => Error::Poisoned {
                cause: other.to_string(),
            },
        }
    }
}
