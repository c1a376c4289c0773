//! distill: build datasets with and for LLMs (synthetic data, AI feedback, evaluation sets) on
//! a run log that survives anything.
//!
//! This crate puts the pieces together: the core engine ([`distill_engine`]: pipelines, stages,
//! the scheduler, the CPU steps), the LLM tasks ([`distill_llm`]), the distiset export
//! ([`distill_distiset`]), the Hub pusher ([`distill_hub`]) and checkpoints to object storage
//! ([`distill_checkpoint`]). A program that needs only CPU
//! steps can depend on `distill-engine` alone and compile neither an HTTP client nor Parquet.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # std::fs::write(dir.path().join("p.yaml"), "name: demo\nsteps:\n  - {name: load, type: inline, params: {rows: [{x: 1}, {x: 2}]}}\n").unwrap();
//! let pipeline = distill::load_pipeline(&dir.path().join("p.yaml"))?;
//! let summary = distill::run(&pipeline, &distill::RunOptions::new(dir.path().join("run.redb")))?;
//! assert_eq!(summary.leaves, vec![("load".to_string(), 2)]);
//! let status = distill::status(&dir.path().join("run.redb"))?;
//! assert_eq!(status.run.status, distill::RunStatus::Finished);
//! # Ok::<(), distill::Error>(())
//! ```
#![deny(missing_docs)]

mod error;
mod run;
mod status;

pub use error::{Error, Result};
pub use run::{
    Resolver, RunSummary, add_resolver, identity, load_pipeline, load_pipeline_for, registry,
    registry_for, resolve, resume_from, run, run_with_hub,
};
pub use status::{Status, cancel, status};

pub use distill_checkpoint as checkpoint;
pub use distill_distiset::{Distiset, ExportFormat, LeafExport, LeafStatus, export, export_shards};
pub use distill_engine::Error as EngineError;
pub use distill_engine::{
    BuildContext, CheckpointSpec, ErrorKind, LoadGuard, LoadState, LogOptions, Node, NodeKind,
    Observer, OnError, Pipeline, PipelineSpec, PlanMode, PushSpec, Registry, ResumePlan, Role,
    RunEvent, RunOptions, ShardSpec, StepAction, StepPlan, StepSlot, StepSpec, plan, shard, step,
    task,
};
pub use distill_hub as hub;
pub use distill_llm::batch;
pub use distill_storage::{Row, RunStatus, StepState, Value, ZSTD_LEVEL};
