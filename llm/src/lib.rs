//! distill's LLM tasks, over OpenAI-compatible HTTP APIs.
//!
//! [`register`] adds `text_generation`, `chat_generation`, `text_completion`, `embeddings`,
//! `judge` and `structured_generation` to a [`Registry`]. Every task shares the connection parameters of
//! [`LlmParams`] (endpoints, key variable, concurrency, limits, retries), asks the run's request
//! cache before paying for a request, checks each answer and commits it before using it, and
//! keeps failures as data (`generation_error` and friends) unless told to fail. With
//! `mode: batch` a task's requests go to provider batch jobs instead ([`batch`]).
#![deny(missing_docs)]

mod api;
pub mod batch;
mod client;
mod embedding;
mod error;
mod limiter;
mod prompt;
mod provider;
mod rate;
mod request_threads;
mod response;
mod runner;
mod settings;
mod tasks;
mod template;

pub use api::{Api, rate_tokens, worst_prompt_tokens};
pub use client::{Answer, Client, Failure, MAX_ANSWER_BYTES};
pub use distill_http::RetryPolicy;
pub use embedding::Embeddings;
pub use error::{Error, Result};
pub use response::{Completion, reported_usage};
pub use runner::{Answered, Halt, Outcome, Request, Runner, cache_key};
pub use settings::{DEFAULT_CONCURRENCY, Generation, LlmParams, OnFailure};

use distill_engine::Registry;

/// The built-in recipes (LLM tasks that follow a published method), by type name.
pub const RECIPES: &[&str] = &[
    "magpie",
    "magpie_generator",
    "self_instruct",
    "evol_instruct",
    "evol_quality",
    "ultrafeedback",
    "prometheus_eval",
    "quality_scorer",
    "complexity_scorer",
    "text_classification",
    "generate_sentence_pair",
];

/// Registers the LLM tasks in `registry`, with their operational parameters
/// ([`LlmParams::OPERATIONAL`]: changing them keeps a run's answers).
pub fn register(registry: &mut Registry) {
    registry.register("text_generation", tasks::generation::text_generation);
    registry.register("chat_generation", tasks::generation::chat_generation);
    registry.register("text_completion", tasks::generation::text_completion);
    registry.register("embeddings", tasks::embeddings::embeddings);
    registry.register("judge", tasks::judge::judge);
    registry.register(
        "structured_generation",
        tasks::structured::structured_generation,
    );
    registry.register("magpie", tasks::magpie::magpie);
    registry.register("magpie_generator", tasks::magpie::magpie_generator);
    registry.register("self_instruct", tasks::self_instruct::self_instruct);
    registry.register("evol_instruct", tasks::evol::evol_instruct);
    registry.register("evol_quality", tasks::evol::evol_quality);
    registry.register("ultrafeedback", tasks::ultrafeedback::ultrafeedback);
    registry.register("prometheus_eval", tasks::prometheus::prometheus_eval);
    registry.register("quality_scorer", tasks::deita::quality_scorer);
    registry.register("complexity_scorer", tasks::deita::complexity_scorer);
    registry.register("text_classification", tasks::classify::text_classification);
    registry.register(
        "generate_sentence_pair",
        tasks::sentence_pair::generate_sentence_pair,
    );
    for task in RECIPES {
        registry.set_operational(task, LlmParams::OPERATIONAL);
    }
    for task in [
        "text_generation",
        "chat_generation",
        "text_completion",
        "judge",
        "structured_generation",
    ] {
        registry.set_operational(task, LlmParams::OPERATIONAL);
    }
    // How many inputs go in one request never changes a vector: each is cached on its own.
    let mut embeddings = LlmParams::OPERATIONAL.to_vec();
    embeddings.push("rows_per_request");
    registry.set_operational("embeddings", &embeddings);
}
