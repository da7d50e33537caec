"""One broker per data dir: an exclusive lock held for the broker's lifetime.

Two brokers writing one SQLite archive and one set of security files would
interleave their twins and delivery marks. The lock is an advisory
``flock`` on ``<data dir>/broker.lock``, released by the kernel when the
process ends however it ends (kill -9 included), so a stale lock file never
blocks a restart. The file holds the owner's pid, for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = "broker.lock"


class DataDirBusy(Exception):
    """Another process holds the data dir."""


class DataDirLock:
    """``with DataDirLock(path):`` — raises :class:`DataDirBusy` if another broker has it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirBusy` naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"data dir {self.path.parent} is in use by another broker (pid {holder}); "
                "stop it or give this one its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (also done by the kernel at process exit)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
