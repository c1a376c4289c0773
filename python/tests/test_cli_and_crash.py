"""The `distill` command the package installs runs Python steps (`type: py:MODULE:NAME`);
a run with Python steps killed with SIGKILL resumes to an uninterrupted run's output; a run
can be read (`distill.load`) while it goes on; Ctrl-C stops a run from Python cleanly."""

import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

import distill
from conftest import wait_for

PIPELINE = """\
name: py-crash
steps:
  - name: gen
    type: py:pysteps:numbers
    batch_size: 10
    params: {count: COUNT}
  - name: slow
    type: py:pysteps:slow_upper
    after: [gen]
    input_batch_size: 5
    params: {delay: DELAY}
  - name: tag
    type: py:pysteps:Tagger
    after: [slow]
    input_batch_size: 7
    params: {tag: k}
"""


def write_pipeline(path, count=200, delay=0.02):
    path.write_text(PIPELINE.replace("COUNT", str(count)).replace("DELAY", str(delay)))
    return path


def exported(db, out):
    distill.export(db, out)
    return pq.read_table(out / "tag" / "train" / "data-00000.parquet").to_pylist()


def committed(db, step="tag"):
    try:
        steps = {s["step"]: s for s in distill.status(db)["steps"]}
    except distill.DistillError:
        return 0
    return steps.get(step, {}).get("batches", 0)


def test_the_distill_command_runs_python_steps(tmp_path, env, distill_cmd):
    yaml = write_pipeline(tmp_path / "p.yaml", count=30, delay=0)
    info = subprocess.run([distill_cmd, "info", str(yaml)], env=env, capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "slow (step 'py:pysteps:slow_upper'" in info.stdout
    db = tmp_path / "run.redb"
    run = subprocess.run(
        [distill_cmd, "run", str(yaml), "--db", str(db)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "tag: 30 rows" in run.stdout
    rows = distill.load(db)["tag"].to_list()
    assert rows[29] == {"n": 29, "text": "row 29", "upper": "ROW 29", "tag": "k:row 29"}


def test_the_distill_command_reports_a_python_error_with_exit_code_4(tmp_path, env, distill_cmd):
    yaml = tmp_path / "p.yaml"
    yaml.write_text(
        "name: f\nsteps:\n"
        "  - {name: gen, type: 'py:pysteps:numbers', params: {count: 9}}\n"
        "  - {name: check, type: 'py:pysteps:fail_at', after: [gen], params: {n: 3}}\n"
    )
    db = tmp_path / "run.redb"
    run = subprocess.run(
        [distill_cmd, "run", str(yaml), "--db", str(db)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 4, run.stderr
    assert "ValueError: row 3 is not welcome" in run.stderr
    status = subprocess.run(
        [distill_cmd, "status", "--db", str(db)], env=env, capture_output=True, text=True
    )
    assert "row 3 is not welcome" in status.stdout
    # An unknown module is an invalid pipeline (exit 3) naming the step.
    yaml.write_text("name: f\nsteps:\n  - {name: gen, type: 'py:no_such_module:x'}\n")
    run = subprocess.run(
        [distill_cmd, "run", str(yaml), "--db", str(tmp_path / "b.redb")],
        env=env, capture_output=True, text=True,
    )
    assert run.returncode == 3 and "gen" in run.stderr and "no_such_module" in run.stderr


def test_sigkill_and_resume_equals_an_uninterrupted_run(tmp_path, env, distill_cmd):
    yaml = write_pipeline(tmp_path / "p.yaml")
    clean_db = tmp_path / "clean.redb"
    subprocess.run(
        [distill_cmd, "run", str(yaml), "--db", str(clean_db)],
        env=env, check=True, capture_output=True,
    )
    expected = exported(clean_db, tmp_path / "clean")
    assert len(expected) == 200

    db = tmp_path / "run.redb"
    kills = 0
    for target in (2, 9, 17):
        proc = subprocess.Popen(
            [distill_cmd, "run", str(yaml), "--db", str(db)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: committed(db) >= target or proc.poll() is not None, what="progress")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 2, "the run was killed while it ran"
    assert distill.status(db)["status"] in ("interrupted", "running", "finished")
    subprocess.run(
        [distill_cmd, "run", str(yaml), "--db", str(db)],
        env=env, check=True, capture_output=True,
    )
    assert exported(db, tmp_path / "resumed") == expected


def test_load_reads_a_live_run(tmp_path, env, distill_cmd):
    yaml = write_pipeline(tmp_path / "p.yaml", count=150, delay=0.03)
    db = tmp_path / "run.redb"
    proc = subprocess.Popen(
        [distill_cmd, "run", str(yaml), "--db", str(db)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    seen = []
    try:
        wait_for(lambda: committed(db) >= 2, what="the first batches")
        while proc.poll() is None:
            rows = distill.load(db)["tag"].to_list()
            seen.append(rows)
    finally:
        proc.wait()
    assert proc.returncode == 0
    final = distill.load(db)["tag"].to_list()
    assert len(final) == 150
    live = [rows for rows in seen if 0 < len(rows) < 150]
    assert live, "a read saw the run between its start and its end"
    for rows in seen:
        assert rows == final[: len(rows)], "a live read is a prefix of the final rows"


def test_ctrl_c_stops_a_run_from_python_cleanly(tmp_path, env):
    log = tmp_path / "life.log"
    db = tmp_path / "run.redb"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import distill, pysteps
        tagger = pysteps.Tagger(tag="c", log={str(log)!r}, delay=0.05)
        p = distill.Pipeline("ctrl-c")
        p.step("gen", pysteps.numbers, batch_size=5, params={{"count": 400}}) >> p.step("tag", tagger, input_batch_size=5)
        print("started", flush=True)
        try:
            p.run({str(db)!r}, progress=False)
        except KeyboardInterrupt as e:
            print("interrupted:", e, flush=True)
            print("state:", tagger.state, flush=True)
            print("status:", distill.status({str(db)!r})["status"], flush=True)
            sys.exit(0)
        sys.exit(1)
    """))
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: committed(db) >= 3, what="progress")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "interrupted: the run stopped cleanly" in out
    assert "state: unloaded" in out
    assert "status: stopped" in out
    assert log.read_text().split() == ["load", "unload"]
    done = distill.status(db)["steps"]
    rows = {s["step"]: s["rows"] for s in done}["tag"]
    assert 0 < rows < 400
    # Running again resumes to the end.
    p = distill.Pipeline("ctrl-c")
    import pysteps

    p.step("gen", pysteps.numbers, batch_size=5, params={"count": 400}) >> p.step(
        "tag", pysteps.Tagger(tag="c", log=str(log)), input_batch_size=5
    )
    summary = p.run(db, progress=False)
    assert summary.resumed and summary.leaves == {"tag": 400}
    assert [r["n"] for r in distill.load(db)["tag"].to_list()] == list(range(400))
