"""Frames a broker builds without decoding anything: raw payloads in, frames out.

The router forwards the ``data`` element of a PUB or RPC as the bytes it
received; these encoders put it into the frame each receiver gets. They
write the same bytes as :func:`rembus_proto.messages.encode` would.
"""

from __future__ import annotations

from typing import Any

from .. import cbor
from ..cbor import byte_string, head, text
from ..topics import pattern_payload


def encode_ack(msg_id: bytes) -> bytes:
    """``[5, id]``."""
    return b"\x82\x05" + byte_string(msg_id)


def encode_ack2(msg_id: bytes) -> bytes:
    """``[6, id]``."""
    return b"\x82\x06" + byte_string(msg_id)


def encode_reply(msg_id: bytes, status: int, value: Any = None) -> bytes:
    """``[4, id, status, value]``: a RESPONSE built from a Python value."""
    data = cbor.NULL if value is None else cbor.dumps(value)
    return b"".join((b"\x84\x04", byte_string(msg_id), head(0, int(status)), data))


def encode_response_raw(msg_id: bytes, status: int, raw: bytes) -> bytes:
    """``[4, id, status, data]`` with the data element already encoded."""
    return b"".join((b"\x84\x04", byte_string(msg_id), head(0, status), raw))


def encode_rpc_raw(msg_id: bytes, topic: str, raw: bytes) -> bytes:
    """``[2, id, topic, null, data]`` with the data element already encoded."""
    return b"".join((b"\x85\x02", byte_string(msg_id), text(topic), cbor.NULL, raw))


def encode_pub_raw(topic: str, raw: bytes) -> bytes:
    """``[1, topic, data]`` (QoS0) with the data element already encoded."""
    return b"\x83\x01" + text(topic) + raw


def encode_pub_flags_raw(flags: int, msg_id: bytes, topic: str, raw: bytes) -> bytes:
    """``[1|flags, id, topic, data]`` with the data element already encoded."""
    return b"".join((b"\x84", head(0, 1 | flags), byte_string(msg_id), text(topic), raw))


def encode_pattern_pub(pattern: str, topic: str, raw: bytes) -> bytes:
    """A key-space delivery: ``[1, pattern, [topic, *args]]`` from the raw data of ``topic``."""
    return b"\x83\x01" + text(pattern) + pattern_payload(topic, raw)


__all__ = [
    "encode_ack",
    "encode_ack2",
    "encode_pattern_pub",
    "encode_pub_flags_raw",
    "encode_pub_raw",
    "encode_reply",
    "encode_response_raw",
    "encode_rpc_raw",
]
