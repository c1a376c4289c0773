//! The independent Python readers (pyarrow, datasets), from scripts/python-env.sh.

use std::path::PathBuf;
use std::process::Command;

/// The interpreter of target/pyenv, created on first use.
pub fn python() -> PathBuf {
    let root = super::distill::root();
    let out = Command::new("bash")
        .arg(root.join("scripts/python-env.sh"))
        .output()
        .expect("run scripts/python-env.sh");
    assert!(
        out.status.success(),
        "scripts/python-env.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
