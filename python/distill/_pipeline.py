"""Pipelines from Python: the builder, ``>>`` between steps, info and run."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence, Union

from . import _distill
from ._progress import make_progress
from ._steps import FunctionStep, Step, type_name

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class RunSummary:
    """How a run ended."""

    db: str
    """The run database."""
    resumed: bool
    """Whether the database held progress of an earlier session."""
    already_finished: bool
    """Whether the run had finished before this call (nothing was left to do)."""
    leaves: dict[str, int] = field(default_factory=dict)
    """Each leaf step with its committed row count."""
    push: Any = None
    """Where the push to the Hub stands, when the pipeline has a ``push:`` section."""

    def __str__(self) -> str:
        what = (
            "already finished"
            if self.already_finished
            else ("resumed and finished" if self.resumed else "finished")
        )
        rows = ", ".join(f"{leaf}: {n} rows" for leaf, n in self.leaves.items())
        return f"run {what} ({self.db}): {rows}"


class PipelineInfo(dict):  # type: ignore[type-arg]
    """What :meth:`Pipeline.info` returns: a dict (``name``, ``signature``, ``stages``: lists of
    steps with ``name``, ``kind``, ``type``, ``batch_size``, ``after``, ``inputs``, ``columns``,
    ``signature``; ``leaves``) that prints as ``distill info`` does."""

    def __str__(self) -> str:
        lines = [f"pipeline '{self['name']}' (signature {self['signature']})"]
        for i, stage in enumerate(self["stages"]):
            lines.append(f"stage {i}:")
            for s in stage:
                after = f" after {', '.join(s['after'])}" if s["after"] else ""
                lines.append(
                    f"  {s['name']} ({s['kind']} '{s['type']}', batch {s['batch_size']}){after}"
                )
                if s["kind"] != "generator":
                    lines.append(f"    in:  {', '.join(s['inputs'])}")
                lines.append(f"    out: {', '.join(s['columns'])}")
        lines.append(f"leaves: {', '.join(self['leaves'])}")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


class StepRef:
    """A step of a :class:`Pipeline`. ``a >> b`` makes ``b`` come after ``a`` (and returns
    ``b``, so ``a >> b >> c`` chains; lists fan out and in: ``a >> [b, c] >> d``);
    ``a.step(...)`` adds a step after ``a``. ``load()``, ``unload()`` and ``loaded()`` manage
    the step's lifecycle by hand: a run of the pipeline uses a step loaded by hand as it is."""

    def __init__(self, pipeline: "Pipeline", name: str) -> None:
        self.pipeline = pipeline
        self.name = name

    def __repr__(self) -> str:
        return f"<distill step {self.name!r} of pipeline {self.pipeline.name!r}>"

    def __rshift__(self, other: Any) -> Any:
        for target in other if isinstance(other, (list, tuple)) else [other]:
            self.pipeline._core.connect(self.name, _ref_name(target))
        return other

    def __rrshift__(self, other: Any) -> "StepRef":
        for source in other if isinstance(other, (list, tuple)) else [other]:
            self.pipeline._core.connect(_ref_name(source), self.name)
        return self

    def step(self, name: str, type: Any, **kwargs: Any) -> "StepRef":
        """Adds a step after this one (see :meth:`Pipeline.step`)."""
        after = list(kwargs.pop("after", None) or [])
        return self.pipeline.step(name, type, after=[self.name, *after], **kwargs)

    def _handle(self) -> "_distill.StepHandle":
        return self.pipeline._core.handle(self.name)

    def load(self) -> None:
        """Loads the step by hand (:class:`distill.AlreadyLoadedError` if it is loaded)."""
        self._handle().load()

    def unload(self) -> None:
        """Unloads the step if it was loaded by hand."""
        self._handle().unload()

    @contextlib.contextmanager
    def loaded(self) -> Iterator["StepRef"]:
        """``with ref.loaded():`` loads the step and unloads it on exit, even after an
        exception."""
        self.load()
        try:
            yield self
        finally:
            self.unload()

    @property
    def state(self) -> str:
        """``"unloaded"``, ``"loading"`` or ``"loaded"``."""
        return self._handle().state


def _ref_name(ref: Any) -> str:
    if isinstance(ref, StepRef):
        return ref.name
    if isinstance(ref, str):
        return ref
    raise TypeError(f">> connects steps of a pipeline (StepRef or name), not {ref!r}")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, StepRef)):
        return [_ref_name(value)]
    return [_ref_name(v) for v in value]


