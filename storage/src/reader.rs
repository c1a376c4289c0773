//! Read-only access from another process while a run is live.

use crate::error::Result;
use crate::redb_errors::map;
use crate::run_log::guarded_open;
use crate::snapshot::Snapshot;
use redb::{ConcurrencyMode, ReadOnlyDatabase, ReadableDatabase};
use std::path::{Path, PathBuf};

/// A read-only handle on a run database. Works while a [`crate::RunLog`] writes it from another
/// process: each [`RunReader::snapshot`] sees the latest commit, and never blocks the writer.
pub struct RunReader {
    db: ReadOnlyDatabase,
    path: PathBuf,
}

impl RunReader {
    /// Opens the run database at `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(crate::Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        let db = guarded_open(path, || {
            let mut builder = redb::Builder::new();
            builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
            builder.open_read_only(path)
        })?;
        let reader = Self {
            db,
            path: path.to_path_buf(),
        };
        reader.snapshot()?.check_format()?;
        Ok(reader)
    }

    /// A consistent view of the latest commit.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| map(&self.path, "begin read", e))?;
        Ok(Snapshot::new(txn, &self.path))
    }
}
