//! Pushing to the Hub through the real binary, against the loopback Hub double: runs killed
//! with SIGKILL before and after the Hub's commit, `distill push` on finished and live runs;
//! the result is downloaded with the official `huggingface_hub` client and read with pyarrow
//! and `datasets`: every row exactly once. The token appears in no log, database or file.

mod common;

use common::distill::{distill, run, stderr, stdout};
use common::python::python;
use common::seed;
use distill_testkit::mock_hub::{Faults, HubBehaviour, MockHub};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "hf_e2e_SECRET_fedcba9876543210";
const REPO: &str = "acme/e2e";
const ROWS: usize = 150;

fn hub() -> MockHub {
    MockHub::start(HubBehaviour {
        token: Some(TOKEN.into()),
        ..HubBehaviour::default()
    })
}

/// A pipeline whose `generate` leaf asks the mock LLM and whose `quote` leaf formats text;
/// with `push`, a push section every 20 rows.
fn write_pipeline(dir: &Path, llm: &MockLlm, push: bool) {
    let data: String = (0..ROWS)
        .map(|i| format!("{{\"id\": {i}, \"instruction\": \"write line {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    let push = if push {
        format!(
            "push:\n  repo: {REPO}\n  every_rows: 20\n  timeout_secs: 2\n  final_wait_secs: 60\n"
        )
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "name: hub-e2e\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 10\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    input_batch_size: 5\n    params:\n      base_url: {}\n      model: mock-model\n      concurrency: 3\n  - name: quote\n    type: format_text\n    after: [load]\n    input_batch_size: 7\n    params: {{template: '\"{{{{ instruction }}}}\"', output: quoted}}\n{push}",
            llm.base_url()
        ),
    )
    .unwrap();
}

fn with_hub(cmd: &mut Command, hub: &MockHub, token: &str) {
    cmd.env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", token);
}

