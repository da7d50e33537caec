"""Unpredictable bytes at a fraction of a system call each."""

from __future__ import annotations

import os

_CHUNK = 4096


class RandomPool:
    """``pool(n)``: ``n`` bytes from ``os.urandom``, fetched 4 KiB at a time.

    Every byte is used once, so ids and mask keys stay unpredictable; one
    system call serves hundreds of them. Not thread-safe: one pool per user.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._buf):
            self._buf = os.urandom(max(_CHUNK, n))
            pos, end = 0, n
        self._pos = end
        return self._buf[pos:end]
