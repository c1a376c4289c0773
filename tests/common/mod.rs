//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod batch;
pub mod distill;
pub mod embeddings;
pub mod llm;
pub mod moto;
pub mod python;

use std::process::{Child, Command, Stdio};

/// Name of the variable that tells a re-executed test binary to act as a child process.
pub const CHILD_ENV: &str = "DISTILL_TEST_CHILD";

/// Re-runs this test binary as a child process that runs only the test `name`, with
/// `CHILD_ENV` set to `arg`. The child's stdout is piped.
pub fn spawn_child(name: &str, arg: &str) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// The child's argument, when this process is a child.
pub fn child_arg() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A seed from `DISTILL_TEST_SEED` or the clock, printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("DISTILL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (replay with DISTILL_TEST_SEED={seed})");
    seed
}
