"""Sharded runs on a Ray cluster: one Ray task per shard, the global steps in between.

Each task runs ``distill run PIPELINE --db DB_DIR/shard-I.redb --shard I/N`` (the package's
command, in a subprocess of the Ray worker) on storage every node sees; no rows go through
Ray, only the pipeline's path, the shard spec and database paths. A task that fails (a step
error, a node lost) is retried by Ray and resumes its shard's database, so nothing committed
is computed or paid for twice. Between rounds, one task runs the global steps over every
shard's committed rows (``--global``), and the shards continue from its output.

>>> import ray, distill.ray
>>> ray.init()                                                   # doctest: +SKIP
>>> distill.ray.run("pipeline.yaml", shards=8, db_dir="/shared/run", num_gpus=1)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Optional, Union

from . import _distill

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["ShardFailed", "run"]


class ShardFailed(RuntimeError):
    """A shard's (or the global run's) ``distill`` process exited with an error; Ray retries
    the task (it resumes). ``code`` is the exit code (see the README's table)."""

    def __init__(self, what: str, code: int, stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        super().__init__(f"{what} exited with code {code}: {tail}")
        self.code = code


def _distill_run(args: list[str], what: str, cwd: str) -> int:
    """Runs the package's ``distill`` command in a subprocess (its own signals and memory);
    raises :class:`ShardFailed` on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "distill._cli", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ShardFailed(what, proc.returncode, proc.stderr)
    return proc.returncode


def _shard_task(pipeline: str, index: int, count: int, db_dir: str, workers: int, cwd: str) -> str:
    db = os.path.join(db_dir, f"shard-{index}.redb")
    args = [pipeline, "--db", db, "--shard", f"{index}/{count}", "--workers", str(workers)]
    args += ["--global-db", os.path.join(db_dir, "global.redb")]
    _distill_run(args, f"shard {index}/{count}", cwd)
    return _distill.status(db)["status"]


def _global_task(pipeline: str, count: int, db_dir: str, workers: int, cwd: str) -> str:
    shards = ",".join(os.path.join(db_dir, f"shard-{i}.redb") for i in range(count))
    db = os.path.join(db_dir, "global.redb")
    args = [pipeline, "--global", "--db", db, "--shards", shards, "--workers", str(workers)]
    _distill_run(args, "the global run", cwd)
    return _distill.status(db)["status"]


def run(
    pipeline: Any,
    *,
    shards: int,
    db_dir: PathLike,
    num_cpus: float = 1,
    num_gpus: float = 0,
    resources: Optional[dict[str, float]] = None,
    max_retries: int = 3,
    workers: int = 0,
) -> dict[str, Any]:
    """Runs ``pipeline`` (a YAML file's path, or a :class:`distill.Pipeline`, saved to
    ``db_dir/pipeline.yaml``; its Python steps must be importable modules on every node) as
    ``shards`` Ray tasks on the cluster ``ray.init()`` connected to.

    Each shard task asks Ray for ``num_cpus``, ``num_gpus`` and custom ``resources``; a failed
    task is retried up to ``max_retries`` times and resumes its shard. The pipeline's limits
    (``budget_usd``, request rates, concurrency) are split evenly over the shards. Returns the
    databases (``shards``, ``global``) and the rounds run; export them all with
    ``distill export --db 'DB_DIR/*.redb' --out OUT``."""
    import ray

    if shards < 1:
        raise ValueError("shards must be at least 1")
    db_dir = os.path.abspath(os.fspath(db_dir))
    os.makedirs(db_dir, exist_ok=True)
    if hasattr(pipeline, "to_yaml"):
        path = os.path.join(db_dir, "pipeline.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(pipeline.to_yaml())
    else:
        path = os.path.abspath(os.fspath(pipeline))
    cwd = os.getcwd()
    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_retries": max_retries,
        "retry_exceptions": True,
    }
    if resources:
        options["resources"] = dict(resources)
    shard = ray.remote(_shard_task).options(**options)
    glob = ray.remote(_global_task).options(
        num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=True
    )
    rounds = 0
    while True:
        statuses = ray.get(
            [shard.remote(path, i, shards, db_dir, workers, cwd) for i in range(shards)]
        )
        rounds += 1
        if all(s == "finished" for s in statuses):
            break
        if not all(s in ("finished", "at_barrier") for s in statuses):
            raise RuntimeError(f"shards ended as {statuses}")
        ray.get(glob.remote(path, shards, db_dir, workers, cwd))
    return {
        "shards": [os.path.join(db_dir, f"shard-{i}.redb") for i in range(shards)],
        "global": os.path.join(db_dir, "global.redb"),
        "rounds": rounds,
    }
