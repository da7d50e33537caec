"""Driving the sans-IO WebSocket connections in tests: bytes in, events and bytes out."""

from __future__ import annotations

from rembus_proto.ws import ClientWebSocket, Event, ServerWebSocket

Side = ClientWebSocket | ServerWebSocket


def feed(side: Side, data: bytes | bytearray | memoryview) -> list[Event]:
    """Give ``data`` to ``side``; return the events it queued."""
    side.receive_data(data)
    return side.events()


def sent(side: Side) -> bytes:
    """What ``side`` queued for its peer, as one byte string."""
    return b"".join(side.data_to_send())
