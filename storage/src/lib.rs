//! The run log of distill: one redb database per run that records every batch, every input
//! cursor, every step state and every paid LLM response, in durable transactions.
//!
//! This crate knows nothing of steps or pipelines: it stores rows, batches, cursors, states,
//! cached responses and consumer offsets, and guarantees that a [`Progress`] unit is either
//! wholly committed or not at all.
//!
//! ```
//! use distill_storage::{Batch, NewRun, Progress, Row, RunLog, StepState};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("run.redb");
//! let log = RunLog::create(&path, NewRun {
//!     signature: "abc".into(),
//!     pipeline: "steps: []".into(),
//!     created_by: "doc".into(),
//! })?;
//! let rows = vec![Row::new().with("text", "hello")];
//! log.commit(
//!     Progress::new()
//!         .batch(Batch { step: "load".into(), seq: 0, rows, last: true })
//!         .state("load", StepState::Finished),
//! )?;
//! let snapshot = log.snapshot()?;
//! assert_eq!(snapshot.step("load")?.unwrap().rows, 1);
//! # Ok::<(), distill_storage::Error>(())
//! ```
#![deny(missing_docs)]

mod codec;
mod committer;
mod compact;
mod compress;
mod copy;
mod error;
mod file_length;
mod guard;
mod model;
mod progress;
mod reader;
mod redb_errors;
mod run_log;
mod schema;
mod snapshot;
mod value;

pub use codec::FORMAT_VERSION;
pub use committer::{GroupCommitter, Ticket};
pub use compact::{Compaction, compact_finished};
pub use compress::{BatchLife, ZSTD_LEVEL};
pub use copy::CopyStats;
pub use error::{Error, Result};
pub use model::{
    Batch, Event, LogEntry, RunMeta, RunState, RunStatus, StepRecord, StepState, now_ms,
};
pub use progress::{EncodedBatch, Progress};
pub use reader::RunReader;
pub use run_log::{EncodedRows, LogOptions, NewRun, Rebase, Receipt, RunLog};
pub use snapshot::{BatchIter, LogIter, Snapshot};
pub use value::{Row, Value};
