//! `load_hub` through the real binary against the loopback Hub double: datasets uploaded with
//! the official `huggingface_hub` client (`upload_folder`) and written by
//! `datasets.push_to_hub` load with the values `datasets.load_dataset` reads; a distiset pushed
//! by distill loads back; downloads are lazy (a `limit` inside the first file fetches one
//! file), a cut download resumes with `Range`, a partial download left by an earlier run is
//! resumed, a wrong sha256 is refused, a private repository without a token is a clear 401, and
//! a resumed run reads the commit it recorded after the branch moved on. No token is written.

mod common;

use common::distill::{distill, read_jsonl, root, stderr};
use common::python::python;
use distill_testkit::mock_hub::{Faults, HubBehaviour, MockHub};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TOKEN: &str = "hf_load_SECRET_0123456789abcdef";

fn hub() -> MockHub {
    MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        public_reads: true,
        ..HubBehaviour::default()
    })
}

/// The folder tests/python/loaders.py writes for uploads (card with configs: `default` with two
/// Parquet shards of `train`, `extra` with a JSONL.gz `test`), written once per run of this
/// binary.
fn upload_folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("load_hub-inputs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = loaders(None, &dir, &["write", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        dir.join("hub")
    })
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs tests/python/loaders.py with `args` (against `hub`, with the token, when given).
fn loaders(hub: Option<&MockHub>, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/python/loaders.py"))
        .args(args)
        .env("HF_HOME", home.join(".hf-home"))
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_DATASETS_OFFLINE")
        .env_remove("HF_TOKEN");
    if let Some(hub) = hub {
        cmd.env("HF_ENDPOINT", hub.endpoint())
            .env("HF_TOKEN", TOKEN);
    }
    cmd.output().expect("run loaders.py")
}

fn upload(hub: &MockHub, dir: &Path, repo: &str, private: bool) {
    let folder = upload_folder().to_str().unwrap().to_owned();
    let mut args = vec!["upload", repo, &folder];
    if private {
        args.push("private");
    }
    let out = loaders(Some(hub), dir, &args);
    assert!(out.status.success(), "upload: {}", text(&out));
}

/// `distill ARGS` in `dir` against `hub`, with `token` as HF_TOKEN, caching in `dir/cache`.
fn distill_at(hub: &MockHub, dir: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = distill(dir);
    cmd.args(args)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("DISTILL_CACHE", dir.join("cache"))
        .env_remove("HF_TOKEN");
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.output().unwrap()
}

fn pipeline(dir: &Path, name: &str, params: &str) -> String {
    let file = format!("{name}.yaml");
    std::fs::write(
        dir.join(&file),
        format!("name: {name}\nsteps:\n  - {{name: load, type: load_hub, batch_size: 5, params: {params}}}\n"),
    )
    .unwrap();
    file
}

