//! The Hub test double (`distill_testkit::mock_hub`) against the official `huggingface_hub`
//! client and `datasets` (tests/python/hub_conformance.py), and its tokens and scripted faults
//! driven over plain HTTP the way the pusher speaks to the Hub.

mod common;

use base64::Engine as _;
use distill_testkit::mock_hub::{Faults, HubBehaviour, MockHub};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TOKEN: &str = "hf_double_write_token";
const READ_TOKEN: &str = "hf_double_read_token";

fn hub() -> MockHub {
    MockHub::start(HubBehaviour {
        token: Some(TOKEN.to_owned()),
        read_only_token: Some(READ_TOKEN.to_owned()),
        ..HubBehaviour::default()
    })
}

/// Runs hub_conformance.py with `args` against `hub`, with `token` as HF_TOKEN (none: unset).
fn conformance(hub: &MockHub, token: Option<&str>, home: &Path, args: &[&str]) -> Output {
    let script = common::distill::root().join("tests/python/hub_conformance.py");
    let mut cmd = Command::new(common::python::python());
    cmd.arg(script)
        .args(args)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HOME", home)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_DATASETS_OFFLINE")
        .env_remove("HF_TOKEN");
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.output().expect("run hub_conformance.py")
}

fn report(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn official_client_uploads_in_parts_when_asked() {
    let hub = MockHub::start(HubBehaviour {
        token: Some(TOKEN.to_owned()),
        multipart_chunk_size: Some(65_536),
        ..HubBehaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let repo = "distill/multipart";
    let out = conformance(
        &hub,
        Some(TOKEN),
        &dir.path().join("hf-home"),
        &["multipart", repo, work.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", report(&out));
    let parts = hub
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/part/") && r.status == 200)
        .count();
    assert_eq!(parts, 4, "200,000 bytes in parts of 65,536");
    assert_eq!(hub.files(repo)["blob.bin"].len(), 200_000);
}

#[test]
fn official_client_round_trip() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let repo = "distill/conformance";
    let out = conformance(
        &hub,
        Some(TOKEN),
        &dir.path().join("hf-home"),
        &["round_trip", repo, work.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", report(&out));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    let summary: Value = serde_json::from_str(&last).expect("a JSON summary line");

    // What the client uploaded is what the double holds.
    let files = hub.files(repo);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["README.md", "data/train-00000-of-00001.parquet"],
        "{names:?}"
    );
    assert_eq!(
        files["README.md"],
        std::fs::read(work.join("README.md")).unwrap()
    );
    assert_eq!(
        files["data/train-00000-of-00001.parquet"],
        std::fs::read(work.join("train.parquet")).unwrap()
    );
    let commits = hub.commits(repo);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert_eq!(commits[0].added, ["README.md"]);
    assert_eq!(commits[1].added, ["data/train-00000-of-00001.parquet"]);
    assert_eq!(summary["commits"], json!([commits[0].oid, commits[1].oid]));
    assert_eq!(hub.repos(), [repo]);
    assert_eq!(hub.is_private(repo), Some(true));

    // The Parquet bytes went through an LFS PUT, not inside a commit.
    let requests = hub.requests();
    let puts: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(puts[0].path.starts_with("/__lfs/") && puts[0].status == 200);
    assert!(
        puts[0].authorization.is_none(),
        "no Hub token on the storage URL"
    );
    let unhandled: Vec<_> = requests
        .iter()
        .filter(|r| r.status == 404 && !r.path.contains("nope") && !r.path.contains("missing"))
        .collect();
    // The only 404s besides the script's own probes are files `datasets` looks for.
    for r in &unhandled {
        assert!(
            r.path.contains("/resolve/") || r.path.contains("/tree/"),
            "unexpected 404: {r:?}"
        );
    }
    assert_eq!(hub.bodies().len(), requests.len());
}

#[test]
fn missing_or_wrong_token_is_refused() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    for (i, token) in [None, Some("hf_not_the_token")].into_iter().enumerate() {
        let home = dir.path().join(format!("home{i}"));
        let out = conformance(&hub, token, &home, &["denied", "distill/secret"]);
        assert!(out.status.success(), "{token:?}: {}", report(&out));
    }
    let requests = hub.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r.status == 401), "{requests:?}");
    assert!(
        requests
            .iter()
            .any(|r| r.authorization.as_deref() == Some("Bearer hf_not_the_token"))
    );
    assert!(requests.iter().any(|r| r.authorization.is_none()));
    assert!(hub.repos().is_empty());
}

#[test]
fn read_only_token_reads_but_cannot_write() {
    let hub = hub();
    let api = Api::new(&hub, TOKEN);
    assert_eq!(api.create("distill/ro", false).0, 200);
    let dir = tempfile::tempdir().unwrap();
    let out = conformance(
        &hub,
        Some(READ_TOKEN),
        &dir.path().join("home"),
        &["read_only", "distill/ro"],
    );
    assert!(out.status.success(), "{}", report(&out));
    let requests = hub.requests();
    let refused: Vec<_> = requests.iter().filter(|r| r.status == 403).collect();
    assert!(
        refused.iter().any(|r| r.path == "/api/repos/create"),
        "{requests:?}"
    );
    assert!(
        refused.iter().any(|r| r.path.contains("/preupload/")),
        "{requests:?}"
    );
    assert!(hub.commits("distill/ro").is_empty());
    assert_eq!(hub.repos(), ["distill/ro"]);
    // Straight to the commit endpoint with the read-only token: 403, nothing applied.
    let reader = Api::new(&hub, READ_TOKEN);
    let status = reader
        .commit("distill/ro", &[file_line("a.txt", b"a")])
        .unwrap()
        .0;
    assert_eq!(status, 403);
    assert!(hub.files("distill/ro").is_empty());
}

#[test]
fn failed_commits_change_nothing_and_count_down() {
    let hub = hub();
    let api = Api::new(&hub, TOKEN);
    let repo = "distill/faults";
    assert_eq!(api.create(repo, true).0, 200);
    assert_eq!(api.create(repo, true).0, 409);
    let (status, _) = api
        .commit(repo, &[file_line("README.md", b"v1\n")])
        .unwrap();
    assert_eq!(status, 200);
    hub.set_faults(Faults {
        fail_commits: 2,
        ..Faults::default()
    });
    for left in [1, 0] {
        let (status, _) = api
            .commit(repo, &[file_line("README.md", b"v2\n")])
            .unwrap();
        assert_eq!(status, 500);
        assert_eq!(hub.faults().fail_commits, left);
        assert_eq!(hub.files(repo)["README.md"], b"v1\n");
        assert_eq!(hub.commits(repo).len(), 1);
    }
    let (status, answer) = api
        .commit(repo, &[file_line("README.md", b"v2\n")])
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(hub.files(repo)["README.md"], b"v2\n");
    let commits = hub.commits(repo);
    assert_eq!(commits.len(), 2);
    assert_eq!(answer["commitOid"], commits[1].oid.as_str());

    // Failed LFS uploads store nothing either.
    hub.set_faults(Faults {
        fail_uploads: 1,
        ..Faults::default()
    });
    let bytes = b"PAR1 not really parquet \0\x01\x02".to_vec();
    let href = api.lfs_href(repo, &bytes);
    assert_eq!(api.put(&href, &bytes), 500);
    assert_eq!(hub.faults().fail_uploads, 0);
    assert_eq!(api.verify(&bytes), 404);
    assert_eq!(api.put(&href, &bytes), 200);
    assert_eq!(api.verify(&bytes), 200);
}

#[test]
fn delayed_answer_comes_after_the_commit_is_applied() {
    let hub = hub();
    let api = Api::new(&hub, TOKEN);
    let repo = "distill/late";
    assert_eq!(api.create(repo, false).0, 200);
    hub.set_faults(Faults {
        delay_after_commit: 1,
        delay: Duration::from_secs(4),
        ..Faults::default()
    });
    let impatient = Api::with_timeout(&hub, TOKEN, Duration::from_millis(500));
    let started = Instant::now();
    let result = impatient.commit(repo, &[file_line("a.txt", b"applied\n")]);
    assert!(result.is_err(), "the client gave up before the answer");
    // Applied although the client never heard of it, and before the answer left.
    assert!(wait_for(|| hub.commits(repo).len() == 1));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "seen before the answer"
    );
    assert_eq!(hub.files(repo)["a.txt"], b"applied\n");
    assert_eq!(hub.faults().delay_after_commit, 0);
    // A patient client gets the answer, late.
    hub.set_faults(Faults {
        delay_after_commit: 1,
        delay: Duration::from_millis(700),
        ..Faults::default()
    });
    let started = Instant::now();
    let (status, answer) = api.commit(repo, &[file_line("b.txt", b"b\n")]).unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(answer["commitOid"], hub.commits(repo)[1].oid.as_str());
}

#[test]
fn hung_commit_is_not_applied() {
    let hub = hub();
    let api = Api::new(&hub, TOKEN);
    let repo = "distill/hang";
    assert_eq!(api.create(repo, false).0, 200);
    hub.set_faults(Faults {
        hang_commits: 1,
        ..Faults::default()
    });
    let impatient = Api::with_timeout(&hub, TOKEN, Duration::from_millis(500));
    assert!(
        impatient
            .commit(repo, &[file_line("a.txt", b"a\n")])
            .is_err()
    );
    assert!(hub.commits(repo).is_empty());
    assert!(hub.files(repo).is_empty());
    assert_eq!(hub.faults().hang_commits, 0);
    // Logged with status 0 once the double decided to hang.
    let hung = || {
        hub.requests()
            .into_iter()
            .filter(|r| r.path.contains("/commit/"))
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    assert!(wait_for(|| hung() == [0]), "{:?}", hung());
    assert_eq!(
        api.commit(repo, &[file_line("a.txt", b"a\n")]).unwrap().0,
        200
    );
    assert_eq!(hub.commits(repo).len(), 1);
}

#[test]
fn commit_with_an_lfs_pointer_to_nothing_is_refused_whole() {
    let hub = hub();
    let api = Api::new(&hub, TOKEN);
    let repo = "distill/atomic";
    assert_eq!(api.create(repo, false).0, 200);
    let parquet = b"PAR1\0\x15\x04 rows PAR1".to_vec();
    let never_uploaded = hex(&Sha256::digest(&parquet));
    let lines = [
        file_line("README.md", b"# card\n"),
        lfs_line("data/train.parquet", &never_uploaded, parquet.len()),
    ];
    let (status, answer) = api.commit(repo, &lines).unwrap();
    assert!(status == 400 || status == 422, "{status} {answer}");
    assert!(hub.files(repo).is_empty(), "nothing of the commit applied");
    assert!(hub.commits(repo).is_empty());

    // A wrong body for the announced oid is refused, the right one stored; then it commits.
    let href = api.lfs_href(repo, &parquet);
    assert_eq!(api.put(&href, b"PAR1 other bytes"), 400);
    assert_eq!(api.put(&href, &parquet), 200);
    assert_eq!(api.verify(&parquet), 200);
    assert!(api.lfs_batch(repo, &parquet)["objects"][0]["actions"].is_null());
    let (status, answer) = api.commit(repo, &lines).unwrap();
    assert_eq!(status, 200, "{answer}");
    let files = hub.files(repo);
    assert_eq!(files["data/train.parquet"], parquet);
    assert_eq!(files["README.md"], b"# card\n");

    // Binary bytes inside a commit, a stale parent and a missing deletion are refused too.
    let (status, _) = api
        .commit(repo, &[file_line("x.bin", b"\0\x01binary")])
        .unwrap();
    assert_eq!(status, 400);
    let stale = json!({"key": "header", "value": {"summary": "s", "parentCommit": "0".repeat(40)}});
    let (status, _) = api
        .commit_raw(repo, &[stale, file_line("b.txt", b"b")])
        .unwrap();
    assert_eq!(status, 412);
    let delete = json!({"key": "deletedFile", "value": {"path": "nope.txt"}});
    let (status, _) = api
        .commit(repo, &[file_line("c.txt", b"c"), delete])
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(hub.commits(repo).len(), 1);
    assert_eq!(hub.files(repo).len(), 2);
    let delete = json!({"key": "deletedFile", "value": {"path": "README.md"}});
    assert_eq!(api.commit(repo, &[delete]).unwrap().0, 200);
    assert_eq!(
        hub.files(repo).keys().collect::<Vec<_>>(),
        ["data/train.parquet"]
    );
    assert_eq!(hub.commits(repo)[1].deleted, ["README.md"]);

    // Writes to a repo that does not exist: 404 RepoNotFound.
    let (status, _) = api
        .commit("distill/none", &[file_line("a.txt", b"a")])
        .unwrap();
    assert_eq!(status, 404);
}

#[test]
fn resolve_answers_headers_ranges_and_error_codes() {
    let hub = hub();
    let api = Api::new(&hub, TOKEN);
    let repo = "distill/resolve";
    assert_eq!(api.create(repo, false).0, 200);
    let parquet = b"PAR1\0\x01\x02\x03 PAR1".to_vec();
    let href = api.lfs_href(repo, &parquet);
    assert_eq!(api.put(&href, &parquet), 200);
    let sha = hex(&Sha256::digest(&parquet));
    let lines = [
        file_line("notes/a.txt", b"hello\n"),
        lfs_line("data/x.parquet", &sha, parquet.len()),
    ];
    let (_, answer) = api.commit(repo, &lines).unwrap();
    let oid = answer["commitOid"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/datasets/{repo}/resolve/main/data/x.parquet",
        hub.endpoint()
    );
    let head = api.client.head(&url).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(head.status(), 200);
    let header = |name: &str| head.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-repo-commit"), oid);
    assert_eq!(header("etag"), format!("\"{sha}\""));
    assert_eq!(header("x-linked-etag"), format!("\"{sha}\""));
    assert_eq!(header("x-linked-size"), parquet.len().to_string());
    assert_eq!(header("content-length"), parquet.len().to_string());
    let part = api
        .client
        .get(&url)
        .bearer_auth(TOKEN)
        .header("Range", "bytes=4-6")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().unwrap().as_ref(), &parquet[4..=6]);
    let code = |url: String| {
        let r = api.client.get(url).bearer_auth(TOKEN).send().unwrap();
        let code = r
            .headers()
            .get("x-error-code")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), code)
    };
    let base = format!("{}/datasets/{repo}/resolve", hub.endpoint());
    let e = hub.endpoint();
    assert_eq!(
        code(format!("{base}/main/nope")),
        (404, Some("EntryNotFound".into()))
    );
    assert_eq!(
        code(format!("{base}/dev/notes/a.txt")),
        (404, Some("RevisionNotFound".into()))
    );
    assert_eq!(
        code(format!("{e}/datasets/distill/none/resolve/main/a")),
        (404, Some("RepoNotFound".into()))
    );
    assert_eq!(code(format!("{base}/{oid}/notes/a.txt")).0, 200);
    let tree: Value = api
        .client
        .get(format!("{e}/api/datasets/{repo}/tree/main?recursive=true"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let paths: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "file")
        .map(|t| t["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["data/x.parquet", "notes/a.txt"]);
}

/// A plain HTTP client of the double, the way the pusher talks to the Hub.
struct Api {
    client: reqwest::blocking::Client,
    endpoint: String,
    token: String,
}

impl Api {
    fn new(hub: &MockHub, token: &str) -> Api {
        Api::with_timeout(hub, token, Duration::from_secs(30))
    }

    fn with_timeout(hub: &MockHub, token: &str, timeout: Duration) -> Api {
        Api {
            client: reqwest::blocking::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap(),
            endpoint: hub.endpoint(),
            token: token.to_owned(),
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.endpoint))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn create(&self, repo: &str, private: bool) -> (u16, Value) {
        let (ns, name) = repo.split_once('/').unwrap();
        let visibility = if private { "private" } else { "public" };
        self.post(
            "/api/repos/create",
            &json!({"name": name, "organization": ns, "type": "dataset", "visibility": visibility}),
        )
    }

    /// Commits `lines` after a header.
    fn commit(&self, repo: &str, lines: &[Value]) -> reqwest::Result<(u16, Value)> {
        let mut all =
            vec![json!({"key": "header", "value": {"summary": "test", "description": ""}})];
        all.extend_from_slice(lines);
        self.commit_raw(repo, &all)
    }

    fn commit_raw(&self, repo: &str, lines: &[Value]) -> reqwest::Result<(u16, Value)> {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let r = self
            .client
            .post(format!("{}/api/datasets/{repo}/commit/main", self.endpoint))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/x-ndjson")
            .body(body)
            .send()?;
        Ok((r.status().as_u16(), r.json().unwrap_or(Value::Null)))
    }

    fn lfs_batch(&self, repo: &str, bytes: &[u8]) -> Value {
        let r = self
            .client
            .post(format!(
                "{}/datasets/{repo}.git/info/lfs/objects/batch",
                self.endpoint
            ))
            .bearer_auth(&self.token)
            .header("Accept", "application/vnd.git-lfs+json")
            .header("Content-Type", "application/vnd.git-lfs+json")
            .body(
                json!({
                    "operation": "upload",
                    "transfers": ["basic"],
                    "objects": [{"oid": hex(&Sha256::digest(bytes)), "size": bytes.len()}],
                    "hash_algo": "sha256",
                    "ref": {"name": "main"},
                })
                .to_string(),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    }

    /// The upload URL the batch call hands out for `bytes`.
    fn lfs_href(&self, repo: &str, bytes: &[u8]) -> String {
        let batch = self.lfs_batch(repo, bytes);
        batch["objects"][0]["actions"]["upload"]["href"]
            .as_str()
            .expect("an upload action")
            .to_owned()
    }

    /// A storage PUT: no Hub token.
    fn put(&self, href: &str, bytes: &[u8]) -> u16 {
        let r = self.client.put(href).body(bytes.to_vec()).send().unwrap();
        r.status().as_u16()
    }

    fn verify(&self, bytes: &[u8]) -> u16 {
        let oid = hex(&Sha256::digest(bytes));
        let url = format!("{}/__lfs/{oid}/verify", self.endpoint);
        let r = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .json(&json!({"oid": oid, "size": bytes.len()}))
            .send()
            .unwrap();
        r.status().as_u16()
    }
}

fn file_line(path: &str, bytes: &[u8]) -> Value {
    let content = base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({"key": "file", "value": {"path": path, "content": content, "encoding": "base64"}})
}

fn lfs_line(path: &str, oid: &str, size: usize) -> Value {
    json!({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}})
}

/// Polls `condition` for up to 3 s (a loaded machine may be slow to serve a request).
fn wait_for(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
