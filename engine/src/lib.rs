//! distill's core engine: pipelines as DAGs of steps, run stage by stage on the run log.
//!
//! A [`PipelineSpec`] (from YAML or the builder API) is validated into a [`Pipeline`] with a
//! [`Registry`] of step types, then [`run`] executes it on a run database, resuming it when the
//! database already holds progress of the same pipeline; [`status`] reads where a run stands
//! from another process. This crate has the CPU steps; the LLM tasks (`distill-llm`), the
//! distiset export (`distill-distiset`) and the Hub pusher (`distill-hub`) build on it, and the
//! `distill` crate puts them together.
//!
//! ```
//! use distill_engine::{BuildContext, Pipeline, PipelineSpec, Registry, RunOptions, StepSpec, run};
//! # let dir = tempfile::tempdir().unwrap();
//! let spec = PipelineSpec::new("demo")
//!     .step(StepSpec::new("load", "inline").param("rows", serde_json::json!([{"name": "Ada"}])))
//!     .step(StepSpec::new("greet", "format_text").after("load")
//!         .param("template", "Hello {{ name }}").param("output", "greeting"));
//! let pipeline = Pipeline::build(spec, &Registry::default(), &BuildContext::default())?;
//! let summary = run(&pipeline, &RunOptions::new(dir.path().join("run.redb")))?;
//! assert_eq!(summary.leaves, vec![("greet".to_string(), 1)]);
//! # Ok::<(), distill_engine::Error>(())
//! ```
#![deny(missing_docs)]

pub mod budget;
mod canonical;
mod error;
mod fault;
pub mod input;
mod lifecycle;
mod mapping;
mod observer;
mod pipeline;
mod registry;
mod resume;
mod run;
mod scheduler;
mod signature;
mod spec;
mod status;
pub mod step;
mod steps;
pub mod task;
mod unique_keys;
mod worker;

pub use budget::{Budget, Cost, Price, Reservation, Spend};
pub use canonical::{canonical_json, hash_value};
pub use distill_storage::LogOptions;
pub use error::{Classified, Error, ErrorKind, Result, classified};
pub use lifecycle::{LoadGuard, LoadState, StepSlot};
pub use observer::{Observer, RunEvent};
pub use pipeline::{Node, Pipeline};
pub use registry::{Constructor, Registry};
pub use resume::{PlanMode, ResumePlan, StepAction, StepPlan, step_epoch};
pub use run::{RunOptions, RunSession, RunSummary, plan, run};
pub use signature::{step_signatures, step_signatures_with};
pub use spec::{DEFAULT_BATCH_SIZE, OnError, PipelineSpec, PushSpec, StepSpec};
pub use status::{RunReport, StepStatus, status, status_of};
pub use step::{BuildContext, NodeKind, StepKind};
