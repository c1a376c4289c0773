//! moto's S3 server on loopback (scripts/moto-env.sh installs it into target/motoenv, pinned,
//! once): the S3-protocol double of the checkpoint tests, checked with boto3.

use super::distill::root;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The access key the tests use (moto accepts any).
pub const ACCESS_KEY: &str = "AKIAMOTOTEST";
/// The secret key the tests use: it must never reach a file or a message.
pub const SECRET_KEY: &str = "moto-SECRET-do-not-leak-4b1d";

/// A running moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    port: u16,
    bin: PathBuf,
}

/// target/motoenv/bin, made by scripts/moto-env.sh.
fn moto_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("scripts/moto-env.sh"))
        .output()
        .expect("run scripts/moto-env.sh");
    assert!(
        out.status.success(),
        "scripts/moto-env.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    server.parent().expect("bin folder").to_path_buf()
}

impl Moto {
    /// Starts the server on a free loopback port and waits until it answers.
    pub fn start() -> Moto {
        let bin = moto_bin();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(bin.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port, bin };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the variables that point an S3 client (object_store, boto3) at this server.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
    }

    /// Runs tests/python/s3_check.py ARGS with boto3; panics on failure; returns stdout.
    pub fn boto3(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(self.bin.join("python"));
        cmd.arg(root().join("tests/python/s3_check.py")).args(args);
        self.env(&mut cmd);
        let out: Output = cmd.output().expect("run s3_check.py");
        assert!(
            out.status.success(),
            "s3_check.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object under `prefix` of `bucket`, with its size (listed by boto3).
    pub fn list(&self, bucket: &str, prefix: &str) -> std::collections::BTreeMap<String, u64> {
        serde_json::from_str(self.boto3(&["ls", bucket, prefix]).trim()).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
