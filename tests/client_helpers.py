"""Helpers to drive a ClientConnection with hand-made frames and a fake clock."""

from __future__ import annotations

from typing import Any

from rembus_proto import Identity, Payload, Response, decode
from rembus_proto.client import ClientConfig, ClientConnection, ConnectionState
from rembus_proto.client_events import Event


class SeqIds:
    """Deterministic id factory: 1, 2, 3, ... as big-endian bytes."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, length: int) -> bytes:
        self.count += 1
        return self.count.to_bytes(length, "big")


def ident(n: int, length: int = 8) -> bytes:
    """The n-th id of a :class:`SeqIds` factory."""
    return n.to_bytes(length, "big")


def make(name: str | None = "comp", meta: Any = None, **config: Any) -> ClientConnection:
    """A connection with sequential ids."""
    return ClientConnection(name, ClientConfig(**config), id_factory=SeqIds(), meta=meta)


def sent(conn: ClientConnection) -> list[Any]:
    """Decode and take everything the connection wants to send (typed loosely for tests)."""
    return [decode(frame) for frame in conn.data_to_send()]


def response(msg_id: bytes, status: int = 0, value: Any = None) -> bytes:
    """A RESPONSE frame."""
    return Response(msg_id, status, Payload.of(value)).encode()


def login(conn: ClientConnection, now: float = 0.0, exports: Any = None) -> list[Event]:
    """Connect and complete the login; return the events (output is left queued)."""
    conn.connect(now)
    if conn.name is not None:
        identity = decode(conn.data_to_send()[-1])
        assert isinstance(identity, Identity)
        conn.receive_message(response(identity.id, 0, exports), now)
    return conn.events()


def state(conn: ClientConnection) -> ConnectionState:
    """The state (a call, so that type checkers do not narrow it across actions)."""
    return conn.state
