"""Progress of a run: tqdm bars where tqdm is installed (widgets in a notebook), else lines on
stderr."""

from __future__ import annotations

import sys
from typing import Any, Sequence


class _Lines:
    """One line per message and per step that finishes."""

    def __init__(self) -> None:
        self._done: set[str] = set()

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)

    def update(self, steps: dict[str, tuple[int, int, bool]]) -> None:
        for name, (rows, batches, done) in steps.items():
            if done and name not in self._done:
                self._done.add(name)
                print(f"{name}: {rows} rows in {batches} batches, done", file=sys.stderr)

    def close(self) -> None:
        pass


class _Bars:
    """One tqdm bar per step, counting committed rows."""

    def __init__(self, tqdm: Any, steps: Sequence[str]) -> None:
        self._tqdm = tqdm
        self._bars = {
            name: tqdm(desc=name, unit=" rows", total=None, position=i, leave=True)
            for i, name in enumerate(steps)
        }

    def message(self, text: str) -> None:
        self._tqdm.write(text, file=sys.stderr)

    def update(self, steps: dict[str, tuple[int, int, bool]]) -> None:
        for name, (rows, batches, done) in steps.items():
            bar = self._bars.get(name)
            if bar is None:
                continue
            if bar.n != rows:
                bar.update(rows - bar.n)
            if done:
                bar.set_postfix_str(f"{batches} batches, done", refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def make_progress(progress: Any, steps: Sequence[str]) -> Any:
    """The display a run draws on: ``True`` (tqdm, else lines), ``False``/``None`` (nothing),
    or the caller's object."""
    if progress is None or progress is False:
        return None
    if progress is not True:
        return progress
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Lines()
    return _Bars(tqdm, steps)
