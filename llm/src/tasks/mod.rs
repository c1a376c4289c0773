//! The LLM tasks, one module each.

pub(crate) mod embeddings;
pub(crate) mod generation;
pub(crate) mod judge;
pub(crate) mod structured;
