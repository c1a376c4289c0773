//! The real local embeddings server (scripts/local-embeddings.sh) for tests that need one.

use super::distill::root;
use std::sync::OnceLock;

/// The local server's base URL: `DISTILL_EMBEDDINGS_URL` (CI starts the server first), or else
/// the server started with `bash scripts/local-embeddings.sh start`, which installs it on first
/// use (seconds) and stops it when this test binary exits.
pub fn local_embeddings_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DISTILL_EMBEDDINGS_URL") {
            return url.trim_end_matches('/').to_owned();
        }
        eprintln!("DISTILL_EMBEDDINGS_URL is not set: starting the local embeddings server");
        let out = std::process::Command::new("bash")
            .arg(root().join("scripts/local-embeddings.sh"))
            .arg("start")
            .env("DISTILL_EMBEDDINGS_STOP_WITH", std::process::id().to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/local-embeddings.sh");
        assert!(
            out.status.success(),
            "scripts/local-embeddings.sh start failed; set DISTILL_EMBEDDINGS_URL to a running server"
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(url.starts_with("http"), "local-embeddings.sh printed {url:?}");
        url
    })
}
