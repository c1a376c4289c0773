"""Type stubs of the compiled module ``distill._distill`` (see ``python/src`` in the repository).
Users import what it offers from ``distill``."""

from typing import Any, Mapping, Optional, Sequence

__version__: str

class DistillError(Exception):
    """Base class of every error distill raises."""

class PipelineError(DistillError):
    """The pipeline is invalid (the CLI's exit code 3)."""

class StepFailedError(DistillError):
    """A step failed; committed work is kept and running again resumes (exit code 4)."""

class BudgetReachedError(DistillError):
    """The spending budget was reached (exit code 6)."""

class StorageError(DistillError):
    """The run database failed: damaged, in use, a full disk."""

class InternalError(DistillError):
    """A bug in distill (exit code 70)."""

class StepStateError(DistillError):
    """A step's lifecycle was used out of order."""

class AlreadyLoadedError(StepStateError):
    """``load()`` of a loaded step that does not declare its load idempotent."""

class TaskContext:
    """The run's request cache and counters, for a Python task."""

    def cached(self, request: Any) -> Any:
        """The answer committed earlier for ``request`` (JSON data), or None."""
    def store(self, request: Any, response: Any) -> None:
        """Commits ``response`` as the answer to ``request``, durably, before returning."""
    def call(self, request: Any, compute: Any) -> Any:
        """The cached answer to ``request``, or ``compute(request)``'s, stored first."""
    def count(self, name: str, delta: int = 1) -> None:
        """Adds to the task's counter ``name``."""
    @property
    def stopping(self) -> bool:
        """Whether the run is stopping."""

class StepHandle:
    """A step's lifecycle (the engine's state machine)."""

    @staticmethod
    def of_step(obj: Any) -> "StepHandle": ...
    def load(self) -> None: ...
    def unload(self) -> None: ...
    @property
    def state(self) -> str: ...

class PipelineCore:
    """The compiled side of ``distill.Pipeline``."""

    def __init__(self, name: str, description: Optional[str] = None) -> None: ...
    @staticmethod
    def from_yaml(path: str) -> "PipelineCore": ...
    def add_step(
        self,
        name: str,
        kind: str,
        after: Sequence[str],
        batch_size: Optional[int],
        input_batch_size: Optional[int],
        params: Optional[Mapping[str, Any]],
        input_mappings: Optional[Mapping[str, str]],
        output_mappings: Optional[Mapping[str, str]],
        on_error_policy: Optional[str],
        obj: Any = None,
        handle: Optional[StepHandle] = None,
    ) -> None: ...
    def connect(self, pred: str, step: str) -> None: ...
    def step_names(self) -> list[str]: ...
    @property
    def name(self) -> str: ...
    def set_budget(self, usd: Optional[float]) -> None: ...
    def to_yaml(self) -> str: ...
    def info(self) -> dict[str, Any]: ...
    def handle(self, name: str) -> StepHandle: ...
    def run(
        self,
        db: str,
        new: bool = False,
        workers: int = 0,
        allow_changed_inputs: bool = False,
        progress: Any = None,
    ) -> dict[str, Any]: ...

def status(db: str) -> dict[str, Any]: ...
def export(db: str, out: str, format: str = "parquet") -> dict[str, Any]: ...
def load_tables(db: str) -> dict[str, Any]: ...
def cli_main(argv: list[str]) -> int: ...
