"""Arrow tables across the boundary, as Arrow IPC streams (buffers, no per-value objects)."""

from __future__ import annotations

from typing import Any


def from_ipc(data: bytes) -> Any:
    """The ``pyarrow.Table`` of an Arrow IPC stream."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def to_ipc(table: Any) -> bytes:
    """A ``pyarrow.Table`` or ``RecordBatch`` (or anything ``pyarrow.table`` takes, such as
    a dict of columns) as an Arrow IPC stream."""
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    elif not isinstance(table, pa.Table):
        table = pa.table(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
