"""distill: build datasets with and for LLMs on a run log that survives anything.

A pipeline is a DAG of steps (built-in ones such as ``load_jsonl``, ``text_generation`` and
``dedup``, or steps written in Python) run on a run database (redb): every batch is committed
as it is made, so a run killed at any instant resumes exactly, and an LLM answer that was paid
for is never requested again.

>>> import distill
>>> @distill.step(inputs=["text"], outputs=["upper"])
... def shout(rows):
...     for row in rows:
...         row["upper"] = row["text"].upper()
...     return rows
>>> p = distill.Pipeline("demo")
>>> load = p.step("load", "inline", params={"rows": [{"text": "hi"}]})
>>> _ = load >> p.step("shout", shout)
>>> p.run("demo.redb", progress=False).leaves     # doctest: +SKIP
{'shout': 1}
>>> distill.load("demo.redb")["shout"][0]         # doctest: +SKIP
{'text': 'hi', 'upper': 'HI'}
"""

from __future__ import annotations

import os
from typing import Any, Union

from . import _distill
from ._distill import (
    AlreadyLoadedError,
    BudgetReachedError,
    DistillError,
    InternalError,
    PipelineError,
    StepFailedError,
    StepStateError,
    StorageError,
    TaskContext,
)
from ._load import load
from ._pipeline import Pipeline, PipelineInfo, RunSummary, StepRef
from ._steps import (
    FunctionStep,
    Generator,
    GlobalStep,
    Step,
    Task,
    generator,
    global_step,
    step,
    task,
)

__version__: str = _distill.__version__

PathLike = Union[str, "os.PathLike[str]"]


def status(db: PathLike) -> dict[str, Any]:
    """Where the run in ``db`` stands, from one snapshot (works while it runs, from another
    process): ``status`` (created, running, stopped, finished, failed, interrupted), ``stage``,
    ``message``, and per step (``steps``) its ``state``, ``rows``, ``batches``, ``done``,
    ``counters`` and ``error`` (a Python step's traceback), as ``distill status --json``."""
    return _distill.status(os.fspath(db))


def export(db: PathLike, out: PathLike, format: str = "parquet") -> dict[str, Any]:
    """Exports the distiset of the run in ``db`` (finished, failed or live) to the folder
    ``out``: one config per leaf (``format``: ``"parquet"`` or ``"jsonl"``), a dataset card,
    the pipeline and ``distiset.json``, whose content is returned. ``out`` must be missing,
    empty, or hold only an earlier export."""
    return _distill.export(os.fspath(db), os.fspath(out), format)


__all__ = [
    "AlreadyLoadedError",
    "BudgetReachedError",
    "DistillError",
    "FunctionStep",
    "Generator",
    "GlobalStep",
    "InternalError",
    "Pipeline",
    "PipelineError",
    "PipelineInfo",
    "RunSummary",
    "Step",
    "StepFailedError",
    "StepRef",
    "StepStateError",
    "StorageError",
    "Task",
    "TaskContext",
    "export",
    "generator",
    "global_step",
    "load",
    "status",
    "step",
    "task",
]
