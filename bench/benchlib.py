"""Helpers shared by the benchmarks: server processes, their CPU time, best-of-rounds."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _discard(stream: IO[str]) -> None:
    for _ in stream:
        pass


@contextlib.asynccontextmanager
async def server(cmd: list[str], pattern: str) -> AsyncIterator[tuple[int, int]]:
    """Start a server process; yields its port and pid, stops it at the end.

    ``pattern`` is a regex whose first group is the port, searched in the
    process's output (stdout and stderr); the rest of the output is read and
    dropped so that a chatty server never blocks on a full pipe.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{cmd[0]} exited: {proc.wait()}")
            match = re.search(pattern, line)
            if match:
                break
        threading.Thread(target=_discard, args=(proc.stdout,), daemon=True).start()
        yield int(match.group(1)), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the highest rate, and the lowest latencies and CPU cost seen."""
    top = dict(max(runs, key=lambda r: r["rate"]))
    for key in ("p50", "p99", "cpu_us", "client_us"):
        if key in top:
            top[key] = min(r[key] for r in runs)
    return top
