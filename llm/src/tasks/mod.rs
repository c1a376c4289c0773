//! The LLM tasks, one module each, and the recipes built on [`recipe`].

pub(crate) mod classify;
pub(crate) mod deita;
pub(crate) mod embeddings;
pub(crate) mod evol;
pub(crate) mod generation;
pub(crate) mod judge;
pub(crate) mod magpie;
pub(crate) mod parse;
pub(crate) mod prometheus;
pub(crate) mod recipe;
pub(crate) mod self_instruct;
pub(crate) mod sentence_pair;
pub(crate) mod structured;
pub(crate) mod ultrafeedback;
