"""Unpredictable bytes at a fraction of a system call each."""

from __future__ import annotations

import os
from collections.abc import Callable

_CHUNK = 4096

#: Bumped in a child process right after ``fork()``: every pool then drops the
#: bytes it holds, which the parent holds too and may hand out as well.
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forked)

#: What consumers of randomness accept: ``source(n)`` returns ``n`` fresh bytes.
RandomSource = Callable[[int], bytes]


class RandomPool:
    """``pool(n)``: ``n`` bytes from ``os.urandom``, fetched 4 KiB at a time.

    Every byte is used once, so ids and mask keys stay unpredictable; one
    system call serves hundreds of them. Fork-safe: a child process never
    hands out a byte its parent may also hand out. Not thread-safe: one pool
    per user.
    """

    __slots__ = ("_buf", "_generation", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._generation = _generation

    def __call__(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._buf) or self._generation != _generation:
            self._buf = os.urandom(max(_CHUNK, n))
            self._generation = _generation
            pos, end = 0, n
        self._pos = end
        return self._buf[pos:end]
