//! Checkpoints off the machine (issue 20), through the real binary: the run database
//! snapshotted to a real S3-protocol server on loopback (moto, checked with boto3) while the
//! run goes on, the run SIGKILLed and its machine "lost", and `--resume-from` on a fresh
//! directory finishing it with the same rows as an uninterrupted run, without asking the LLM
//! again for the answers the snapshot held. An upload killed midway leaves the previous
//! snapshot usable.

mod common;

use common::distill::{distill, stderr, stdout};
use common::moto::{Moto, SECRET_KEY};
use distill_testkit::mock_hub::{HubBehaviour, MockHub};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "ckpt";
const ROWS: usize = 120;

fn run_in(dir: &Path, moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = distill(dir);
    cmd.args(args);
    moto.env(&mut cmd);
    cmd.output().expect("run distill")
}

/// A pipeline asking the mock LLM once per row, with a checkpoint section (when `to` is
/// given) every 2 batches.
fn write_llm_pipeline(dir: &Path, llm: &MockLlm, to: Option<&str>) {
    let data: String = (0..ROWS)
        .map(|i| format!("{{\"id\": {i}, \"instruction\": \"write line {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    let checkpoint = to.map_or(String::new(), |to| {
        format!("checkpoint:\n  to: {to}\n  every_batches: 2\n  keep: 2\n")
    });
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "name: ckpt-e2e\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 10\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    input_batch_size: 4\n    params:\n      base_url: {}\n      model: mock-model\n      concurrency: 2\n{checkpoint}",
            llm.base_url()
        ),
    )
    .unwrap();
}

/// The distinct chat requests (bodies) answered 200 among `log`.
fn answered(log: &[distill_testkit::mock_llm::Received]) -> BTreeSet<String> {
    log.iter()
        .filter(|r| r.path.contains("chat/completions") && r.status == 200)
        .map(|r| r.body.clone())
        .collect()
}

/// The leaf `generate` exported as JSONL rows.
fn leaf_rows(dir: &Path, db: &str) -> Vec<serde_json::Value> {
    let out = dir.join(format!("export-{db}"));
    let done = distill(dir)
        .args(["export", "--db", db, "--out"])
        .arg(&out)
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(done.status.success(), "export: {}", stderr(&done));
    common::distill::read_jsonl(&out.join("generate/train/data-00000.jsonl"))
}

