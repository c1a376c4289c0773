//! Loopback test doubles for the remote services distill talks to. They speak the real
//! protocol on a real socket; only the far side is simulated.
#![deny(missing_docs)]

mod http;
pub mod mock_batch;
pub mod mock_hub;
pub mod mock_llm;
