"""The one error type that bad input from the network can raise."""

from __future__ import annotations


class ProtocolError(Exception):
    """Raised for any malformed or unacceptable input from the peer.

    Every function of :mod:`rembus_proto` that takes bytes from the network
    raises this (or a subclass) and nothing else. A driver that catches it
    closes the offending connection; nothing else is affected.
    """


class MalformedMessage(ProtocolError):
    """The bytes are not a well-formed Rembus message."""


class UnknownMessageType(MalformedMessage):
    """The message is well-formed CBOR but its type code is not one we handle."""

    def __init__(self, type_code: int) -> None:
        super().__init__(f"unknown message type {type_code}")
        self.type_code = type_code


class MessageTooLarge(ProtocolError):
    """A message exceeded the configured size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class WebSocketError(ProtocolError):
    """The peer broke the WebSocket or HTTP protocol."""


class EncodeError(TypeError):
    """A value given by the application cannot be encoded as CBOR."""
