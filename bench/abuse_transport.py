"""Transport attacks on a real broker process (loopback), for ``bench_abuse.py --transport``.

For each attack class and each number of hostile connections, a broker
subprocess is started on 127.0.0.1, the attackers run in a thread, and a
well-behaved component measures ``rpc("version")`` latency (p50, p99).
Every attack is bounded in bytes and in time, and stopped before the broker.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import rembus.sync

MASK = b"\x01\x02\x03\x04"
WAIT = 30.0
MAX_ATTACK_BYTES = 512 * 1024 * 1024  # per attack run, all connections together


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 0x10000:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload)) if n < 4096 else (
        (int.from_bytes(payload, "big") ^ int.from_bytes((MASK * (n // 4 + 1))[:n], "big"))
        .to_bytes(n, "big"))
    return head + MASK + masked


def _upgraded(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade"
                 f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


def _pump(socks: list[socket.socket], data: bytes, stop: threading.Event) -> None:
    """Send ``data`` over and over on every socket until ``stop`` or the byte bound."""
    sent = 0
    while not stop.is_set() and sent < MAX_ATTACK_BYTES and socks:
        _, writable, _ = select.select([], socks, [], 0.05)
        for sock in writable:
            try:
                sent += sock.send(data)
            except OSError:
                socks.remove(sock)


def idle(socks: list[socket.socket], stop: threading.Event) -> None:
    """Upgrades that never send a message."""
    stop.wait()


def ping_flood(socks: list[socket.socket], stop: threading.Event) -> None:
    """Pings whose pongs are never read."""
    _pump(list(socks), _frame(0x9, b"p" * 125) * 256, stop)


def fragments(socks: list[socket.socket], stop: threading.Event) -> None:
    """Fragmented messages that never end (1 MiB first fragments, then 4 KiB pieces)."""
    first = _frame(0x2, b"x" * (1024 * 1024), fin=False)
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(WAIT)
        with contextlib.suppress(OSError):
            sock.sendall(first)
        sock.setblocking(False)
    _pump(list(socks), _frame(0x0, b"y" * 4096, fin=False), stop)


ATTACKS: dict[str, Callable[[list[socket.socket], threading.Event], None]] = {
    "idle upgrades": idle, "ping flood": ping_flood, "unfinished fragments": fragments}


def _broker(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "rembus", "broker", "--host", "127.0.0.1",
                             "--port", "0", "--log-level", "ERROR", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the broker did not start: {line!r}")
    return proc, int(match.group(1))


def latency(port: int, calls: int) -> tuple[float, float]:
    """p50 and p99 of ``rpc("version")`` in milliseconds."""
    times = []
    with rembus.sync.component(f"ws://127.0.0.1:{port}", reconnect=False) as probe:
        for _ in range(calls):
            start = time.perf_counter()
            probe.rpc("version")
            times.append((time.perf_counter() - start) * 1e3)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


def run(counts: list[int], calls: int, data_dir: str) -> None:
    """Print the latency table for every attack class and hostile connection count."""
    print("Broker rpc('version') latency (ms) while hostile connections attack it")
    print(f"{'attack':<22}{'hostile':>8}{'p50':>9}{'p99':>9}")
    for name, attack in ATTACKS.items():
        for count in counts:
            proc, port = _broker(["--data-dir", os.path.join(data_dir, f"{name}-{count}")])
            stop = threading.Event()
            socks: list[socket.socket] = []
            try:
                socks = [_upgraded(port) for _ in range(count)]
                worker = threading.Thread(target=attack, args=(socks, stop), daemon=True)
                worker.start()
                p50, p99 = latency(port, calls)
                print(f"{name:<22}{count:>8}{p50:>9.2f}{p99:>9.2f}", flush=True)
            finally:
                stop.set()
                for sock in socks:
                    sock.close()
                proc.terminate()
                proc.wait(WAIT)
