"""WebSocket masking (RFC 6455 section 5.3): XOR with a 4-byte key, repeated.

Pure Python has no vectorised XOR, so each size gets the cheapest route:
below :data:`INT_MASK_LIMIT` bytes one XOR of two big ints (the repeated key
of a short payload made by a multiplication); above it, numpy
when the process has imported it (one in-place XOR of 32-bit words, some
twenty times faster than the fallback on a MiB), else four strided
``translate`` calls, one per key byte.

numpy is never required, and this module never imports it by itself:
importing it takes a few hundred milliseconds, a stall no connection should
meet at its first large message. A long-running process that moves large
messages calls :func:`use_numpy` once at start (the broker does); any
process that already imported numpy (e.g. through pandas) gets the fast
path anyway.
"""

from __future__ import annotations

import sys
from types import ModuleType

# Below this size XOR through one big int wins, above it the table method does.
INT_MASK_LIMIT = 2048

_XOR_TABLES: list[bytes | None] = [None] * 256
_numpy: ModuleType | None = None
_numpy_off = False


def _xor_table(key_byte: int) -> bytes:
    table = _XOR_TABLES[key_byte]
    if table is None:
        table = _XOR_TABLES[key_byte] = bytes(i ^ key_byte for i in range(256))
    return table


# For payloads under _TABLE_LIMIT bytes the repeated key is built by one
# multiplication: key * 0x...000100000001 (one 1 per 32-bit word), cut to n bytes.
_TABLE_LIMIT = 128
_REPEAT = [sum(1 << (32 * i) for i in range(words)) for words in range(_TABLE_LIMIT // 4 + 1)]
_LOW_BYTES = [(1 << (8 * n)) - 1 for n in range(_TABLE_LIMIT)]


def mask_small(data: bytes, key: bytes) -> bytes:
    """:func:`mask` through one big-int XOR (the fastest way for short payloads)."""
    n = len(data)
    if n < _TABLE_LIMIT:
        keys = int.from_bytes(key, "little") * _REPEAT[(n + 3) >> 2] & _LOW_BYTES[n]
        return (int.from_bytes(data, "little") ^ keys).to_bytes(n, "little")
    repeated = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little")


def mask_in_place_python(buf: bytearray, key: bytes, start: int = 0) -> None:
    """Mask ``buf[start:]`` in place with four strided translations."""
    for i in range(4):
        at = slice(start + i, None, 4)
        buf[at] = buf[at].translate(_xor_table(key[i]))


def mask_in_place_numpy(buf: bytearray, key: bytes, np: ModuleType, start: int = 0) -> None:
    """Mask ``buf[start:]`` in place with numpy (module ``np``)."""
    words = (len(buf) - start) >> 2
    if words:
        view = np.frombuffer(buf, dtype=np.uint32, count=words, offset=start)
        np.bitwise_xor(view, np.frombuffer(key, dtype=np.uint32)[0], out=view)
    for i in range(start + (words << 2), len(buf)):  # at most 3 bytes left over
        buf[i] ^= key[(i - start) & 3]


def use_numpy(enabled: bool = True) -> bool:
    """Import numpy now for large payloads (or, with ``False``, stop using it).

    Returns whether the numpy path is on: false when numpy is not installed.
    """
    global _numpy, _numpy_off
    _numpy_off = not enabled
    _numpy = None
    if enabled:
        try:
            import numpy  # noqa: F401
        except ImportError:
            return False
    return _numpy_module() is not None


def _numpy_module() -> ModuleType | None:
    """numpy once the process has imported it (and it is usable), else None."""
    global _numpy
    if _numpy is None and not _numpy_off:
        np = sys.modules.get("numpy")
        if np is not None and all(hasattr(np, a) for a in ("bitwise_xor", "frombuffer",
                                                             "uint32")):
            _numpy = np
    return _numpy


def mask_in_place(buf: bytearray, key: bytes, start: int = 0) -> None:
    """Mask ``buf[start:]`` in place (by numpy when loaded, else by translations)."""
    np = _numpy or _numpy_module()
    if np is not None:
        mask_in_place_numpy(buf, key, np, start)
    else:
        mask_in_place_python(buf, key, start)


def mask_large(buf: bytearray, key: bytes) -> bytes:
    """Mask ``buf`` (which it overwrites) and return the result as bytes."""
    mask_in_place(buf, key)
    return bytes(buf)


def mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    if len(data) < INT_MASK_LIMIT:
        return mask_small(data, key)
    return mask_large(bytearray(data), key)
