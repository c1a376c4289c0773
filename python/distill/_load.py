"""A run's leaves as ``datasets`` objects, through Arrow."""

from __future__ import annotations

import os
from typing import Any, Union

from . import _distill

PathLike = Union[str, "os.PathLike[str]"]


def load(db: PathLike) -> Any:
    """The leaves of the run in ``db`` as a ``datasets.DatasetDict`` (leaf step name to
    ``datasets.Dataset``), read from one snapshot of the run database: a live run too (each
    leaf's committed rows). Columns have the types of the Parquet export and come through
    Arrow, not JSON. Without the ``datasets`` package installed, a dict of ``pyarrow.Table``.
    """
    tables = _distill.load_tables(os.fspath(db))
    try:
        import datasets
        from datasets.table import InMemoryTable
    except ImportError:
        return tables
    return datasets.DatasetDict(
        {name: datasets.Dataset(InMemoryTable(table)) for name, table in tables.items()}
    )
