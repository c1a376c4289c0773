"""Steps written in Python: the decorators, the base classes, and the protocol the engine
calls them through.

The engine (``distill._distill``) sees every Python step through these methods:

``_distill_describe()``
    ``{kind, name, inputs, outputs, format, version, idempotent}``: ``kind`` is ``step``,
    ``global``, ``generator`` or ``task``; ``version`` identifies the code (part of the step's
    signature, so changed code recomputes the step).
``_distill_load()`` / ``_distill_unload()``
    the author's ``load``/``unload``, called by the engine's lifecycle state machine.
``_distill_process(batch)`` (``(batch, ctx)`` for tasks)
    one input batch (a list of dict rows, or a ``pyarrow.Table`` with ``format="arrow"``)
    to output rows.
``_distill_generate()``
    a generator's rows: an iterable of dict rows (or lists of them), the same every time.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import inspect
import threading
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

from . import _distill

__all__ = [
    "Step",
    "GlobalStep",
    "Generator",
    "Task",
    "FunctionStep",
    "step",
    "global_step",
    "generator",
    "task",
]

_FORMATS = ("dicts", "arrow")
_KINDS = {"step", "global", "generator", "task"}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _function_source(fn: Callable[..., Any]) -> str | None:
    if getattr(fn, "__name__", "") == "<lambda>":
        # A lambda's source line may hold other code too: it does not identify it.
        return None
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return None


def _class_source(cls: type) -> str | None:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        pass
    # A class defined in a notebook or the REPL has no file, but its methods have their
    # cell's source: the class is its methods plus its plain attributes.
    parts = []
    for name, value in sorted(vars(cls).items()):
        if name.startswith("__") and name not in ("__init__",):
            continue
        fn = getattr(value, "__func__", value)
        if inspect.isfunction(fn):
            source = _function_source(fn)
            if source is None:
                return None
            parts.append(source)
        elif isinstance(value, (str, int, float, bool, list, tuple, type(None))):
            parts.append(f"{name} = {value!r}")
    return "\n".join(parts) if parts else None


def _unreadable(what: str) -> ValueError:
    return ValueError(
        f"cannot read the source of {what} (a lambda, or code typed in the REPL): "
        "give it an explicit version=... that you change whenever its code changes"
    )


def _check_columns(what: str, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        raise TypeError(f"{what} is a list of column names, not the string {columns!r}")
    out = list(columns)
    for c in out:
        if not isinstance(c, str):
            raise TypeError(f"{what}: column names are strings, not {c!r}")
    return out


def _check_format(format: str) -> str:
    if format not in _FORMATS:
        raise ValueError(f"format is 'dicts' or 'arrow', not {format!r}")
    return format


class _Hooks(threading.local):
    """Which objects' ``load``/``unload`` the engine is calling (per thread): a wrapped
    ``load`` called from there runs the author's code instead of the state machine."""

    def __init__(self) -> None:
        self.inside: set[int] = set()


_hooks = _Hooks()


