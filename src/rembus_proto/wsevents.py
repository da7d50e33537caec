"""Events reported by the WebSocket layer (see :mod:`rembus_proto.ws`)."""

from __future__ import annotations

from dataclasses import dataclass

#: HTTP headers as reported in events: lower-case names, values decoded as latin-1.
Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Opened:
    """The WebSocket handshake completed; messages can be sent and received.

    ``path`` is the request target (path and query string, as sent by the
    client). ``headers`` are the request headers on the server side and the
    ``101`` response headers on the client side.
    """

    path: str
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A plain (non-upgrade) HTTP request reached a server.

    Answer it with :meth:`ServerWebSocket.send_http_response`; the connection
    closes after the response.
    """

    method: str
    target: str
    headers: Headers = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class WsMessage:
    """One whole WebSocket message: ``bytes`` for binary, ``str`` for text."""

    data: bytes | str


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer answered a ping (see :meth:`send_ping`); for keep-alive checks."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over; the driver flushes pending output and drops it.

    ``clean`` is true when a close frame was received (close handshake), false
    when the transport ended without one (then ``code`` is 1006). ``code`` is
    1005 when the peer's close frame carried no code.
    """

    code: int
    reason: str = ""
    clean: bool = True


Event = Opened | HttpRequest | WsMessage | Pong | Closed
