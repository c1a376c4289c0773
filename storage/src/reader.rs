//! Read-only access from another process while a run is live.

use crate::error::{Error, Result};
use crate::redb_errors::map;
use crate::run_log::RunLog;
use crate::run_log::guarded_open;
use crate::snapshot::Snapshot;
use redb::{ConcurrencyMode, ReadOnlyDatabase, ReadableDatabase};
use std::path::{Path, PathBuf};

/// A read-only handle on a run database. Works while a [`crate::RunLog`] writes it from another
/// process: each [`RunReader::snapshot`] sees the latest commit, and never blocks the writer.
///
/// A file left by a writer that died needs recovery before it can be read; when no writer is
/// live, `open` performs it (as a resumed run would: back to the last commit) and then reads.
pub struct RunReader {
    db: ReadOnlyDatabase,
    path: PathBuf,
}

impl RunReader {
    /// Opens the run database at `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        let open = || {
            guarded_open(path, || {
                let mut builder = redb::Builder::new();
                builder.set_cache_size(crate::run_log::CACHE_BYTES);
                builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
                builder.open_read_only(path)
            })
        };
        let db = match open() {
            Err(Error::NeedsRecovery { .. }) => {
                // The last writer died. When no writer is live, recover the file the way a
                // resumed run would (a writer open rolls back to the last commit), say that
                // the run was interrupted, then read.
                RunLog::open(path)?.mark_interrupted()?;
                open()?
            }
            other => other?,
        };
        crate::file_length::check_not_truncated(path)?;
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
