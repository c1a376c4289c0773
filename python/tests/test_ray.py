"""`distill.ray.run` on a real local Ray cluster (`ray.init()`): one Ray task per shard, a
global dedup between rounds, one task failing once and retried by Ray (it resumes its shard);
the export of all databases equals a one-machine run's."""

import json
import os
import subprocess
import sys

import ray

import distill.ray
from conftest import TESTS

ROWS = 600

PIPELINE = """\
name: ray-test
steps:
  - name: load
    type: load_jsonl
    batch_size: 20
    params: {path: data.jsonl}
  - name: check
    type: py:pysteps:fail_once
    after: [load]
    input_batch_size: 10
    params: {at: 437, marker: MARKER}
  - name: unique
    type: dedup
    after: [check]
    params: {columns: [topic]}
  - name: shout
    type: py:pysteps:upper
    after: [unique]
    input_batch_size: 15
    input_mappings: {text: topic}
"""


def distill_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "distill._cli", *args], cwd=cwd, capture_output=True, text=True
    )


def exported(run_dir, db, out):
    proc = distill_cli("export", "--db", db, "--out", out, "--format", "jsonl", cwd=run_dir)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(run_dir, out, "shout", "train", "data-00000.jsonl")) as f:
        return f.read()


def test_ray_shards_with_a_task_failing_once_equal_the_one_machine_run(tmp_path, monkeypatch):
    marker = tmp_path / "failed-once"
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"id": i, "topic": f"topic {(i * 7) % 250}"}) + "\n")
    yaml = tmp_path / "p.yaml"
    yaml.write_text(PIPELINE.replace("MARKER", str(marker)))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))

    # The one-machine run, with the failure already spent.
    marker.touch()
    proc = distill_cli("run", str(yaml), "--db", "one.redb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    reference = exported(tmp_path, "one.redb", "one")
    assert len(reference.splitlines()) == 250
    marker.unlink()

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}},
    )
    try:
        result = distill.ray.run(
            str(yaml), shards=3, db_dir=tmp_path / "sh", num_cpus=1, max_retries=2
        )
    finally:
        ray.shutdown()
    # Shard 2 holds row 437: its task failed once (exit 4, a step failure), Ray retried it.
    assert marker.exists()
    statuses = {db: distill.status(db)["status"] for db in result["shards"]}
    assert set(statuses.values()) == {"finished"}, statuses
    assert result["rounds"] == 2
    got = exported(tmp_path, str(tmp_path / "sh" / "*.redb"), "all")
    assert got == reference