/// The run's checkpoint records, from `distill status --json`.
fn checkpoints(dir: &Path, db: &str) -> Vec<serde_json::Value> {
    let out = distill(dir)
        .args(["status", "--json", "--db", db])
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let status: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    status["checkpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Brings the pipeline and its input to a new machine's directory as `rsync -a` or a shared
/// file system would: same sizes and modification times (the run's input fingerprint).
fn bring_inputs(from: &Path, to: &Path) {
    for file in ["p.yaml", "data.jsonl"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
        let modified = std::fs::metadata(from.join(file))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(to.join(file))
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }
}

/// Files under `dir` holding `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(found_in_files(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

/// Sets a command's environment for the store under test (credentials, endpoints).
type Env<'a> = &'a dyn Fn(&mut Command);

fn run_env(dir: &Path, env: Env<'_>, args: &[&str]) -> Output {
    let mut cmd = distill(dir);
    cmd.args(args);
    env(&mut cmd);
    cmd.output().expect("run distill")
}

/// The scenario of issue 20: a run with a checkpoint section to `url` is SIGKILLed once a
/// snapshot holding paid answers is complete; its directory is deleted; `--resume-from` on a
/// fresh directory (the pipeline and its input brought over) finishes it. Checks the leaves
/// against an uninterrupted run and the LLM mock's log: the resumed run asked exactly the
/// requests whose answers the snapshot did not hold. `complete` looks at the store between
/// the kill and the resume. Returns the fresh directory and the resume's stderr.
fn killed_moved_resumed(
    url: &str,
    env: Env<'_>,
    complete: &dyn Fn(&Path),
) -> (tempfile::TempDir, String) {
    let llm = MockLlm::start(Behaviour {
        latency: Duration::from_millis(60),
        ..Behaviour::default()
    });

    // The reference: the same pipeline, uninterrupted, without checkpoints.
    let reference = tempfile::tempdir().unwrap();
    write_llm_pipeline(reference.path(), &llm, None);
    let out = run_env(
        reference.path(),
        env,
        &["run", "p.yaml", "--db", "run.redb"],
    );
    assert!(out.status.success(), "reference run: {}", stderr(&out));
    let expected = leaf_rows(reference.path(), "run.redb");
    assert_eq!(expected.len(), ROWS);

    // The first machine: killed once a snapshot holding paid answers is complete.
    let first = tempfile::tempdir().unwrap();
    write_llm_pipeline(first.path(), &llm, Some(url));
    let asked_before = llm.received().len();
    let mut cmd = distill(first.path());
    cmd.args(["run", "p.yaml", "--db", "run.redb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = checkpoints(first.path(), "run.redb");
        if seen
            .first()
            .is_some_and(|c| c["cache_entries"].as_u64().unwrap_or(0) > 0)
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a snapshot with answers was seen"
        );
        assert!(Instant::now() < deadline, "no snapshot with answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let first_answers = answered(&llm.received()[asked_before..]);
    assert!(
        first_answers.len() < ROWS,
        "the run was killed before it asked everything"
    );
    // The machine is gone: only the pipeline and its input are brought to the new one.
    let fresh = tempfile::tempdir().unwrap();
    bring_inputs(first.path(), fresh.path());
    drop(first);
    complete(fresh.path());

    // The new machine.
    let asked_before = llm.received().len();
    let out = run_env(
        fresh.path(),
        env,
        &["run", "p.yaml", "--db", "run.redb", "--resume-from", url],
    );
    assert!(out.status.success(), "resumed run: {}", stderr(&out));
    let err = stderr(&out);
    let restored = err
        .lines()
        .find(|l| l.starts_with("restored run.redb from snapshot"))
        .unwrap_or_else(|| panic!("no restore message: {err}"));
    // "... (log position P, K cached answers); ..."
    let cached: usize = restored
        .split_once(" cached answers)")
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of cached answers in: {restored}"));
    assert!(cached > 0, "{restored}");
    let second_answers = answered(&llm.received()[asked_before..]);
    // Exactly the answers the snapshot did not hold were asked: none it held was paid again.
    assert_eq!(
        second_answers.len(),
        ROWS - cached,
        "the resumed run asked {} requests; the snapshot held {cached} of {ROWS}",
        second_answers.len()
    );
    let asked_twice = first_answers.intersection(&second_answers).count();
    assert!(
        asked_twice <= first_answers.len() - cached,
        "{asked_twice} answers asked again, but only {} were paid after the snapshot",
        first_answers.len() - cached
    );
    assert_eq!(
        first_answers.union(&second_answers).count(),
        ROWS,
        "every request was answered on one machine or the other"
    );
    assert_eq!(leaf_rows(fresh.path(), "run.redb"), expected);

    // status shows the last snapshot: this run's own, taken at its end.
    let last = checkpoints(fresh.path(), "run.redb");
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0]["origin"], "uploaded");
    assert_eq!(last[0]["cache_entries"].as_u64(), Some(ROWS as u64));
    let text = stdout(&run_env(fresh.path(), env, &["status", "--db", "run.redb"]));
    assert!(
        text.contains(&format!("checkpoint to {url}: last snapshot")),
        "{text}"
    );
    (fresh, err)
}

#[test]
fn a_run_killed_with_its_machine_resumes_elsewhere_from_s3_without_paying_twice() {
    let moto = Moto::start();
    moto.boto3(&["mkbucket", BUCKET]);
    let url = format!("s3://{BUCKET}/runs");
    let env = |cmd: &mut Command| moto.env(cmd);
    // boto3 sees complete snapshots only: each manifest's data object is there, of its size.
    let complete = |scratch: &Path| {
        let objects = moto.list(BUCKET, "runs/ckpt-e2e/shard-0-of-1/");
        let manifests: Vec<&String> = objects
            .keys()
            .filter(|k| k.contains("/manifests/"))
            .collect();
        assert!(!manifests.is_empty() && manifests.len() <= 2, "{objects:?}");
        for key in &manifests {
            let local = scratch.join("manifest.json");
            moto.boto3(&["get", BUCKET, key, local.to_str().unwrap()]);
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
            let data = format!(
                "runs/ckpt-e2e/shard-0-of-1/{}",
                manifest["data"].as_str().unwrap()
            );
            assert_eq!(
                objects.get(&data).copied(),
                manifest["size"].as_u64(),
                "{key}"
            );
            std::fs::remove_file(&local).unwrap();
        }
    };
    let (fresh, err) = killed_moved_resumed(&url, &env, &complete);
    // Pruned to `keep: 2`.
    let objects = moto.list(BUCKET, "runs/ckpt-e2e/shard-0-of-1/");
    assert_eq!(
        objects.keys().filter(|k| k.contains("/manifests/")).count(),
        2,
        "{objects:?}"
    );
    // The secret key is in no file and no message.
    assert_eq!(
        found_in_files(fresh.path(), SECRET_KEY.as_bytes()),
        Vec::<String>::new()
    );
    assert!(!err.contains(SECRET_KEY));
}

#[test]
fn a_run_killed_with_its_machine_resumes_elsewhere_from_a_private_hub_repo() {
    const TOKEN: &str = "hf_ckpt_SECRET_0123456789abcdef";
    let hub = MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        ..HubBehaviour::default()
    });
    let env = |cmd: &mut Command| {
        cmd.env("HF_ENDPOINT", hub.endpoint())
            .env("HF_TOKEN", TOKEN);
    };
    let complete = |_: &Path| {
        let files = hub.files("acme/checkpoints");
        let manifests = files.keys().filter(|k| k.contains("/manifests/")).count();
        let data = files.keys().filter(|k| k.contains("/data/")).count();
        assert!(manifests >= 1 && manifests == data, "{:?}", files.keys());
    };
    let (fresh, err) = killed_moved_resumed("hf://datasets/acme/checkpoints", &env, &complete);
    assert_eq!(hub.is_private("acme/checkpoints"), Some(true));
    let files = hub.files("acme/checkpoints");
    assert!(
        files
            .keys()
            .all(|k| k.starts_with("ckpt-e2e/shard-0-of-1/") || k == ".gitattributes"),
        "{:?}",
        files.keys()
    );
    assert_eq!(
        found_in_files(fresh.path(), TOKEN.as_bytes()),
        Vec::<String>::new()
    );
    assert!(!err.contains(TOKEN));
}

