"""Processes for tests: a ``rembus broker`` subprocess and scripts whose output is awaited.

Every wait is bounded, and every process is stopped (then killed if it does
not stop) when its ``with`` block ends.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import IO

#: Upper bound of any single wait, in seconds: a hang fails the test instead of hanging it.
WAIT = 60.0


def rembus_cli(*args: str, env: dict[str, str] | None = None,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``rembus`` command to its end (bounded), capturing its output;
    ``stdin`` is its input."""
    return subprocess.run([sys.executable, "-m", "rembus", *args], env=env, text=True,
                          input=stdin, capture_output=True, timeout=WAIT, check=False)


class Process:
    """A subprocess whose stdout lines can be awaited."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._start_reader()

    def _start_reader(self) -> None:
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        stream = self.proc.stdout
        assert stream is not None
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str) -> str:
        """The first new output line matching ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self._lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {WAIT} s; "
                                     f"output so far: {''.join(self.output)}") from None
            if line is None:
                raise AssertionError(f"process exited ({self.proc.wait()}) before printing "
                                     f"{pattern!r}; output: {''.join(self.output)}")
            self.output.append(line)
            if regex.search(line):
                return line

    def wait_exit(self) -> int:
        """Wait (bounded) for the process to end; returns its exit code."""
        return self.proc.wait(WAIT)

    def rest(self) -> str:
        """The output not read yet, up to the end (call once the process exits)."""
        lines = []
        while (line := self._lines.get(timeout=WAIT)) is not None:
            lines.append(line)
        self.output.extend(lines)
        return "".join(lines)

    def printed(self) -> str:
        """Everything it printed so far (without waiting for more)."""
        with suppress(queue.Empty):
            while (line := self._lines.get_nowait()) is not None:
                self.output.append(line)
        return "".join(self.output)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it (killing it if it does not stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> Process:
        """The process itself (stopped when the block ends)."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BrokerProcess:
    """``python -m rembus broker`` on 127.0.0.1 with its own data dir."""

    def __init__(self, data_dir: Path, *args: str, port: int = 0,
                 env: dict[str, str] | None = None, launcher: tuple[str, ...] = ()) -> None:
        """``launcher``: arguments of the interpreter before ``-m rembus`` (a wrapper script)."""
        self.data_dir = data_dir
        self.launcher = launcher
        self.args = args
        self.port = port
        self.env = env if env is not None else dict(os.environ)
        self.process: Process | None = None
        self.scheme = "ws"

    @property
    def url(self) -> str:
        """``ws://`` (``wss://`` when the broker serves TLS) and the port it listens on."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> BrokerProcess:
        """Start (again, on the same port once one was chosen)."""
        cmd = [sys.executable, *self.launcher, "-m", "rembus", "broker", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        self.process = Process(cmd, self.env)
        line = self.process.wait_for(r"serving wss?://")
        match = re.search(r"(wss?)://127\.0\.0\.1:(\d+)", line)
        assert match, line
        self.scheme, self.port = match.group(1), int(match.group(2))
        return self

    def stop(self) -> int:
        """Stop with SIGTERM; returns the exit code."""
        assert self.process is not None
        code = self.process.stop()
        self.process = None
        return code

    def __enter__(self) -> BrokerProcess:
        """Start the broker (stopped when the block ends)."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.stop()
