//! Runs the Hub double: `mock_hub PORT [TOKEN]`. Prints `listening on http://127.0.0.1:PORT`
//! and serves until killed. With a TOKEN, every call needs `authorization: Bearer TOKEN`.

use distill_testkit::mock_hub::{HubBehaviour, MockHub};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let behaviour = HubBehaviour {
        token: args.next(),
        ..HubBehaviour::default()
    };
    let hub = MockHub::start_on(port, behaviour);
    println!("listening on {}", hub.endpoint());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
