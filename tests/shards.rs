//! Sharded runs through the real binary: shards by hand and with `--local-shards`, global
//! steps (dedup, sample, minhash_dedup) over all shards, a shard killed with SIGKILL and
//! resumed, a shard database refused to another shard; the export of all databases equals a
//! one-machine run's.

mod common;

use common::distill::{distill, run, stderr, stdout};
use distill_storage::{RunReader, RunStatus};
use distill_testkit::mock_hub::{HubBehaviour, MockHub};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ROWS: usize = 4000;

fn write_fixture(dir: &Path) {
    let mut data = std::io::BufWriter::new(std::fs::File::create(dir.join("data.jsonl")).unwrap());
    for i in 0..ROWS {
        // Topics repeat across shards' ranges, so the global dedup removes rows of one shard
        // that another shard holds first.
        let topic = format!("topic {}", (i * 13) % (ROWS / 7 * 6));
        let row = serde_json::json!({"id": i, "topic": topic, "tags": [i % 3, i % 5], "keep": i % 5 != 0});
        writeln!(data, "{row}").unwrap();
    }
    data.flush().unwrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        r#"name: shards-test
steps:
  - name: load
    type: load_jsonl
    batch_size: 37
    params: {path: data.jsonl}
  - name: prompt
    type: format_text
    after: [load]
    input_batch_size: 23
    params:
      template: "Write about {{ topic }} (row {{ id }}, tags {{ tags | join(',') }})"
      output: prompt
  - name: kept
    type: filter
    after: [prompt]
    input_batch_size: 31
    params: {column: keep, op: eq, value: true}
  - name: unique
    type: dedup
    after: [kept]
    input_batch_size: 50
    params: {columns: [topic]}
  - name: near
    type: minhash_dedup
    after: [kept]
    input_batch_size: 40
    params: {column: topic, threshold: 0.8, num_perm: 64, seed: 7}
  - name: expanded
    type: expand_list
    after: [unique]
    input_batch_size: 19
    params: {column: tags, output: tag}
  - name: final
    type: keep_columns
    after: [expanded]
    input_batch_size: 29
    params: {columns: [id, tag, prompt]}
  - name: sampled
    type: sample
    after: [unique]
    params: {n: 100, seed: 3}
"#,
    )
    .unwrap();
}

const LEAVES: [&str; 3] = ["near", "final", "sampled"];