def _wrap_hook(name: str, raw: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(raw)
    def hook(self: Any) -> Any:
        if id(self) in _hooks.inside:
            return raw(self)
        handle = self._distill_handle()
        return getattr(handle, name)()

    hook._distill_raw = raw  # type: ignore[attr-defined]
    return hook


class Step:
    """A step written as a class: one batch of rows in, rows out.

    Set ``inputs`` (the columns each row must have) and ``outputs`` (the columns the step
    adds), and write ``process(rows)``, which gets a list of dict rows (a ``pyarrow.Table``
    with ``format = "arrow"``) and returns the output rows, usually the same dicts with the
    outputs set. ``load()`` acquires what the step needs (a model, a client) and ``unload()``
    releases it; distill wraps both, so that a second ``load()`` of a loaded step raises
    :class:`distill.AlreadyLoadedError` (unless ``idempotent_load = True``), even when you call
    them by hand, and a pipeline run uses a step you loaded by hand without loading it again.

    Keyword arguments of the constructor are the step's parameters: they become attributes
    and part of the step's signature (``operational`` names those that never change a row,
    such as an endpoint). The step's code is identified by a hash of its class's source, or
    by ``version`` when set.
    """

    inputs: ClassVar[Sequence[str]] = ()
    outputs: ClassVar[Sequence[str]] = ()
    format: ClassVar[str] = "dicts"
    idempotent_load: ClassVar[bool] = False
    version: ClassVar[str | None] = None
    operational: ClassVar[Sequence[str]] = ()
    _distill_kind: ClassVar[str] = "step"

    def __init__(self, **params: Any) -> None:
        self._distill_params = dict(params)
        for key, value in params.items():
            setattr(self, key, value)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("load", "unload"):
            raw = cls.__dict__.get(name)
            if raw is not None and not hasattr(raw, "_distill_raw"):
                setattr(cls, name, _wrap_hook(name, raw))
        _check_format(cls.format)

    # The lifecycle, as users call it.

    def load(self) -> None:
        """Loads the step (see the class doc); :class:`distill.AlreadyLoadedError` if it is
        loaded already."""
        if id(self) in _hooks.inside:
            return None
        self._distill_handle().load()

    def unload(self) -> None:
        """Unloads the step if it was loaded by hand; does nothing if it is not loaded."""
        if id(self) in _hooks.inside:
            return None
        self._distill_handle().unload()

    @contextlib.contextmanager
    def loaded(self) -> Iterator["Step"]:
        """``with step.loaded():`` loads the step, and unloads it on exit, also after an
        exception."""
        self.load()
        try:
            yield self
        finally:
            self.unload()

    @property
    def state(self) -> str:
        """``"unloaded"``, ``"loading"`` or ``"loaded"``."""
        return self._distill_handle().state

    @property
    def is_loaded(self) -> bool:
        """Whether the step is loaded."""
        return self.state == "loaded"

    def process(self, rows: Any) -> Any:
        """Processes one batch; returns the output rows."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define process()")

    # The protocol the engine calls.

    def _distill_handle(self) -> "_distill.StepHandle":
        handle = self.__dict__.get("_distill_handle_obj")
        if handle is None:
            handle = _distill.StepHandle.of_step(self)
            self.__dict__["_distill_handle_obj"] = handle
        return handle

    def _distill_call_hook(self, name: str) -> None:
        _hooks.inside.add(id(self))
        try:
            getattr(type(self), name)(self)
        finally:
            _hooks.inside.discard(id(self))

    def _distill_load(self) -> None:
        self._distill_call_hook("load")

    def _distill_unload(self) -> None:
        self._distill_call_hook("unload")

    def _distill_describe(self) -> dict[str, Any]:
        cls = type(self)
        return {
            "kind": cls._distill_kind,
            "name": cls.__qualname__,
            "inputs": _check_columns("inputs", self.inputs),
            "outputs": _check_columns("outputs", self.outputs),
            "format": _check_format(self.format),
            "version": _class_version(cls),
            "idempotent": bool(self.idempotent_load),
        }

    def _distill_process(self, batch: Any, *ctx: Any) -> Any:
        return self.process(batch, *ctx)


def _class_version(cls: type) -> str:
    cached = cls.__dict__.get("_distill_version")
    if cached is not None:
        return cached
    explicit = cls.__dict__.get("version") or getattr(cls, "version", None)
    if explicit is not None:
        version = f"{cls.__qualname__}@{explicit}"
    else:
        source = _class_source(cls)
        if source is None:
            raise _unreadable(f"step class {cls.__qualname__}")
        version = f"{cls.__qualname__}#{_hash(source)}"
    setattr(cls, "_distill_version", version)
    return version


class GlobalStep(Step):
    """A step that sees all upstream rows at once (dedup, sampling, ranking): ``process``
    gets every row, and the step starts a new stage."""

    _distill_kind = "global"


class Task(Step):
    """A step that calls a model or a service of its own: ``process(rows, ctx)`` gets a
    :class:`distill.TaskContext` whose request cache keeps never-pay-twice (``ctx.cached``,
    ``ctx.store``, ``ctx.call``)."""

    _distill_kind = "task"

    def process(self, rows: Any, ctx: "_distill.TaskContext") -> Any:  # type: ignore[override]
        """Processes one batch with the run's request cache; returns the output rows."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define process()")


class Generator(Step):
    """A step that produces rows from nothing: ``generate()`` yields dict rows (or lists of
    them), the same rows in the same order every time, so that a resumed run continues
    where the committed batches end."""

    _distill_kind = "generator"

    def generate(self) -> Iterable[Any]:
        """Yields the rows."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define generate()")

    def _distill_generate(self) -> Iterable[Any]:
        return self.generate()


class FunctionStep:
    """A function made a step by :func:`step`, :func:`global_step`, :func:`generator` or
    :func:`task`. Calling it calls the function; as a pipeline step, each step's ``params``
    are passed to the function as keyword arguments."""

    def __init__(
        self,
        fn: Callable[..., Any],
        kind: str,
        inputs: Sequence[str] | None,
        outputs: Sequence[str] | None,
        format: str,
        version: str | None,
        operational: Sequence[str] | None,
        params: dict[str, Any] | None = None,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown step kind {kind!r}")
        self.fn = fn
        self.kind = kind
        self.inputs = _check_columns("inputs", inputs)
        self.outputs = _check_columns("outputs", outputs)
        self.format = _check_format(format)
        self.operational = list(operational or ())
        self.params = dict(params or {})
        name = getattr(fn, "__qualname__", repr(fn))
        if version is not None:
            self.version = f"{name}@{version}"
        else:
            source = _function_source(fn)
            if source is None:
                raise _unreadable(f"{name}")
            self.version = f"{name}#{_hash(source)}"
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<distill {self.kind} {getattr(self.fn, '__qualname__', self.fn)!r}>"

    def with_params(self, params: dict[str, Any]) -> "FunctionStep":
        """A copy that passes ``params`` to the function."""
        bound = copy.copy(self)
        bound.params = dict(params)
        return bound

    def load(self) -> None:
        """A function step acquires nothing: loading it does nothing."""

    def unload(self) -> None:
        """A function step holds nothing: unloading it does nothing."""

    def _distill_describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": getattr(self.fn, "__qualname__", repr(self.fn)),
            "inputs": self.inputs,
            "outputs": self.outputs,
            "format": self.format,
            "version": self.version,
            # A function holds nothing between batches: loading it twice is harmless.
            "idempotent": True,
        }

    def _distill_load(self) -> None:
        pass

    def _distill_unload(self) -> None:
        pass

    def _distill_process(self, batch: Any, *ctx: Any) -> Any:
        return self.fn(batch, *ctx, **self.params)

    def _distill_generate(self) -> Iterable[Any]:
        return self.fn(**self.params)


def _decorator(
    kind: str,
    inputs: Sequence[str] | None,
    outputs: Sequence[str] | None,
    format: str,
    version: str | None,
    operational: Sequence[str] | None,
) -> Callable[[Callable[..., Any]], FunctionStep]:
    _check_format(format)

    def make(fn: Callable[..., Any]) -> FunctionStep:
        return FunctionStep(fn, kind, inputs, outputs, format, version, operational)

    return make


def step(
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    *,
    format: str = "dicts",
    version: str | None = None,
    operational: Sequence[str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionStep]:
    """Makes ``fn(rows, **params) -> rows`` a step: it gets one batch (a list of dict rows,
    or a ``pyarrow.Table`` with ``format="arrow"``) and returns the output rows.

    ``inputs`` are the columns each row must have, ``outputs`` the columns it adds. The step's
    code is identified by a hash of the function's source (part of the signature: a changed
    function recomputes the step on resume); give ``version`` where the source cannot be read
    (a lambda, the REPL). ``operational`` names parameters that never change a row.
    """
    return _decorator("step", inputs, outputs, format, version, operational)


def global_step(
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    *,
    format: str = "dicts",
    version: str | None = None,
    operational: Sequence[str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionStep]:
    """Makes ``fn(rows, **params) -> rows`` a global step: it gets all upstream rows at once
    (and starts a new stage). Arguments as for :func:`step`."""
    return _decorator("global", inputs, outputs, format, version, operational)


def generator(
    outputs: Sequence[str] | None = None,
    *,
    version: str | None = None,
    operational: Sequence[str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionStep]:
    """Makes ``fn(**params)``, which returns or yields dict rows (or lists of them), a
    generator step. It must give the same rows in the same order every time: a resumed run
    passes over the rows already committed."""
    return _decorator("generator", None, outputs, "dicts", version, operational)


def task(
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    *,
    format: str = "dicts",
    version: str | None = None,
    operational: Sequence[str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionStep]:
    """Makes ``fn(rows, ctx, **params) -> rows`` a task: a step that calls a model or service
    of its own and keeps its answers in the run's request cache through ``ctx``
    (:class:`distill.TaskContext`), so a resumed or changed run never pays for one twice."""
    return _decorator("task", inputs, outputs, format, version, operational)


# Used by the compiled module.


def type_name(obj: Any) -> str:
    """The ``py:MODULE:NAME`` type name of a step function, class or object."""
    if isinstance(obj, FunctionStep):
        target = obj.fn
    elif isinstance(obj, type) and issubclass(obj, Step):
        target = obj
    elif isinstance(obj, Step):
        target = type(obj)
    else:
        raise TypeError(
            f"{obj!r} is not a step: decorate a function with @distill.step (or global_step, "
            "generator, task), subclass distill.Step, or give a built-in type's name"
        )
    return f"py:{target.__module__}:{target.__qualname__}"


def resolve(target: str) -> Any:
    """The step function, class or object that ``MODULE:NAME`` names (a YAML step's
    ``type: py:MODULE:NAME``)."""
    module_name, sep, name = target.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"a Python step type is py:MODULE:NAME, not 'py:{target}'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module '{module_name}' has no '{name}'") from None
    if not (
        isinstance(obj, (FunctionStep, Step)) or (isinstance(obj, type) and issubclass(obj, Step))
    ):
        raise TypeError(
            f"'{target}' is {type(obj).__name__}, not a distill step (a function decorated "
            "with @distill.step and the like, or a subclass of distill.Step)"
        )
    return obj


def instantiate(obj: Any, params: dict[str, Any]) -> Any:
    """A step object for one pipeline step: a function bound to the step's parameters, a
    class instantiated with them, or an object as it is (it takes no parameters)."""
    params = dict(params or {})
    if isinstance(obj, FunctionStep):
        return obj.with_params(params)
    if isinstance(obj, type) and issubclass(obj, Step):
        return obj(**params)
    if isinstance(obj, Step):
        if params:
            raise ValueError(
                f"a step object ({type(obj).__qualname__}) takes no params: pass them to its constructor"
            )
        return obj
    raise TypeError(f"{obj!r} is not a distill step")


def operational(obj: Any) -> list[str]:
    """The parameters of a step function or class that never change a row."""
    if isinstance(obj, FunctionStep):
        return list(obj.operational)
    return list(getattr(obj, "operational", ()) or ())
