//! The real local LLM server (scripts/local-llm.sh) for tests that need one.

use super::distill::root;
use std::sync::OnceLock;

/// The model alias the server is started with.
pub const LOCAL_MODEL: &str = "gemma-3-270m";

/// The local server's base URL: `DISTILL_LLM_URL` (CI starts the server first), or else the
/// server started with `bash scripts/local-llm.sh start`, which installs it on first use
/// (minutes) and stops it when this test binary exits.
pub fn local_llm_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DISTILL_LLM_URL") {
            return url.trim_end_matches('/').to_owned();
        }
        eprintln!("DISTILL_LLM_URL is not set: starting the local LLM (installs it on first use)");
        let out = std::process::Command::new("bash")
            .arg(root().join("scripts/local-llm.sh"))
            .arg("start")
            .env("DISTILL_LLM_STOP_WITH", std::process::id().to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/local-llm.sh");
        assert!(
            out.status.success(),
            "scripts/local-llm.sh start failed; set DISTILL_LLM_URL to a running server"
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(url.starts_with("http"), "local-llm.sh printed {url:?}");
        url
    })
}

/// Holds the local server for one test at a time. llama.cpp's server answers one request at a
/// time (even `GET /models` waits for the completion in progress), so tests of one binary that
/// shared it would time each other out; held, each test sees the server idle.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The model alias of the local SmolLM2 server.
pub const SMOLLM2_MODEL: &str = "smollm2-135m";

/// The local SmolLM2-135M-Instruct server's base URL: `DISTILL_SMOLLM2_URL`, or else the
/// server started with `DISTILL_LLM_MODEL=smollm2 bash scripts/local-llm.sh start` (port
/// 18082), stopped when this test binary exits if it started it.
pub fn smollm2_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DISTILL_SMOLLM2_URL") {
            return url.trim_end_matches('/').to_owned();
        }
        eprintln!("DISTILL_SMOLLM2_URL is not set: starting the local SmolLM2 server");
        let out = std::process::Command::new("bash")
            .arg(root().join("scripts/local-llm.sh"))
            .arg("start")
            .env("DISTILL_LLM_MODEL", "smollm2")
            .env_remove("DISTILL_LLM_PORT")
            .env("DISTILL_LLM_STOP_WITH", std::process::id().to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/local-llm.sh");
        assert!(
            out.status.success(),
            "scripts/local-llm.sh start (smollm2) failed; set DISTILL_SMOLLM2_URL to a running server"
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}
