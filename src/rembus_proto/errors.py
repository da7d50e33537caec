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


class HandshakeError(WebSocketError):
    """The HTTP upgrade failed: a bad upgrade request, or a server that did not accept it.

    ``status`` is the HTTP status involved (the status the server answered, or
    the one a server queues for a bad request), ``None`` when there is none.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FrameError(WebSocketError):
    """A WebSocket frame or message broke RFC 6455.

    ``close_code`` is the close code sent to the peer (1002 protocol error,
    1007 invalid UTF-8).
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class InvalidState(RuntimeError):
    """A call or an input is not allowed in the current state of a state machine.

    It is the caller's (the driver's) mistake, never the peer's: sending on a
    WebSocket that is not open, ``attest()`` without a challenge, feeding a
    connection that already failed. Shared by the WebSocket layer and the
    client machine.
    """


class ConnectionFailed(InvalidState):
    """Input was given to a connection after it failed with a :class:`ProtocolError`.

    The error state is sticky: once the peer broke the protocol, every further
    input raises this and changes nothing; the driver drops the transport.
    ``cause`` is the original error.
    """

    def __init__(self, cause: ProtocolError) -> None:
        super().__init__(f"the connection already failed: {cause}")
        self.cause = cause


class EncodeError(TypeError):
    """A value given by the application cannot be encoded as CBOR."""
