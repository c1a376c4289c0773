//! Talking to LLMs over OpenAI-compatible HTTP APIs.

mod client;
mod limiter;
mod prompt;
mod rate;
mod runner;
mod settings;

pub use client::{Answer, Client, Failure, RetryPolicy};
pub(crate) use client::{plain, retry_after, snippet};
pub use limiter::{EndpointPool, Slot};
pub use prompt::UserPrompt;
pub use rate::RateLimit;
pub use runner::{Request, Runner, cache_key};
pub use settings::{Generation, LlmParams, OnFailure};
