//! distill's engine: pipelines as DAGs of steps, run stage by stage on the run log.
//!
//! A [`PipelineSpec`] (from YAML or the builder API) is validated into a [`Pipeline`] with a
//! [`Registry`] of step types, then [`run`] executes it on a run database, resuming it when the
//! database already holds progress of the same pipeline. [`export`] writes the leaves' rows;
//! [`hub`] publishes them to the Hugging Face Hub.

pub mod distiset;
mod error;
pub mod hub;
mod lifecycle;
pub mod llm;
mod mapping;
mod observer;
mod pipeline;
mod registry;
mod run;
mod scheduler;
mod spec;
mod status;
pub mod step;
pub mod steps;
pub mod task;
mod worker;

pub use distill_storage::LogOptions;
pub use distiset::{Distiset, ExportFormat, LeafExport, export};
pub use error::{Error, Result};
pub use lifecycle::{LoadGuard, LoadState, StepSlot};
pub use observer::{Observer, RunEvent};
pub use pipeline::{Node, Pipeline};
pub use registry::{Constructor, Registry};
pub use run::{RunOptions, RunSummary, run};
pub use scheduler::cursor_name;
pub use spec::{DEFAULT_BATCH_SIZE, OnError, PipelineSpec, PushSpec, StepSpec};
pub use status::{PushReport, RunReport, StepStatus, status};
pub use step::{BuildContext, StepKind};