/// Downloads the repository with huggingface_hub and reads it with pyarrow and `datasets`;
/// returns, per config, the sorted ids.
fn read_back(hub: &MockHub) -> Vec<(String, Vec<u64>)> {
    let script = common::distill::root().join("tests/python/check_hub_push.py");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(script)
        .args([REPO, "generate", "quote"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", TOKEN)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_hub_push.py: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ids = v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap())
                .collect();
            (v["config"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

fn assert_every_row_once(hub: &MockHub) {
    let configs = read_back(hub);
    assert_eq!(configs.len(), 2);
    for (config, ids) in configs {
        assert_eq!(
            ids,
            (0..ROWS as u64).collect::<Vec<_>>(),
            "config {config}: every row exactly once"
        );
    }
}

/// Whether `needle` occurs in any file under `dir`.
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

fn commit_requests(hub: &MockHub) -> usize {
    hub.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/commit/"))
        .count()
}

#[test]
fn killed_during_pushes_every_row_lands_once() {
    let mut rng = fastrand::Rng::with_seed(seed("hub_kill"));
    let llm = MockLlm::start(Behaviour {
        latency: Duration::from_millis(20),
        ..Behaviour::default()
    });
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &llm, true);
    let (mut before, mut after) = (0, 0);
    let mut logs = String::new();
    for attempt in 0.. {
        assert!(attempt < 40, "no progress after {attempt} attempts");
        // Alternate: the Hub hangs on the next commit (kill before it applies), or applies it
        // and answers late (kill after the Hub's commit, before the offsets are recorded).
        let kill_after_commit = attempt % 2 == 1;
        let wanted_kills = before < 2 || after < 2;
        if wanted_kills {
            hub.set_faults(if kill_after_commit {
                Faults {
                    delay_after_commit: 1,
                    delay: Duration::from_secs(30),
                    ..Faults::default()
                }
            } else {
                Faults {
                    hang_commits: 1,
                    ..Faults::default()
                }
            });
        } else {
            hub.set_faults(Faults::default());
        }
        let commits_before = hub.commits(REPO).len();
        let requests_before = commit_requests(&hub);
        let mut cmd = distill(d);
        cmd.args(["run", "p.yaml", "--db", "r.redb"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        with_hub(&mut cmd, &hub, TOKEN);
        let mut child = cmd.spawn().unwrap();
        let start = Instant::now();
        let mut killed = false;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let struck = if kill_after_commit {
                hub.commits(REPO).len() > commits_before
            } else {
                commit_requests(&hub) > requests_before && hub.commits(REPO).len() == commits_before
            };
            if wanted_kills && struck {
                std::thread::sleep(Duration::from_millis(rng.u64(0..100)));
                child.kill().unwrap();
                killed = true;
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "run hangs");
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        logs.push_str(&stdout(&out));
        logs.push_str(&stderr(&out));
        if killed {
            if kill_after_commit {
                after += 1;
            } else {
                before += 1;
            }
            continue;
        }
        assert!(out.status.success(), "run failed: {}", stderr(&out));
        if !wanted_kills {
            break;
        }
    }
    assert!(
        before >= 2 && after >= 2,
        "kills before {before}, after {after}"
    );
    assert_every_row_once(&hub);
    // The token: in no log, no database byte, no pushed file.
    assert!(!logs.contains(TOKEN));
    assert!(found_in_files(d, TOKEN.as_bytes()).is_empty());
    for (path, bytes) in hub.files(REPO) {
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{path}"
        );
    }
    // Nor in any request body the Hub received (it goes in the authorization header only).
    assert!(
        hub.bodies()
            .iter()
            .all(|b| !b.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()))
    );
    let with_token = hub
        .requests()
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")))
        .count();
    assert!(with_token > 0);
    // Uploads to the storage URLs the Hub hands out carry no Hub token.
    assert!(
        hub.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.starts_with("/__lfs/"))
            .all(|r| r.authorization.is_none())
    );
    let status = run(d, &["status", "--db", "r.redb"]);
    assert!(
        stdout(&status).contains(&format!("push to {REPO} (main): up to date")),
        "{}",
        stdout(&status)
    );
}

#[test]
fn distill_push_on_a_finished_run_and_on_a_live_one() {
    let llm = MockLlm::start(Behaviour {
        latency: Duration::from_millis(40),
        ..Behaviour::default()
    });
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &llm, false);
    // Live: `distill push` follows a run going on in another process.
    let mut run_cmd = distill(d);
    run_cmd
        .args(["run", "p.yaml", "--db", "r.redb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut running = run_cmd.spawn().unwrap();
    let started = Instant::now();
    while !d.join("r.redb").exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut push = distill(d);
    push.args([
        "push",
        "--db",
        "r.redb",
        "--repo",
        REPO,
        "--every-rows",
        "30",
        "--timeout",
        "5",
    ]);
    with_hub(&mut push, &hub, TOKEN);
    let out = push.output().unwrap();
    assert!(running.wait().unwrap().success());
    assert!(out.status.success(), "push: {}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("followed the live run"), "{text}");
    let pushes = stderr(&out).matches("pushed ").count();
    assert!(pushes >= 2, "pushed while the run went on: {text}");
    assert!(!text.contains(TOKEN));
    assert_every_row_once(&hub);
    // Once the run's process let go of the database, the push recorded its offsets there.
    assert!(
        text.contains("offsets recorded in the run database"),
        "{text}"
    );
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(
        status.contains(&format!("push to {REPO} (main): up to date")),
        "{status}"
    );
    // Finished: pushing again finds everything there and commits nothing.
    let commits = hub.commits(REPO).len();
    let mut again = distill(d);
    again.args(["push", "--db", "r.redb", "--repo", REPO]);
    with_hub(&mut again, &hub, TOKEN);
    let out = again.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("offsets recorded in the run database"));
    assert_eq!(hub.commits(REPO).len(), commits);
    assert_every_row_once(&hub);
    // A wrong token: a clear error, exit 1, and the token is not echoed.
    let mut wrong = distill(d);
    wrong.args(["push", "--db", "r.redb", "--repo", "acme/other"]);
    with_hub(&mut wrong, &hub, "hf_wrong_token_value");
    let out = wrong.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    assert!(!err.contains("hf_wrong_token_value"));
    assert!(found_in_files(d, TOKEN.as_bytes()).is_empty());
}

#[test]
fn a_run_whose_push_fails_finishes_with_exit_5_and_distill_push_catches_up() {
    let llm = MockLlm::start(Behaviour::default());
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipeline(d, &llm, true);
    let info = stdout(&run(d, &["info", "p.yaml"]));
    assert!(
        info.contains("push: acme/e2e (main, private), every 20 rows, at the end"),
        "{info}"
    );
    // A wrong token: refused before the run spends anything.
    let mut cmd = distill(d);
    cmd.args(["run", "p.yaml", "--db", "r.redb"]);
    with_hub(&mut cmd, &hub, "hf_not_the_token");
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    assert!(!err.contains("hf_not_the_token"));
    assert_eq!(llm.count(), 0, "no LLM request was paid for");
    // The Hub fails every commit: the run finishes all the same, exit 5, and says what to do.
    let pipeline = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    std::fs::write(
        d.join("p.yaml"),
        pipeline.replace("final_wait_secs: 60", "final_wait_secs: 1"),
    )
    .unwrap();
    hub.set_faults(Faults {
        fail_commits: 10_000,
        ..Faults::default()
    });
    let mut cmd = distill(d);
    cmd.args(["run", "p.yaml", "--db", "r.redb"]);
    with_hub(&mut cmd, &hub, TOKEN);
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("distill push --db") && err.contains("HTTP 500"),
        "{err}"
    );
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(
        status.contains("push to acme/e2e (main): retrying"),
        "{status}"
    );
    assert!(
        status.contains(&format!("{} rows to push", 2 * ROWS)),
        "{status}"
    );
    // The Hub is back: `distill push` catches up.
    hub.set_faults(Faults::default());
    let mut push = distill(d);
    push.args(["push", "--db", "r.redb", "--repo", REPO]);
    with_hub(&mut push, &hub, TOKEN);
    let out = push.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_every_row_once(&hub);
    let status = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(
        status.contains("push to acme/e2e (main): up to date"),
        "{status}"
    );
}

/// Batch entries of `step` in the log of `db`: a batch committed again counts twice.
fn batch_events(db: &Path, step: &str) -> usize {
    let reader = distill_storage::RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.log_from(0)
        .unwrap()
        .filter(|e| {
            matches!(&e.as_ref().unwrap().event,
                distill_storage::Event::Batch { step: s, .. } if s == step)
        })
        .count()
}

/// The Hub's data files of `config`: path to bytes.
fn config_files(hub: &MockHub, config: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    hub.files(REPO)
        .into_iter()
        .filter(|(path, _)| path.starts_with(&format!("{config}/train/")))
        .collect()
}

#[test]
fn a_changed_leaf_replaces_its_shards_on_the_hub_and_a_kept_leaf_keeps_them() {
    let llm = MockLlm::start(Behaviour::default());
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `load` is consumed within its stage, so its batches are reclaimed: an edited `quote`
    // reads it again, so `load` runs again (the same rows), and `generate`, which read all
    // of them before, keeps its batches and its shards (issue 18 follow-up).
    write_pipeline(d, &llm, true);
    let mut first = distill(d);
    first.args(["run", "p.yaml", "--db", "r.redb"]);
    with_hub(&mut first, &hub, TOKEN);
    let out = first.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let generated = config_files(&hub, "generate");
    let quoted = config_files(&hub, "quote");
    assert!(!generated.is_empty() && !quoted.is_empty());
    let asked = llm.count();
    let commits = hub.commits(REPO).len();
    let generate_batches = batch_events(&d.join("r.redb"), "generate");
    // Edit the `quote` leaf: its batches are dropped and recomputed; `generate` is kept.
    let yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    let edited = yaml.replace(r#"'"{{ instruction }}"'"#, r#"'<{{ instruction }}>'"#);
    assert_ne!(edited, yaml);
    std::fs::write(d.join("p.yaml"), edited).unwrap();
    let mut second = distill(d);
    second.args(["run", "p.yaml", "--db", "r.redb"]);
    with_hub(&mut second, &hub, TOKEN);
    let out = second.output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("load: 'quote' reads it again")
            && err.contains("its other consumers keep theirs")
            && err.contains("generate: kept"),
        "{err}"
    );
    assert!(
        llm.count() <= asked + 1,
        "at most an endpoint check: no answer asked again"
    );
    assert_eq!(
        batch_events(&d.join("r.redb"), "generate"),
        generate_batches,
        "generate was not run again"
    );
    assert_eq!(
        config_files(&hub, "generate"),
        generated,
        "the kept leaf's shards are the same files"
    );
    let new_commits = &hub.commits(REPO)[commits..];
    assert!(!new_commits.is_empty());
    for commit in new_commits {
        assert!(
            commit
                .added
                .iter()
                .chain(&commit.deleted)
                .all(|path| !path.starts_with("generate/")),
            "the kept leaf was pushed again: {commit:?}"
        );
    }
    let requoted = config_files(&hub, "quote");
    assert!(!requoted.is_empty());
    assert!(
        requoted.keys().all(|path| !quoted.contains_key(path)),
        "the changed leaf's old shards are replaced: {:?} then {:?}",
        quoted.keys(),
        requoted.keys()
    );
    assert_every_row_once(&hub);
    let local = d.join("requoted");
    std::fs::create_dir(&local).unwrap();
    for (i, bytes) in requoted.values().enumerate() {
        std::fs::write(local.join(format!("{i}.parquet")), bytes).unwrap();
    }
    let check = Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; \
             print(sorted(pq.read_table(sys.argv[1]).column('quoted').to_pylist())[:2])",
        ])
        .arg(&local)
        .output()
        .unwrap();
    assert_eq!(
        stdout(&check).trim(),
        "['<write line 0>', '<write line 100>']",
        "the new template's rows are pushed: {}",
        stderr(&check)
    );
}