/// Runs `file` into `db` and exports it; returns the rows.
fn run_and_export(
    hub: &MockHub,
    dir: &Path,
    token: Option<&str>,
    file: &str,
    db: &str,
) -> Vec<serde_json::Value> {
    let out = distill_at(hub, dir, token, &["run", file, "--db", db]);
    assert!(out.status.success(), "{file}: {}", stderr(&out));
    let export = format!("{db}.out");
    let out = distill_at(
        hub,
        dir,
        token,
        &["export", "--db", db, "--out", &export, "--format", "jsonl"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    read_jsonl(&dir.join(export).join("load/train/data-00000.jsonl"))
}

fn ids(rows: &[serde_json::Value]) -> Vec<u64> {
    rows.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

/// GETs of files of `repo` through `resolve` (not the card), with their status and range.
fn downloads(hub: &MockHub, repo: &str) -> Vec<(String, u16, Option<String>)> {
    hub.requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.starts_with(&format!("/datasets/{repo}/resolve/"))
                && !r.path.ends_with("/README.md")
        })
        .map(|r| (r.path, r.status, r.range))
        .collect()
}

/// The input record the run keeps for step `load`.
fn input_record(db: &Path) -> String {
    let reader = distill_storage::RunReader::open(db).unwrap();
    let snapshot = reader.snapshot().unwrap();
    String::from_utf8(snapshot.record("input:load").unwrap().unwrap()).unwrap()
}

#[test]
fn a_folder_uploaded_with_huggingface_hub_loads_with_the_values_datasets_reads() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/uploaded";
    upload(&hub, d, repo, false);
    let head = hub.commits(repo).last().unwrap().oid.clone();

    let train = pipeline(d, "train", &format!("{{repo: {repo}}}"));
    let rows = run_and_export(&hub, d, Some(TOKEN), &train, "train.redb");
    assert_eq!(ids(&rows), (0..40).collect::<Vec<_>>());
    let out = loaders(
        Some(&hub),
        d,
        &[
            "compare-hub",
            repo,
            "default",
            "train",
            d.join("train.redb.out/load/train/data-00000.jsonl")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The commit read is recorded, and every request carried the token.
    let record = input_record(&d.join("train.redb"));
    assert!(record.contains(&format!("at {head}")), "{record}");
    assert!(
        downloads(&hub, repo)
            .iter()
            .all(|(path, _, _)| path.contains(&head))
    );

    // The JSONL.gz split, anonymously (a public repository), with a projection.
    let test = pipeline(
        d,
        "test",
        &format!("{{repo: {repo}, config: extra, split: test, columns: [text, id]}}"),
    );
    let rows = run_and_export(&hub, d, None, &test, "test.redb");
    assert_eq!(ids(&rows), (100..107).collect::<Vec<_>>());
    assert_eq!(
        rows[0],
        serde_json::json!({"text": "test row 0", "id": 100})
    );

    // Nothing holds the token.
    let hits = found_in_files(d, TOKEN.as_bytes());
    assert!(hits.is_empty(), "the token is in {hits:?}");
}

#[test]
fn a_limit_inside_the_first_file_fetches_one_file() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/limited";
    upload(&hub, d, repo, false);
    let file = pipeline(d, "limited", &format!("{{repo: {repo}, limit: 12}}"));
    let rows = run_and_export(&hub, d, None, &file, "r.redb");
    assert_eq!(ids(&rows), (0..12).collect::<Vec<_>>());
    let got = downloads(&hub, repo);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].0.ends_with("train-00000-of-00002.parquet"),
        "{got:?}"
    );
}

#[test]
fn a_dataset_written_by_datasets_push_to_hub_loads_with_its_values() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/pushed-by-datasets";
    let out = loaders(Some(&hub), d, &["push-to-hub", repo]);
    assert!(out.status.success(), "push_to_hub: {}", text(&out));
    let file = pipeline(d, "pushed", &format!("{{repo: {repo}}}"));
    let rows = run_and_export(&hub, d, None, &file, "r.redb");
    assert_eq!(ids(&rows), (0..30).collect::<Vec<_>>());
    // float32 scores widen exactly (i / 4 is exact in float32).
    assert_eq!(rows[3]["score"], 0.75);
    let out = loaders(
        Some(&hub),
        d,
        &[
            "compare-hub",
            repo,
            "default",
            "train",
            d.join("r.redb.out/load/train/data-00000.jsonl")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        downloads(&hub, repo).len() > 1,
        "max_shard_size made several shards"
    );
}