/// Each leaf's exported JSONL text.
fn export(dir: &Path, db: &str, out: &str) -> Vec<String> {
    let o = run(
        dir,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    LEAVES
        .iter()
        .map(|leaf| {
            std::fs::read_to_string(dir.join(out).join(leaf).join("train/data-00000.jsonl"))
                .unwrap()
        })
        .collect()
}

fn one_machine(d: &Path) -> Vec<String> {
    let o = run(d, &["run", "pipeline.yaml", "--db", "one.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = export(d, "one.redb", "one");
    assert!(reference[1].lines().count() > 1000);
    reference
}

fn status_of(db: &Path) -> RunStatus {
    RunReader::open(db)
        .unwrap()
        .snapshot()
        .unwrap()
        .run_state()
        .unwrap()
        .status
}

fn assert_same(got: &[String], reference: &[String]) {
    for ((leaf, got), want) in LEAVES.iter().zip(got).zip(reference) {
        assert!(
            got == want,
            "leaf '{leaf}' differs from the one-machine run ({} vs {} lines)",
            got.lines().count(),
            want.lines().count()
        );
    }
}

#[test]
fn four_local_shards_with_global_steps_equal_the_one_machine_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fixture(d);
    let reference = one_machine(d);

    let o = run(
        d,
        &[
            "run",
            "pipeline.yaml",
            "--local-shards",
            "4",
            "--db-dir",
            "sh",
            "--workers",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 0..4 {
        let db = d.join(format!("sh/shard-{i}.redb"));
        assert_eq!(status_of(&db), RunStatus::Finished, "shard {i}");
    }
    assert_eq!(status_of(&d.join("sh/global.redb")), RunStatus::Finished);
    let got = export(d, "sh/*.redb", "all");
    assert_same(&got, &reference);

    let o = run(d, &["status", "--db", "sh/*.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("5 databases: 5 finished, 0 at_barrier"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("finished, shard 2/4"), "{}", stdout(&o));
    // A shard is not pushed on its own (its card would stand for the whole dataset); all the
    // databases are, as their export, in one commit.
    let o = run(d, &["push", "--db", "sh/shard-0.redb", "--repo", "me/data"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("push all its databases"),
        "{}",
        stderr(&o)
    );
    let hub = MockHub::start(HubBehaviour {
        token: Some("hf_shards_SECRET".into()),
        ..HubBehaviour::default()
    });
    let o = distill(d)
        .args(["push", "--db", "sh/*.redb", "--repo", "me/data"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", "hf_shards_SECRET")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hub.commits("me/data").len(), 1);
    let o = run(d, &["export", "--db", "sh/*.redb", "--out", "parquet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = hub.files("me/data");
    for leaf in LEAVES {
        let path = format!("{leaf}/train/data-00000.parquet");
        let local = std::fs::read(d.join("parquet").join(&path)).unwrap();
        assert!(
            files.get(&path) == Some(&local),
            "{path} differs on the Hub"
        );
    }
    assert!(files.contains_key("README.md"));

    // load_parquet splits by row range from the file's footer: 3 shards of the exported
    // 'final' leaf read back the same rows, in order.
    std::fs::write(
        d.join("parquet.yaml"),
        "name: from-parquet\nsteps:\n  - name: final\n    type: load_parquet\n    batch_size: 100\n    params: {path: parquet/final/train/data-00000.parquet}\n",
    )
    .unwrap();
    let o = run(
        d,
        &[
            "run",
            "parquet.yaml",
            "--local-shards",
            "3",
            "--db-dir",
            "pq",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        d,
        &[
            "export",
            "--db",
            "pq/*.redb",
            "--out",
            "pq-out",
            "--format",
            "jsonl",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let back = std::fs::read_to_string(d.join("pq-out/final/train/data-00000.jsonl")).unwrap();
    assert!(back == reference[1], "rows read back from Parquet differ");
    let rows = |i: usize| {
        let reader = RunReader::open(d.join(format!("pq/shard-{i}.redb"))).unwrap();
        reader
            .snapshot()
            .unwrap()
            .step("final")
            .unwrap()
            .unwrap()
            .rows
    };
    assert_eq!(
        rows(0) + rows(1) + rows(2),
        reference[1].lines().count() as u64
    );
    assert!(rows(0) > 0 && rows(1) > 0 && rows(2) > 0);
    // An export of some shards only is refused, naming what is missing.
    let o = run(
        d,
        &[
            "export",
            "--db",
            "sh/shard-0.redb,sh/shard-2.redb",
            "--out",
            "part",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing: 1/4, 3/4"), "{}", stderr(&o));
}

fn shard(d: &Path, i: usize) -> std::process::Output {
    let db = format!("sh/shard-{i}.redb");
    let spec = format!("{i}/4");
    run(
        d,
        &[
            "run",
            "pipeline.yaml",
            "--db",
            &db,
            "--shard",
            &spec,
            "--workers",
            "1",
        ],
    )
}

fn global(d: &Path) -> std::process::Output {
    run(
        d,
        &[
            "run",
            "pipeline.yaml",
            "--global",
            "--db",
            "sh/global.redb",
            "--shards",
            "sh/shard-*.redb",
        ],
    )
}

#[test]
fn shards_by_hand_a_killed_shard_resumes_and_the_global_step_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fixture(d);
    std::fs::create_dir(d.join("sh")).unwrap();
    let reference = one_machine(d);

    for i in [0, 2, 3] {
        let o = shard(d, i);
        assert!(o.status.success(), "shard {i}: {}", stderr(&o));
        assert!(stdout(&o).contains("at_barrier"), "{}", stdout(&o));
        let db = d.join(format!("sh/shard-{i}.redb"));
        assert_eq!(status_of(&db), RunStatus::AtBarrier);
    }
    let o = run(d, &["status", "--db", "sh/shard-0.redb", "--json"]);
    assert!(
        stdout(&o).contains("\"status\": \"at_barrier\""),
        "{}",
        stdout(&o)
    );
    // Shard 1 is killed with SIGKILL in the middle of its first stage.
    let db1 = d.join("sh/shard-1.redb");
    let mut child = distill(d)
        .args([
            "run",
            "pipeline.yaml",
            "--db",
            "sh/shard-1.redb",
            "--shard",
            "1/4",
        ])
        .args(["--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "shard 1 made no progress"
        );
        let batches = RunReader::open(&db1)
            .ok()
            .and_then(|r| r.snapshot().ok())
            .and_then(|s| s.step("prompt").ok().flatten())
            .map_or(0, |r| r.batches);
        if batches >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = status_of(&db1);
    assert!(
        !matches!(killed, RunStatus::AtBarrier | RunStatus::Finished),
        "shard 1 was not killed mid-run: {killed}"
    );

    // The global run refuses to start, naming the shard behind (exit 7).
    let o = global(d);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shard-1.redb") && !stderr(&o).contains("shard-0.redb"),
        "{}",
        stderr(&o)
    );

    // Shard 1's database is refused to another shard, and to an unsharded run.
    for args in [&["--shard", "2/4"][..], &["--shard", "1/3"][..], &[][..]] {
        let o = run(
            d,
            &[
                &["run", "pipeline.yaml", "--db", "sh/shard-1.redb"][..],
                args,
            ]
            .concat(),
        );
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("holds shard 1/4"), "{}", stderr(&o));
    }
    assert_eq!(
        status_of(&db1),
        killed,
        "a refused run changed the database"
    );

    // Re-run: it resumes. The global run and then shard 1 are killed in the middle of their
    // copies (after 512 of a shard's rows): each resumes its copy.
    let o = shard(d, 1);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    let o = distill(d)
        .args(["run", "pipeline.yaml", "--global", "--db", "sh/global.redb"])
        .args(["--shards", "sh/shard-*.redb"])
        .env("DISTILL_FAULT", "copy-kill")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None, "not killed: {}", stderr(&o));
    let o = global(d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = distill(d)
        .args([
            "run",
            "pipeline.yaml",
            "--db",
            "sh/shard-1.redb",
            "--shard",
            "1/4",
        ])
        .env("DISTILL_FAULT", "copy-kill")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None, "not killed: {}", stderr(&o));
    // Then the rounds: shards (to the `sample` barrier), global run, shards.
    for round in 0..2 {
        for i in 0..4 {
            let o = shard(d, i);
            assert!(o.status.success(), "shard {i}: {}", stderr(&o));
        }
        if round == 0 {
            let o = global(d);
            assert!(o.status.success(), "global: {}", stderr(&o));
        }
    }
    for i in 0..4 {
        let db = d.join(format!("sh/shard-{i}.redb"));
        assert_eq!(status_of(&db), RunStatus::Finished, "shard {i}");
    }
    let got = export(d, "sh/*.redb", "all");
    assert_same(&got, &reference);
}
