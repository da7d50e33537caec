"""Raw TCP peers for attacking a broker process: WebSocket bytes our client would never send."""

from __future__ import annotations

import socket
from pathlib import Path

from broker_process import WAIT
from test_ws import upgrade_request
from ws_oracle import build_frame

MASK = b"\x01\x02\x03\x04"


def raw_connect(port: int) -> socket.socket:
    """A TCP connection to the broker on 127.0.0.1 (blocking, every call bounded)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def upgraded(port: int) -> socket.socket:
    """A TCP connection that completed the WebSocket upgrade (and sent nothing else)."""
    sock = raw_connect(port)
    sock.sendall(upgrade_request())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed during the upgrade: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    return build_frame(opcode, payload, fin=fin, mask_key=MASK)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the broker sends until it closes the connection (bounded by WAIT)."""
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def vm_rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
