//! LLM tasks through the real binary. First, invariant 3 (never pay twice): the real `distill` binary runs an LLM task against
//! the loopback mock server and is killed with SIGKILL several times, then resumed until done.
//! After each kill, every request whose answer is in the run's cache is never sent again, and
//! the final output has every row.

mod common;

use common::distill::{distill, read_jsonl, run, stderr};
use common::seed;
use distill_llm::cache_key;
use distill_storage::RunReader;
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

const ROWS: usize = 120;
const MIN_KILLS: usize = 4;

#[test]
fn killed_runs_never_ask_again_for_a_cached_answer() {
    let mut rng = fastrand::Rng::with_seed(seed("llm_kill"));
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(15),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data: String = (0..ROWS)
        .map(|i| format!("{{\"id\": {i}, \"instruction\": \"write line {i}\"}}\n"))
        .collect();
    std::fs::write(d.join("data.jsonl"), data).unwrap();
    std::fs::write(
        d.join("p.yaml"),
        format!(
            "name: llm-kill\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 10\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    input_batch_size: 5\n    params:\n      base_url: {}\n      model: mock-model\n      concurrency: 3\n      generation: {{temperature: 0.0, max_tokens: 32}}\n",
            server.base_url()
        ),
    )
    .unwrap();
    let mut kills = 0;
    let mut round_kills = 0;
    let mut round_start = 0;
    let mut forbidden: HashSet<[u8; 32]> = HashSet::new();
    for attempt in 0.. {
        assert!(attempt < 200, "no progress");
        let seen_before = server.received().len();
        let mut child = distill(d)
            .args(["run", "p.yaml", "--db", "r.redb"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(150..700)));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            round_kills += 1;
        }
        // What this run sent must not include an answer cached by an earlier run.
        for r in &server.received()[seen_before..] {
            if r.path.ends_with("/chat/completions") {
                let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert!(
                    !forbidden.contains(&cache_key(&body, 0)),
                    "attempt {attempt}: a request whose answer was cached was sent again: {}",
                    r.body
                );
            }
        }
        // Everything cached now may never be asked again.
        if d.join("r.redb").exists() {
            let reader = RunReader::open(d.join("r.redb")).unwrap();
            let snap = reader.snapshot().unwrap();
            for r in server.received() {
                if r.status == 200 && r.path.ends_with("/chat/completions") {
                    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                    let key = cache_key(&body, 0);
                    if snap.cached(&key).unwrap().is_some() {
                        forbidden.insert(key);
                    }
                }
            }
        }
        if finished && kills >= MIN_KILLS {
            break;
        }
        if finished {
            // Done before enough kills: start again on a fresh database.
            let out = run(
                d,
                &[
                    "export", "--db", "r.redb", "--out", "early", "--format", "jsonl",
                ],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            std::fs::remove_file(d.join("r.redb")).unwrap();
            forbidden.clear();
            round_start = server.received().len();
            round_kills = 0;
        }
    }
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_jsonl(&d.join("o/generate/train/data-00000.jsonl"));
    assert_eq!(rows.len(), ROWS);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["generation"], format!("echo: write line {i}"));
    }
    // Only answers not yet durable at a kill can be lost: those in flight at the server or
    // received and waiting for their cache commit, at most one per request thread of the task
    // (twice its concurrency of 3, whatever the batches in flight). The exact guarantee is the
    // cache check above.
    let answered = server.received()[round_start..]
        .iter()
        .filter(|r| r.status == 200 && r.path.ends_with("/chat/completions"))
        .count();
    eprintln!(
        "{kills} kills ({round_kills} in the last run), {answered} answered requests for {ROWS} rows"
    );
    assert!(
        answered <= ROWS + 6 * round_kills,
        "{answered} answers for {ROWS} rows and {round_kills} kills"
    );
}

/// Guards invariant 6 (nothing secret at rest): the API key reaches the server, and its bytes
/// appear nowhere in the run database, the export or what distill printed.
#[test]
fn the_api_key_is_never_written_anywhere() {
    const KEY: &str = "sk-distill-test-0f3a9c1e7b5d";
    let server = MockLlm::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("data.jsonl"),
        "{\"instruction\": \"hi\"}\n{\"instruction\": \"there\"}\n",
    )
    .unwrap();
    let yaml = format!(
        "name: secret\nsteps:\n  - name: load\n    type: load_jsonl\n    params: {{path: data.jsonl}}\n  - name: generate\n    type: text_generation\n    after: [load]\n    params: {{base_url: {}, model: m, api_key_env: DISTILL_TEST_API_KEY, keep_raw: true}}\n",
        server.base_url()
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let mut printed = String::new();
    let out = distill(d)
        .args(["run", "p.yaml", "--db", "r.redb"])
        .env("DISTILL_TEST_API_KEY", KEY)
        .output()
        .unwrap();
    printed.push_str(&String::from_utf8_lossy(&out.stdout));
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{printed}");
    for args in [
        vec!["export", "--db", "r.redb", "--out", "pq"],
        vec![
            "export", "--db", "r.redb", "--out", "js", "--format", "jsonl",
        ],
        vec!["status", "--db", "r.redb", "--json"],
    ] {
        let out = run(d, &args);
        assert!(out.status.success());
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // A wrong key fails at load, and the message does not echo the key it was given.
    let out = distill(d)
        .args(["run", "p.yaml", "--db", "wrong.redb"])
        .env("DISTILL_TEST_API_KEY", "sk-wrong-key-77aa")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let wrong = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        wrong.contains("refused the API key") && !wrong.contains("sk-wrong-key-77aa"),
        "{wrong}"
    );
    let rows = read_jsonl(&d.join("js/generate/train/data-00000.jsonl"));
    assert_eq!(rows[0]["generation"], "echo: hi");
    assert!(!printed.contains(KEY));
    let mut files = vec![d.join("r.redb"), d.join("wrong.redb")];
    for sub in ["pq", "js"] {
        for entry in walk(&d.join(sub)) {
            files.push(entry);
        }
    }
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is in {}",
            file.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