class Pipeline:
    """A pipeline: the same model as a YAML file and the Rust builder, with the same signature.

    ``Pipeline(name).step(name, type, ...)`` adds steps, where ``type`` is a built-in step
    type's name (``"load_jsonl"``, ``"text_generation"``...) or a Python step (a function
    decorated with :func:`distill.step` and the like, a :class:`distill.Step` subclass, or an
    instance of one); ``>>`` connects them. ``run(db)`` runs it on a run database, resuming
    what the database holds.
    """

    def __init__(
        self, name: str, *, description: str | None = None, budget_usd: float | None = None
    ) -> None:
        self._core = _distill.PipelineCore(name, description)
        if budget_usd is not None:
            self._core.set_budget(budget_usd)

    @classmethod
    def from_yaml(cls, path: PathLike) -> "Pipeline":
        """Reads a pipeline file; a step of type ``py:MODULE:NAME`` is the Python step that
        module defines (imported when the pipeline is built)."""
        pipeline = cls.__new__(cls)
        pipeline._core = _distill.PipelineCore.from_yaml(os.fspath(path))
        return pipeline

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._core.name

    def step(
        self,
        name: str,
        type: Any,
        *,
        after: Any = None,
        batch_size: int | None = None,
        input_batch_size: int | None = None,
        params: Mapping[str, Any] | None = None,
        input_mappings: Mapping[str, str] | None = None,
        output_mappings: Mapping[str, str] | None = None,
        on_error: str | None = None,
    ) -> StepRef:
        """Adds step ``name`` of ``type`` and returns it.

        ``after``: the steps it comes after (names or :class:`StepRef`); ``batch_size``: rows
        per batch of a generator; ``input_batch_size``: rows per input batch of other steps;
        ``params``: the type's parameters (a Python step function gets them as keyword
        arguments, a step class as constructor arguments); ``input_mappings`` and
        ``output_mappings`` rename columns; ``on_error``: ``"fail"`` (default) or ``"mark"``.
        """
        obj = None
        handle = None
        if isinstance(type, str):
            kind = type
        elif isinstance(type, Step):
            if params:
                raise ValueError(
                    f"step {name!r}: a step object takes no params; pass them to its constructor"
                )
            kind = type_name(type)
            handle = type._distill_handle()
            obj = type
        elif isinstance(type, FunctionStep) or (
            isinstance(type, builtins_type) and issubclass(type, Step)
        ):
            kind = type_name(type)
            obj = type
        else:
            raise TypeError(
                f"step {name!r}: type is a built-in type's name or a Python step "
                f"(@distill.step function, distill.Step subclass or instance), not {type!r}"
            )
        self._core.add_step(
            name,
            kind,
            _as_list(after),
            batch_size,
            input_batch_size,
            dict(params) if params is not None else None,
            dict(input_mappings) if input_mappings else None,
            dict(output_mappings) if output_mappings else None,
            on_error,
            obj,
            handle,
        )
        return StepRef(self, name)

    def __getitem__(self, name: str) -> StepRef:
        if name not in self._core.step_names():
            raise KeyError(name)
        return StepRef(self, name)

    @property
    def steps(self) -> list[StepRef]:
        """The steps, in the order added."""
        return [StepRef(self, n) for n in self._core.step_names()]

    def info(self) -> PipelineInfo:
        """Validates the pipeline and returns its stages, steps, columns and leaves (prints as
        ``distill info`` does). Raises :class:`distill.PipelineError` naming what is wrong."""
        return PipelineInfo(self._core.info())

    def to_yaml(self) -> str:
        """The pipeline as canonical YAML (Python steps as ``type: py:MODULE:NAME``)."""
        return self._core.to_yaml()

    def save(self, path: PathLike) -> None:
        """Writes :meth:`to_yaml` to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_yaml())

    def run(
        self,
        db: PathLike = "run.redb",
        *,
        new: bool = False,
        workers: int = 0,
        progress: Any = True,
        allow_changed_inputs: bool = False,
    ) -> RunSummary:
        """Runs the pipeline on the run database ``db`` and returns a :class:`RunSummary`.

        A database that holds this pipeline is resumed (a finished run says so:
        ``already_finished``); a changed pipeline keeps what is still valid; ``new=True`` starts
        over, keeping the request cache. The run goes on with the GIL released; Ctrl-C (a
        notebook's interrupt) stops it cleanly and raises ``KeyboardInterrupt`` once in-flight
        batches are committed or given up and the steps it loaded are unloaded: run again to
        resume. ``progress``: ``True`` (tqdm bars where tqdm is installed, else lines on
        stderr), ``False``, or an object with ``update(steps)``, ``message(text)`` and
        ``close()``. ``workers``: threads for steps (0: one per core).
        """
        display = make_progress(progress, self._core.step_names())
        out = self._core.run(
            os.fspath(db),
            new=new,
            workers=workers,
            allow_changed_inputs=allow_changed_inputs,
            progress=display,
        )
        return RunSummary(
            db=str(out["db"]),
            resumed=out["resumed"],
            already_finished=out["already_finished"],
            leaves=dict(out["leaves"]),
            push=out["push"],
        )

    def __repr__(self) -> str:
        return f"<distill.Pipeline {self.name!r}: {', '.join(self._core.step_names())}>"


builtins_type = type
