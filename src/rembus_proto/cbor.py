"""Small, exact CBOR helpers used by the message codec.

The message header (type byte, id, topic, ...) is read and written by hand so
that the payload can stay as raw bytes; whole values are handed to ``cbor2``.
Every decoding helper raises :class:`MalformedMessage` and nothing else.
"""

from __future__ import annotations

import io
from typing import Any, TypeGuard

import cbor2

from .errors import EncodeError, MalformedMessage


def is_uint64(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an int that a CBOR head can carry as an unsigned integer."""
    return type(value) is int and 0 <= value < 1 << 64


_ONE_BYTE = [bytes((i,)) for i in range(256)]


def head(major: int, arg: int) -> bytes:
    """Encode a CBOR head in shortest form."""
    if arg < 24:
        return _ONE_BYTE[(major << 5) | arg]
    if arg < 0x100:
        return bytes(((major << 5) | 24, arg))
    if arg < 0x10000:
        return bytes(((major << 5) | 25,)) + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return bytes(((major << 5) | 26,)) + arg.to_bytes(4, "big")
    return bytes(((major << 5) | 27,)) + arg.to_bytes(8, "big")


def text(value: str) -> bytes:
    """Encode a text string."""
    raw = value.encode("utf-8")
    return head(3, len(raw)) + raw


def byte_string(value: bytes) -> bytes:
    """Encode a byte string."""
    return head(2, len(value)) + value


NULL = b"\xf6"


def read_head(buf: bytes, pos: int) -> tuple[int, int, int]:
    """Read one definite-length head at ``pos``: ``(major, argument, next_pos)``."""
    try:
        initial = buf[pos]
    except IndexError:
        raise MalformedMessage("message is truncated") from None
    major = initial >> 5
    info = initial & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info > 27:
        if info == 31:
            raise MalformedMessage("indefinite-length item in the message header")
        raise MalformedMessage(f"reserved CBOR additional information {info}")
    size = 1 << (info - 24)
    end = pos + 1 + size
    if end > len(buf):
        raise MalformedMessage("message is truncated")
    return major, int.from_bytes(buf[pos + 1 : end], "big"), end


def _string_span(buf: bytes, pos: int, major: int, what: str) -> tuple[int, int]:
    """Start and end of the text (major 3) or byte (major 2) string whose head is at ``pos``."""
    first = buf[pos] if pos < len(buf) else -1
    base = major << 5
    if base <= first < base + 24:  # under 24 bytes: every id, and the usual topic or name
        pos += 1
        end = pos + first - base
    else:
        got, length, pos = read_head(buf, pos)
        if got != major:
            kind = "text" if major == 3 else "byte"
            raise MalformedMessage(f"{what} must be a {kind} string, got CBOR major type {got}")
        end = pos + length
    if end > len(buf):
        raise MalformedMessage(f"{what} is truncated")
    return pos, end


def read_text(buf: bytes, pos: int, what: str) -> tuple[str, int]:
    """Read a text string (the ``what`` names the field in error messages)."""
    start, end = _string_span(buf, pos, 3, what)
    try:
        return buf[start:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedMessage(f"{what} is not valid UTF-8") from None


def read_bytes(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """Read a byte string."""
    start, end = _string_span(buf, pos, 2, what)
    return buf[start:end], end


def read_uint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read an unsigned integer."""
    major, value, pos = read_head(buf, pos)
    if major != 0:
        raise MalformedMessage(f"{what} must be an unsigned integer, got CBOR major type {major}")
    return value, pos


def read_optional_text(buf: bytes, pos: int, what: str) -> tuple[str | None, int]:
    """Read a text string or null/undefined."""
    if pos < len(buf) and buf[pos] in (0xF6, 0xF7):
        return None, pos + 1
    return read_text(buf, pos, what)


def loads_exact(raw: bytes, max_depth: int) -> Any:
    """Decode exactly one CBOR item that spans all of ``raw``."""
    if 255 not in raw:
        # Without a 0xff byte there is no "break" in ``raw``, so wrapping it in an
        # indefinite array and counting the items decoded proves it holds exactly
        # one item; cbor2.loads is several times cheaper than a stream decoder.
        try:
            items = cbor2.loads(b"\x9f" + raw + b"\xff", max_depth=max_depth + 1)
        except Exception as exc:
            raise MalformedMessage(f"invalid CBOR: {exc}") from None
        if len(items) != 1:
            if not items:
                raise MalformedMessage("no CBOR item where one was expected")
            raise MalformedMessage(f"{len(items) - 1} extra CBOR items after the payload")
        return items[0]
    if _item_end(raw, 0) == len(raw):
        # Its heads prove ``raw`` is one item: cbor2.loads reads large byte strings
        # several times faster than a stream decoder.
        try:
            return cbor2.loads(raw, max_depth=max_depth)
        except Exception as exc:
            raise MalformedMessage(f"invalid CBOR: {exc}") from None
    stream = io.BytesIO(raw)
    try:
        value = cbor2.load(stream, max_depth=max_depth)
    except Exception as exc:  # cbor2 raises many types, incl. ValueError/OverflowError
        raise MalformedMessage(f"invalid CBOR: {exc}") from None
    if stream.tell() != len(raw):
        raise MalformedMessage(f"{len(raw) - stream.tell()} trailing bytes after a CBOR item")
    return value


#: Heads :func:`_item_end` reads before it leaves a value to the stream decoder.
_SKIP_BUDGET = 64


def _item_end(buf: bytes, pos: int) -> int:
    """Where the CBOR item at ``pos`` ends, read from its heads alone; -1 when that
    takes more than :data:`_SKIP_BUDGET` heads, or meets an indefinite length or a
    malformed head (the caller then decodes the slow, exact way)."""
    items = 1
    size = len(buf)
    for _ in range(_SKIP_BUDGET):
        if pos >= size:
            return -1
        initial = buf[pos]
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            arg = info
            pos += 1
        elif info < 28:
            end = pos + 1 + (1 << (info - 24))
            if end > size:
                return -1
            arg = int.from_bytes(buf[pos + 1:end], "big")
            pos = end
        else:
            return -1
        items -= 1
        if major == 2 or major == 3:
            pos += arg
        elif major == 4:
            items += arg
        elif major == 5:
            items += 2 * arg
        elif major == 6:
            items += 1
        if items == 0:
            return pos if pos <= size else -1
    return -1


def loads_items(buf: bytes, pos: int, count: int, max_depth: int) -> list[Any]:
    """Decode exactly ``count`` CBOR items that span ``buf[pos:]``."""
    values = loads_exact(head(4, count) + bytes(buf[pos:]), max_depth)
    assert isinstance(values, list)
    return values


def dumps(value: Any) -> bytes:
    """Encode an application value, raising :class:`EncodeError` if it cannot be."""
    try:
        return cbor2.dumps(value)
    except Exception as exc:
        raise EncodeError(f"cannot encode {type(value).__name__} as CBOR: {exc}") from None
