"""Checks of the WebSocket opening handshake (RFC 6455 section 4) on h11 events."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

import h11

from .entropy import RandomSource
from .errors import HandshakeError
from .wsevents import Headers

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"


def new_key(random: RandomSource) -> bytes:
    """A fresh ``Sec-WebSocket-Key``: 16 bytes of ``random``, base64."""
    return base64.b64encode(random(16))


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value that answers ``key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """h11 headers (lower-case names) as text; latin-1 maps every byte."""
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers)


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    return {
        token.strip().lower()
        for value in _values(headers, name)
        for token in value.split(b",")
        if token.strip()
    }


def wants_websocket(request: h11.Request) -> bool:
    """True when the request asks for an upgrade to WebSocket (else it is plain HTTP)."""
    return b"websocket" in _tokens(request.headers, b"upgrade")


def check_request(request: h11.Request) -> bytes:
    """Validate an upgrade request and return its ``Sec-WebSocket-Key``.

    Raises :class:`HandshakeError` carrying the status to answer with.
    """
    if request.method != b"GET":
        raise HandshakeError("WebSocket upgrade with a method other than GET", 400)
    if request.http_version != b"1.1":
        raise HandshakeError("WebSocket upgrade over HTTP/1.0", 400)
    if b"upgrade" not in _tokens(request.headers, b"connection"):
        raise HandshakeError("WebSocket upgrade without 'Connection: Upgrade'", 400)
    if _values(request.headers, b"sec-websocket-version") != [VERSION.encode()]:
        raise HandshakeError("unsupported Sec-WebSocket-Version (13 expected)", 426)
    keys = _values(request.headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError("WebSocket upgrade without one Sec-WebSocket-Key", 400)
    try:
        raw = base64.b64decode(keys[0], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError("Sec-WebSocket-Key is not 16 bytes in base64", 400)
    if not _values(request.headers, b"host"):
        raise HandshakeError("WebSocket upgrade without a Host header", 400)
    return keys[0]


def check_response(response: h11.InformationalResponse, key: bytes, protocols: set[bytes]) -> None:
    """Validate the ``101`` answer to our upgrade request sent with ``key``.

    ``protocols`` are the subprotocols we offered (usually none).
    """
    headers = response.headers
    if _tokens(headers, b"upgrade") != {b"websocket"}:
        raise HandshakeError("101 response without 'Upgrade: websocket'", 101)
    if b"upgrade" not in _tokens(headers, b"connection"):
        raise HandshakeError("101 response without 'Connection: Upgrade'", 101)
    if _values(headers, b"sec-websocket-accept") != [accept_token(key)]:
        raise HandshakeError("101 response with a wrong Sec-WebSocket-Accept", 101)
    if _tokens(headers, b"sec-websocket-extensions"):
        raise HandshakeError("server enabled an extension that was not offered", 101)
    chosen = _values(headers, b"sec-websocket-protocol")
    if chosen and (len(chosen) != 1 or chosen[0].strip().lower() not in protocols):
        raise HandshakeError("server chose a subprotocol that was not offered", 101)
