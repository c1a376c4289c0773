//! `distill slurm` on a real single-node Slurm cluster (Debian's slurmctld, slurmd and munge,
//! started by scripts/local-slurm.sh in a directory of the test's own): the generated job array
//! and its afterok chain, one array task requeued while it runs (it resumes its shard), and
//! the export of all databases equal to a one-machine run's.
//!
//! Needs root and the packages (`.ci/run` installs them). Without `sbatch` the test is skipped
//! outside CI and fails in CI.

mod common;

use common::distill::{distill, root, run, stderr, stdout};
use distill_storage::{RunReader, RunStatus};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROWS: usize = 800;

/// The cluster, stopped (by the PIDs the script wrote) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let out = Command::new("bash")
            .arg(root().join("scripts/local-slurm.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .expect("run scripts/local-slurm.sh");
        assert!(
            out.status.success(),
            "local-slurm.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            dir: dir.to_path_buf(),
            conf: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    fn squeue(&self) -> String {
        let out = self
            .cmd("squeue")
            .args(["-h", "-o", "%i %T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/local-slurm.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn have_slurm() -> bool {
    let found = ["sbatch", "slurmctld", "slurmd", "munged"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)"
        );
        eprintln!("skipped: Slurm is not installed");
    }
    found
}

fn write_fixture(dir: &Path, base_url: &str) {
    let mut data = std::io::BufWriter::new(std::fs::File::create(dir.join("data.jsonl")).unwrap());
    for i in 0..ROWS {
        let topic = format!("topic {}", (i * 13) % (ROWS / 7 * 6));
        let row = serde_json::json!({"id": i, "topic": topic, "keep": i % 5 != 0});
        writeln!(data, "{row}").unwrap();
    }
    data.flush().unwrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            r#"name: slurm-test
steps:
  - name: load
    type: load_jsonl
    batch_size: 10
    params: {{path: data.jsonl}}
  - name: kept
    type: filter
    after: [load]
    input_batch_size: 10
    params: {{column: keep, op: eq, value: true}}
  - name: unique
    type: dedup
    after: [kept]
    params: {{columns: [topic]}}
  - name: answer
    type: text_generation
    after: [unique]
    input_batch_size: 5
    input_mappings: {{instruction: topic}}
    params:
      base_url: {base_url}
      model: mock-model
      concurrency: 8
      generation: {{temperature: 0.0, max_tokens: 16}}
"#
        ),
    )
    .unwrap();
}

fn export(dir: &Path, db: &str, out: &str) -> String {
    let o = run(
        dir,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    std::fs::read_to_string(dir.join(out).join("answer/train/data-00000.jsonl")).unwrap()
}

fn answered(db: &Path) -> u64 {
    RunReader::open(db)
        .ok()
        .and_then(|r| r.snapshot().ok())
        .and_then(|s| s.step("answer").ok().flatten())
        .map_or(0, |r| r.batches)
}

#[test]
fn a_job_array_with_a_requeued_task_and_global_jobs_equals_the_one_machine_run() {
    if !have_slurm() {
        return;
    }
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(30),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fixture(d, &server.base_url());
    let o = run(d, &["run", "pipeline.yaml", "--db", "one.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = export(d, "one.redb", "one");
    assert!(reference.lines().count() > 100);

    let cluster = Cluster::start(&d.join("slurm"));
    let o = distill(d)
        .env("SLURM_CONF", &cluster.conf)
        .args([
            "slurm",
            "pipeline.yaml",
            "--shards",
            "4",
            "--db-dir",
            "sh",
            "--submit",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // The first array and the chain: array, global (afterok), array (afterok).
    let jobs: Vec<String> = text
        .lines()
        .filter_map(|l| l.split("job ").nth(1))
        .map(|j| j.trim().to_owned())
        .collect();
    assert_eq!(jobs.len(), 3, "{text}");
    let script = std::fs::read_to_string(d.join("sh/shard.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=0-3",
        "#SBATCH --requeue",
        "--shard \"${SLURM_ARRAY_TASK_ID}/4\"",
    ] {
        assert!(script.contains(line), "{line}: {script}");
    }
    let submit = std::fs::read_to_string(d.join("sh/submit.sh")).unwrap();
    assert_eq!(
        submit.matches("--dependency=afterok:").count(),
        2,
        "{submit}"
    );

    // Array task 1 of the last round (after the global dedup) is requeued while it asks the
    // LLM: Slurm kills it and starts it again; it resumes its shard.
    let db1 = d.join("sh/shard-1.redb");
    let started = Instant::now();
    while answered(&db1) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "shard 1 never answered: {}",
            cluster.squeue()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let task = format!("{}_1", jobs[2]);
    let o = cluster
        .cmd("scontrol")
        .args(["requeue", &task])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scontrol requeue {task}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let at_requeue = RunReader::open(&db1)
        .unwrap()
        .snapshot()
        .unwrap()
        .step("answer")
        .unwrap()
        .unwrap();
    assert!(!at_requeue.done, "task 1 ended before the requeue");

    // Slurm holds a requeued job for about two minutes (BeginTime); release it now.
    let started = Instant::now();
    while !cluster.squeue().contains(&format!("{task} PENDING")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{task} not requeued: {}",
            cluster.squeue()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = cluster
        .cmd("scontrol")
        .args(["update", &format!("JobId={task}"), "StartTime=now"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let started = Instant::now();
    loop {
        let queue = cluster.squeue();
        if queue.trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "jobs still queued: {queue}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..4 {
        let db = d.join(format!("sh/shard-{i}.redb"));
        let status = RunReader::open(&db)
            .unwrap()
            .snapshot()
            .unwrap()
            .run_state()
            .unwrap()
            .status;
        assert_eq!(status, RunStatus::Finished, "shard {i}");
    }
    let log = std::fs::read_to_string(d.join(format!("sh/logs/shard-{}_1.out", jobs[2]))).unwrap();
    assert!(log.contains("resuming from the run database"), "{log}");
    assert_eq!(export(d, "sh/*.redb", "all"), reference);
}
