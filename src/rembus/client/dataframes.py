"""DataFrames on the wire: CBOR tag 80 around an Arrow IPC stream (spec 4.2).

pyarrow is imported only when a DataFrame is actually sent or received, so
components that never use one pay nothing. Install with ``rembus[dataframe]``.
"""

from __future__ import annotations

import sys
from typing import Any

from cbor2 import CBORTag

TAG = 80
_FRAME_MODULES = ("pandas", "polars", "pyarrow")


def _is_frame(value: Any) -> bool:
    module = type(value).__module__
    if not module.startswith(_FRAME_MODULES):
        return False
    name = type(value).__name__
    return name in ("DataFrame", "Table")


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError("DataFrames need pyarrow: python -m pip install 'rembus[dataframe]'"
                          ) from None
    return pyarrow


def to_wire(value: Any) -> Any:
    """``value`` itself, or tag 80 if it is a pandas/polars DataFrame or a pyarrow Table."""
    if not _is_frame(value):
        return value
    pa = _pyarrow()
    module = type(value).__module__
    if module.startswith("pandas"):
        table = pa.Table.from_pandas(value, preserve_index=False)
    elif module.startswith("polars"):
        table = value.to_arrow()
    else:
        table = value
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return CBORTag(TAG, sink.getvalue().to_pybytes())


PLAIN_TYPES = frozenset((int, float, str, bytes, bool, type(None), list, dict, tuple))
"""Builtin value types: never a DataFrame, never awaitable (fast-path checks)."""


def to_wire_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Arguments with every DataFrame replaced by its tag."""
    for arg in args:
        if type(arg) not in PLAIN_TYPES and _is_frame(arg):
            return tuple(to_wire(a) for a in args)
    return args


def from_wire(value: Any, kind: str) -> Any:
    """``value`` itself, or a DataFrame of ``kind`` if it is a tag 80."""
    if not (isinstance(value, CBORTag) and value.tag == TAG and isinstance(value.value, bytes)):
        return value
    pa = _pyarrow()
    table = pa.ipc.open_stream(value.value).read_all()
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars

        return polars.from_arrow(table)
    return table


def from_wire_args(args: tuple[Any, ...], kind: str) -> tuple[Any, ...]:
    """Arguments with every tag 80 turned into a DataFrame."""
    for arg in args:
        if type(arg) not in PLAIN_TYPES and isinstance(arg, CBORTag):
            return tuple(from_wire(a, kind) for a in args)
    return args


def pyarrow_loaded() -> bool:
    """Whether pyarrow has been imported (used to check that unused means free)."""
    return "pyarrow" in sys.modules
