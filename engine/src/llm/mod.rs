//! Talking to LLMs over OpenAI-compatible HTTP APIs.

mod client;
mod limiter;

pub use client::{Answer, Client, Failure, RetryPolicy};
pub use limiter::{EndpointPool, Slot};
