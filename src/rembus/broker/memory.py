"""Keep freed memory for reuse, for processes that move large messages (glibc only).

By default glibc serves each allocation above 128 KiB (a threshold that adapts
up to 32 MiB) with a fresh ``mmap`` and gives the top of the heap back to the
system as soon as 128 KiB or more of it is free. A process that receives,
unmasks, re-encodes and sends messages of a MiB then touches fresh pages for
every buffer, and each page costs a fault: on a loaded or virtualised machine
that is several times the cost of the copy itself. :func:`keep_freed_memory`
raises both thresholds so that those buffers are recycled from the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit: int) -> bool:
    """Let the C heap keep up to ``limit`` bytes of freed memory for reuse.

    Allocations below ``limit // 2`` then come from the heap instead of a
    fresh mapping. It only changes speed and the resident size after a
    burst (at most ``limit`` more). Returns False where it cannot be done
    (not glibc) or when ``limit`` is 0, which leaves the defaults.
    """
    if limit <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    limit = min(limit, 1 << 30)
    return bool(mallopt(_M_MMAP_THRESHOLD, limit // 2)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