/// About 16 MB of rows that compress poorly, so that a snapshot is uploaded in several parts.
fn write_big_pipeline(dir: &Path) -> usize {
    let mut rng = fastrand::Rng::with_seed(common::seed("checkpoint_big"));
    let rows = 4000;
    let mut data = String::new();
    for i in 0..rows {
        let text: String = (0..4000).map(|_| rng.alphanumeric()).collect();
        data.push_str(&format!("{{\"id\": {i}, \"text\": \"{text}\"}}\n"));
    }
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    std::fs::write(
        dir.join("p.yaml"),
        "name: ckpt-big\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 500\n    params: {path: data.jsonl}\n",
    )
    .unwrap();
    rows
}

#[test]
fn an_upload_killed_midway_leaves_the_previous_snapshot_usable() {
    let moto = Moto::start();
    moto.boto3(&["mkbucket", BUCKET]);
    let url = format!("s3://{BUCKET}/big");
    let dir = tempfile::tempdir().unwrap();
    let rows = write_big_pipeline(dir.path());
    let out = run_in(dir.path(), &moto, &["run", "p.yaml", "--db", "run.redb"]);
    assert!(out.status.success(), "run: {}", stderr(&out));

    // A complete snapshot by hand.
    let out = run_in(
        dir.path(),
        &moto,
        &["checkpoint", "--db", "run.redb", "--to", &url],
    );
    assert!(out.status.success(), "checkpoint: {}", stderr(&out));
    let first = stdout(&out)
        .strip_prefix("snapshot ")
        .and_then(|s| s.split(' ').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}", stdout(&out)));

    // A second one, killed once its first part is in the store.
    let mut cmd = distill(dir.path());
    cmd.args(["checkpoint", "--db", "run.redb", "--to", &url])
        .env("DISTILL_FAULT", "checkpoint-hold-after-part")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    moto.env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let held = lines.any(|l| l.is_ok_and(|l| l.contains("the checkpoint upload holds here")));
    assert!(held, "the upload never reached the fault");
    let uploads: Vec<serde_json::Value> =
        serde_json::from_str(moto.boto3(&["uploads", BUCKET]).trim()).unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert!(uploads[0]["parts"].as_u64().unwrap() >= 1, "{uploads:?}");
    assert!(!uploads[0]["key"].as_str().unwrap().contains(&first));
    child.kill().unwrap(); // SIGKILL, mid-upload
    child.wait().unwrap();

    // Readers see only the first snapshot; a new machine resumes from it.
    let objects: BTreeMap<String, u64> = moto.list(BUCKET, "big/");
    let manifests: Vec<&String> = objects
        .keys()
        .filter(|k| k.contains("/manifests/"))
        .collect();
    assert_eq!(manifests.len(), 1, "{objects:?}");
    assert!(manifests[0].contains(&first));
    let fresh = tempfile::tempdir().unwrap();
    bring_inputs(dir.path(), fresh.path());
    let out = run_in(
        fresh.path(),
        &moto,
        &["run", "p.yaml", "--db", "run.redb", "--resume-from", &url],
    );
    assert!(out.status.success(), "resume: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("from snapshot {first} at {url}")),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("load: {rows} rows")),
        "{}",
        stdout(&out)
    );

    // A bucket that does not exist stops a run before it starts, exit 1, naming the store's
    // refusal.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("p.yaml"),
        "name: nobucket\nsteps:\n  - {name: load, type: inline, params: {rows: [{x: 1}]}}\ncheckpoint: {to: 's3://no-such-bucket/x'}\n",
    )
    .unwrap();
    let info = stdout(&run_in(other.path(), &moto, &["info", "p.yaml"]));
    assert!(
        info.contains("checkpoint: s3://no-such-bucket/x under nobucket/shard-0-of-1, every 600 s"),
        "{info}"
    );
    let out = run_in(other.path(), &moto, &["run", "p.yaml", "--db", "run.redb"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("NoSuchBucket"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(SECRET_KEY));
    assert!(!stdout(&out).contains("load: 1 rows"), "{}", stdout(&out));
}

#[test]
fn resume_from_nothing_or_a_damaged_snapshot_says_so_with_its_exit_code() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: small\nsteps:\n  - {name: load, type: inline, batch_size: 2, params: {rows: [{x: 1}, {x: 2}, {x: 3}]}}\n",
    )
    .unwrap();
    // No snapshot there: exit 8, and no database is left behind.
    let out = distill(dir.path())
        .args(["run", "p.yaml", "--db", "run.redb", "--resume-from", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no snapshot of this run"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("run.redb").exists());
    // A snapshot, then its data damaged: exit 9, naming the checksum.
    let out = distill(dir.path())
        .args(["run", "p.yaml", "--db", "run.redb"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = distill(dir.path())
        .args(["checkpoint", "--db", "run.redb", "--to", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let data_dir = store.path().join("small/shard-0-of-1/data");
    let data = std::fs::read_dir(&data_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("p.yaml"), fresh.path().join("p.yaml")).unwrap();
    let out = distill(fresh.path())
        .args(["run", "p.yaml", "--db", "run.redb", "--resume-from", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));
    assert!(!fresh.path().join("run.redb").exists());
    // A database that is there is never replaced: --resume-from is ignored.
    let out = distill(dir.path())
        .args(["run", "p.yaml", "--db", "run.redb", "--resume-from", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is there: resuming it"),
        "{}",
        stderr(&out)
    );
}
