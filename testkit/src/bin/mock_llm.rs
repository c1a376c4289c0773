//! Runs the mock LLM server: `mock_llm PORT LATENCY_MS [fail_every] [rate_limit_every]`.
//! Prints `listening on http://127.0.0.1:PORT/v1` and serves until killed.

use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::time::Duration;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let behaviour = Behaviour {
        latency: Duration::from_millis(args.get(1).copied().unwrap_or(0)),
        fail_every: args.get(2).copied().filter(|n| *n > 0),
        rate_limit_every: args.get(3).copied().filter(|n| *n > 0),
        retry_after_secs: 1,
        ..Behaviour::default()
    };
    let server = MockLlm::start_on(args.first().copied().unwrap_or(0) as u16, behaviour);
    println!("listening on {}", server.base_url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
