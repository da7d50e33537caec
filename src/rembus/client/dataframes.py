"""DataFrames on the wire: CBOR tag 80 around an Arrow IPC stream (spec 4.2).

A DataFrame may appear anywhere in a value: as an argument, as a result, or
nested in lists and dicts at any depth, in both directions.

pyarrow is imported only when a DataFrame is actually sent or received, so
components that never use one pay nothing. Install with ``rembus[dataframe]``.
"""

from __future__ import annotations

import sys
from typing import Any

import cbor2
from cbor2 import CBORTag

from rembus_proto import EncodeError, Payload

TAG = 80
_FRAME_MODULES = ("pandas", "polars", "pyarrow")
#: The CBOR head of tag 80: a payload without these bytes holds no DataFrame.
_TAG_HEAD = b"\xd8\x50"
TAG_HEAD = _TAG_HEAD
"""The CBOR head of tag 80: bytes without it hold no DataFrame."""
#: Containers deeper than this are not searched for tags (the decoder bounds depth too).
_MAX_DEPTH = 256

SCALAR_TYPES = frozenset((int, float, str, bytes, bool, type(None)))
"""Builtin scalar types: never a DataFrame and nothing inside (fast-path checks)."""

PLAIN_TYPES = SCALAR_TYPES | {list, dict, tuple}
"""Builtin value types: never a DataFrame themselves, never awaitable."""


class BadDataFrame(ValueError):
    """A tag 80 whose content is not an Arrow IPC stream."""


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


def _encode_frame(encoder: Any, value: Any) -> None:
    """cbor2's hook for types it does not know: DataFrames become tag 80."""
    if not _is_frame(value):
        raise TypeError(f"cannot encode type {type(value)}")
    encoder.encode(to_wire(value))


def encode(value: Any) -> Payload:
    """``value`` as an encoded payload, DataFrames at any depth included.

    Raises :class:`~rembus_proto.EncodeError` for a value CBOR cannot carry.
    """
    try:
        raw = cbor2.dumps(value, default=_encode_frame)
    except ImportError:
        raise
    except Exception as exc:
        raise EncodeError(f"{exc}: arguments and results must be what CBOR carries (None, "
                          f"bool, int, float, str, bytes, list, dict) or DataFrames") from None
    return Payload(raw=raw, value=value)


def to_wire_args(args: tuple[Any, ...]) -> tuple[Any, ...] | Payload:
    """Arguments as the protocol core takes them: as they are when they are plain
    scalars, else encoded here so that DataFrames at any depth become tag 80."""
    for arg in args:
        if type(arg) not in SCALAR_TYPES:
            return encode(list(args))
    return args


def _frame_of(tag: CBORTag, kind: str) -> Any:
    pa = _pyarrow()
    if not isinstance(tag.value, bytes):
        raise BadDataFrame(f"tag {TAG} must hold bytes, not {type(tag.value).__name__}")
    try:
        table = pa.ipc.open_stream(tag.value).read_all()
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise BadDataFrame(f"tag {TAG} does not hold an Arrow IPC stream: {exc}") from None
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars

        return polars.from_arrow(table)
    return table


def _frames_in(value: Any, kind: str, depth: int) -> Any:
    kind_of = type(value)
    if kind_of in SCALAR_TYPES or depth > _MAX_DEPTH:
        return value
    if kind_of is CBORTag:
        if value.tag == TAG:
            return _frame_of(value, kind)
        return CBORTag(value.tag, _frames_in(value.value, kind, depth + 1))
    if kind_of is list:
        return [_frames_in(item, kind, depth + 1) for item in value]
    if kind_of is tuple:
        return tuple(_frames_in(item, kind, depth + 1) for item in value)
    if kind_of is dict:
        return {key: _frames_in(item, kind, depth + 1) for key, item in value.items()}
    return value


def from_wire(value: Any, kind: str) -> Any:
    """``value`` with every tag 80, at any depth, turned into a DataFrame of ``kind``.

    Raises :class:`BadDataFrame` when a tag 80 does not hold an Arrow stream.
    """
    return _frames_in(value, kind, 0)


def from_payload(data: Payload, value: Any, kind: str) -> Any:
    """``value`` (decoded from ``data``) with its DataFrames, if its bytes hold any tag 80."""
    if _TAG_HEAD not in data.raw:
        return value
    return _frames_in(value, kind, 0)


def pyarrow_loaded() -> bool:
    """Whether pyarrow has been imported (used to check that unused means free)."""
    return "pyarrow" in sys.modules