#[test]
fn a_distiset_pushed_by_distill_loads_back_with_the_same_values() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/round-trip";
    std::fs::write(
        d.join("push.yaml"),
        format!(
            "name: source\nsteps:\n  - name: rows\n    type: inline\n    params:\n      rows:\n        - {{id: 1, text: 'é ✓', score: 0.1, tags: [a, b], meta: {{k: 1, deep: {{ok: true}}}}, big: 18446744073709551615}}\n        - {{id: 2, text: two, score: -2.5, tags: [], meta: {{k: 2, deep: {{ok: false}}}}, big: 3}}\n        - {{id: 3, text: null, score: 1e300, tags: [c], meta: {{k: 3, deep: {{ok: null}}}}, big: 4}}\npush:\n  repo: {repo}\n  private: true\n"
        ),
    )
    .unwrap();
    let out = distill_at(
        &hub,
        d,
        Some(TOKEN),
        &["run", "push.yaml", "--db", "push.redb"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = distill_at(
        &hub,
        d,
        Some(TOKEN),
        &[
            "export",
            "--db",
            "push.redb",
            "--out",
            "src",
            "--format",
            "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pushed = read_jsonl(&d.join("src/rows/train/data-00000.jsonl"));
    let file = pipeline(d, "back", &format!("{{repo: {repo}, config: rows}}"));
    let back = run_and_export(&hub, d, Some(TOKEN), &file, "back.redb");
    assert_eq!(back, pushed);
    assert_eq!(back[0]["big"], u64::MAX);
}

#[test]
fn downloads_resume_with_range_and_a_wrong_sha256_is_refused() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/faulty";
    upload(&hub, d, repo, false);
    let file = pipeline(d, "faulty", &format!("{{repo: {repo}}}"));

    // A connection cut in the middle of a download: the retry asks for the rest.
    hub.set_faults(Faults {
        cut_downloads: 1,
        ..Faults::default()
    });
    let rows = run_and_export(&hub, d, None, &file, "cut.redb");
    assert_eq!(ids(&rows), (0..40).collect::<Vec<_>>());
    let got = downloads(&hub, repo);
    let resumed: Vec<_> = got.iter().filter(|(_, status, _)| *status == 206).collect();
    assert_eq!(resumed.len(), 1, "{got:?}");
    assert!(
        resumed[0]
            .2
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r.ends_with('-') && r != "bytes=0-"),
        "{got:?}"
    );
    assert_eq!(got[0].0, resumed[0].0, "the cut file is the one resumed");

    // A partial download left by an earlier (killed) run is resumed, not started over.
    let cache = dir.path().join("cache");
    let blob = find_file(&cache, "train-00001-of-00002.parquet").unwrap();
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(
        format!("{}.part", blob.display()),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let before = downloads(&hub, repo).len();
    let rows = run_and_export(&hub, d, None, &file, "partial.redb");
    assert_eq!(ids(&rows), (0..40).collect::<Vec<_>>());
    let after = downloads(&hub, repo);
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert_eq!(
        after[before].2.as_deref(),
        Some(format!("bytes={}-", bytes.len() / 3).as_str())
    );
    assert_eq!(std::fs::read(&blob).unwrap(), bytes);

    // Bytes whose sha256 is not the Hub's are downloaded once more, then refused; with the
    // first file cached, the run commits its rows and fails on the second (exit 4).
    std::fs::remove_file(&blob).unwrap();
    hub.set_faults(Faults {
        corrupt_downloads: 2,
        ..Faults::default()
    });
    let out = distill_at(&hub, d, None, &["run", &file, "--db", "bad.redb"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("train-00001-of-00002.parquet")
            && err.contains("sha256")
            && err.contains("refused"),
        "{err}"
    );
    assert!(!blob.exists(), "a refused file is not kept");
}

#[test]
fn a_private_repository_without_a_token_is_a_clear_401() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/secret";
    upload(&hub, d, repo, true);
    let file = pipeline(
        d,
        "secret",
        &format!("{{repo: {repo}, config: extra, split: test}}"),
    );
    let out = distill_at(&hub, d, None, &["run", &file, "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in ["acme/secret", "config extra, split test", "401", "HF_TOKEN"] {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
    assert!(!d.join("r.redb").exists());
    // A wrong token is refused the same way, and never shown.
    let out = distill_at(
        &hub,
        d,
        Some("hf_wrong_SECRET"),
        &["run", &file, "--db", "r.redb"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hf_wrong_SECRET"));
    // With the token it loads.
    let rows = run_and_export(&hub, d, Some(TOKEN), &file, "r.redb");
    assert_eq!(rows.len(), 7);
    // A repository that does not exist, and a split that does not: named.
    let missing = pipeline(d, "missing", "{repo: acme/nothing-here}");
    let out = distill_at(&hub, d, Some(TOKEN), &["run", &missing, "--db", "m.redb"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("acme/nothing-here")
            && stderr(&out).contains("no such dataset repository"),
        "{}",
        stderr(&out)
    );
    let nosplit = pipeline(
        d,
        "nosplit",
        &format!("{{repo: {repo}, split: validation}}"),
    );
    let out = distill_at(&hub, d, Some(TOKEN), &["run", &nosplit, "--db", "n.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("config 'default' has no split 'validation' (its splits: train)"),
        "{}",
        stderr(&out)
    );
    let hits = found_in_files(d, TOKEN.as_bytes());
    assert!(hits.is_empty(), "the token is in {hits:?}");
}

#[test]
fn a_resumed_run_reads_the_commit_it_recorded_after_the_branch_moved_on() {
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = "acme/moving";
    upload(&hub, d, repo, false);
    let first = hub.commits(repo).last().unwrap().oid.clone();
    let file = pipeline(d, "moving", &format!("{{repo: {repo}}}"));
    // `info` builds the pipeline: the first file lands in the cache.
    let out = distill_at(&hub, d, None, &["info", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The second file's download is refused: the run commits the first file's rows and fails.
    hub.set_faults(Faults {
        corrupt_downloads: 2,
        ..Faults::default()
    });
    let out = distill_at(&hub, d, None, &["run", &file, "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    hub.set_faults(Faults::default());
    // The branch moves on: the second shard is replaced by other rows.
    let changed = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .args(["-c", "import sys, pyarrow as pa, pyarrow.parquet as pq; pq.write_table(pa.table({'id': pa.array(range(900, 915), pa.int64()), 'text': ['new'] * 15}), sys.argv[1])"])
        .arg(changed.path().join("train-00001-of-00002.parquet"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let data = changed.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::rename(
        changed.path().join("train-00001-of-00002.parquet"),
        data.join("train-00001-of-00002.parquet"),
    )
    .unwrap();
    let folder = changed.path().to_str().unwrap().to_owned();
    let out = loaders(Some(&hub), d, &["upload", repo, &folder]);
    assert!(out.status.success(), "{}", text(&out));
    let second = hub.commits(repo).last().unwrap().oid.clone();
    assert_ne!(first, second);

    // The resumed run reads the recorded commit: the rows of the first upload, each once.
    let rows = run_and_export(&hub, d, None, &file, "r.redb");
    assert_eq!(ids(&rows), (0..40).collect::<Vec<_>>());
    assert!(input_record(&d.join("r.redb")).contains(&first));
    let last = downloads(&hub, repo).last().cloned().unwrap();
    assert!(
        last.0.contains(&first) && last.0.ends_with("train-00001-of-00002.parquet"),
        "{last:?}"
    );
    // A new run reads the branch as it is now.
    let out = distill_at(&hub, d, None, &["run", &file, "--db", "r.redb", "--new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = distill_at(
        &hub,
        d,
        None,
        &[
            "export", "--db", "r.redb", "--out", "new", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_jsonl(&d.join("new/load/train/data-00000.jsonl"));
    let mut want: Vec<u64> = (0..25).collect();
    want.extend(900..915);
    assert_eq!(ids(&rows), want);
    assert!(input_record(&d.join("r.redb")).contains(&second));
}

/// The first file named `name` under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// Files under `dir` holding `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == ".hf-home") {
                continue; // the official client's own token store
            }
            hits.extend(found_in_files(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}
