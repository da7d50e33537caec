"""Sans-IO WebSocket connections, server and client side (RFC 6455 over HTTP/1.1).

A connection object takes the bytes read from the transport and queues
whole-message events; actions (send a message, close, answer an HTTP
request) only queue bytes. It follows the contract of every state machine
of this package: ``receive_data(data)`` returns nothing, :meth:`events`
takes the events, :meth:`data_to_send` takes the buffers to write (a list,
for ``writelines``/``sendmsg``), and the error state is sticky. No sockets,
threads, clocks or asyncio.

h11 parses and writes the HTTP upgrade (and plain HTTP requests on the
server side); the open state uses :mod:`rembus_proto.wsframes`, a frame
layer checked against wsproto's by differential tests.

A driver loop, any role::

    data = transport.read()                     # b"" at end of stream
    try:
        ws.receive_data(data)
    except ProtocolError:
        transport.writelines(ws.data_to_send()) # close frame or HTTP error, if any
        transport.close()
        return
    transport.writelines(ws.data_to_send())     # pongs, close replies
    for event in ws.events(): ...               # send_message() etc. as needed
    transport.writelines(ws.data_to_send())
    if ws.closed: transport.close()

Behaviour:

* Messages: binary ones are ``bytes``, text ones ``str``; fragments are
  reassembled. A message larger than ``WSConfig.max_message_size`` is refused
  as soon as a frame header makes the running total exceed the limit: close
  code 1009 is queued and :class:`~rembus_proto.MessageTooLarge` raised. Other
  frame errors queue close code 1002 (1007 for bad UTF-8) and raise
  :class:`~rembus_proto.FrameError`.
* Any bad input raises :class:`~rembus_proto.ProtocolError` (or a subclass)
  and nothing else. The connection is then closed: the driver writes what
  :meth:`data_to_send` returns and drops the transport. Events decoded from
  the same ``receive_data`` call before the error are not queued. The error
  is sticky: any later input raises :class:`~rembus_proto.ConnectionFailed`
  and changes nothing.
* Pings are answered automatically (not reported); pongs are reported.
* Close handshake: a close frame from the peer is echoed and reported as
  ``Closed(code, reason, clean=True)``. :meth:`close` sends ours; the peer's
  answer is then reported the same way. End of stream (``receive_data(b"")``)
  before that is ``Closed(1006, "", clean=False)``. Messages that arrive
  after our close frame are still reported; input after the end is ignored.
* Extensions: ``permessage-deflate`` and any other offer is ignored (not
  negotiated); no subprotocol is selected.
* Server: any request path is accepted for an upgrade. A request without
  ``Upgrade: websocket`` is reported as :class:`HttpRequest` and answered
  with :meth:`ServerWebSocket.send_http_response`. A bad upgrade request
  queues an HTTP error response (400, 426) and raises
  :class:`~rembus_proto.HandshakeError`; a request head above
  ``max_http_head_size`` gets 431, a body above ``max_http_body_size`` gets
  413 (``MessageTooLarge``). A TLS ClientHello instead of HTTP (a ``wss://``
  client on a plain port) raises ``HandshakeError("TLS handshake on a plain
  ws:// port")``. The size limit bounds memory; a peer that sends
  its head slowly must be timed out by the driver.
* Client: the upgrade request is queued at construction. A non-101 answer
  raises :class:`~rembus_proto.HandshakeError` with its ``status``.
* Calling an action in a state that does not allow it (sending before
  :class:`Opened` or after closing) raises :class:`~rembus_proto.InvalidState`:
  it is a driver bug, not the peer's fault; check :attr:`is_open` first.
"""

from __future__ import annotations

import http
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import h11

from .constants import DEFAULT_MAX_MESSAGE_SIZE
from .entropy import RandomPool, RandomSource
from .errors import (
    ConnectionFailed,
    FrameError,
    HandshakeError,
    InvalidState,
    MessageTooLarge,
    ProtocolError,
)
from .wsevents import Closed, Event, Headers, HttpRequest, Opened, Pong, WsMessage
from .wsframes import PING, PONG, CloseFrame, FrameReader, FrameWriter, PingFrame, ReaderItem
from .wshandshake import (
    VERSION,
    accept_token,
    check_request,
    check_response,
    decode_headers,
    new_key,
    wants_websocket,
)

__all__ = [
    "ClientWebSocket",
    "Closed",
    "Event",
    "Headers",
    "HttpRequest",
    "InvalidState",
    "Opened",
    "Pong",
    "ServerWebSocket",
    "WSConfig",
    "WsMessage",
]

_HANDSHAKE = 0  # reading the HTTP head (and body)
_HTTP = 1  # server: HttpRequest reported, waiting for send_http_response
_OPEN = 2
_CLOSING = 3  # our close frame is sent, waiting for the peer's
_CLOSED = 4

_CLOSE_REASON_LIMIT = 123
TLS_HANDSHAKE_RECORD = b"\x16"
"""First byte of a TLS ClientHello: a ``wss://`` client talking to a plain port."""


@dataclass(frozen=True, slots=True)
class WSConfig:
    """Limits of one connection (all in bytes)."""

    #: Largest message accepted, counted over all its fragments.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Largest HTTP head (request or response line plus headers).
    max_http_head_size: int = 16 * 1024
    #: Largest body of a plain HTTP request (server side).
    max_http_body_size: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_http_head_size", "max_http_body_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")


def _check_close_code(code: int) -> None:
    if not (1000 <= code <= 1003 or 1007 <= code <= 1013 or 3000 <= code <= 4999):
        raise ValueError(f"close code {code} cannot be sent")


class _Connection:
    """What both roles share: the open state, closing, output."""

    def __init__(self, *, client: bool, config: WSConfig | None,
                 random: RandomSource | None = None) -> None:
        self._config = config if config is not None else WSConfig()
        self._client = client
        self._random = random if random is not None else RandomPool()
        self._state = _HANDSHAKE
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._failure: ProtocolError | None = None
        self._reader = FrameReader(client=client, max_size=self._config.max_message_size)
        self._writer = FrameWriter(client=client, random=self._random)
        self._h11 = h11.Connection(
            h11.CLIENT if client else h11.SERVER,
            max_incomplete_event_size=self._config.max_http_head_size,
        )
        self._head_fed = 0  # bytes given to h11 before the head was complete
        self._head_done = False

    @property
    def is_open(self) -> bool:
        """True between :class:`Opened` and the start of closing: messages can be sent."""
        return self._state == _OPEN

    @property
    def partial(self) -> int:
        """Bytes received for a message that is not complete yet."""
        return self._reader.partial

    @property
    def closed(self) -> bool:
        """True once the connection is over: flush :meth:`data_to_send`, then drop it."""
        return self._state == _CLOSED

    def data_to_send(self) -> list[bytes]:
        """Take the buffers queued for the peer, in order; ``[]`` if none."""
        out = self._out
        if not out:
            return []
        self._out = []
        return out

    def events(self) -> list[Event]:
        """Take the events queued by :meth:`receive_data`, oldest first."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes read from the transport; ``b""`` means end of stream.

        Queues the events they complete (see :meth:`events`). Raises
        :class:`~rembus_proto.ProtocolError` on bad input (see the module doc)
        and :class:`~rembus_proto.ConnectionFailed` for any input after that.
        """
        if self._failure is not None:
            raise ConnectionFailed(self._failure)
        state = self._state
        if not data:
            if state != _CLOSED:
                self._state = _CLOSED
                self._events.append(Closed(1006, "", clean=False))
            return
        raw = data if data.__class__ is bytes else bytes(data)
        try:
            if state in (_OPEN, _CLOSING):
                events = self._receive_frames(raw)
            elif state == _HANDSHAKE:
                events = self._receive_http(raw)
            else:
                return
        except ProtocolError as exc:
            self._failure = exc
            raise
        if events:
            if self._events:
                self._events.extend(events)
            else:
                self._events = events

    def send_message(self, data: bytes | bytearray | memoryview | str) -> None:
        """Queue one message: ``bytes`` go as a binary message, ``str`` as text."""
        if self._state != _OPEN:
            raise InvalidState("the WebSocket is not open")
        self._writer.message(data, self._out)

    def send_messages(self, frames: Iterable[bytes]) -> None:
        """Queue binary messages, one per item (the batched form of :meth:`send_message`)."""
        if self._state != _OPEN:
            raise InvalidState("the WebSocket is not open")
        self._writer.messages(frames, self._out)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (at most 125 bytes of payload); the answer is a :class:`Pong` event."""
        if self._state != _OPEN:
            raise InvalidState("the WebSocket is not open")
        self._out.append(self._writer.control(PING, bytes(payload)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the peer's answer is reported as :class:`Closed`.

        Before the connection is open it just ends it (nothing is sent); once
        closing or closed it does nothing. ``reason`` is cut to 123 bytes of
        UTF-8. Codes 1000-1003, 1007-1013 and 3000-4999 can be sent, others
        raise ``ValueError``. The driver bounds the wait for the answer with
        its own timer.
        """
        _check_close_code(code)
        if self._state == _OPEN:
            self._out.append(self._writer.close(code, reason))
            self._state = _CLOSING
        elif self._state != _CLOSING:
            self._state = _CLOSED

    # -- open state --------------------------------------------------------

    def _receive_frames(self, data: bytes) -> list[Event]:
        items: list[ReaderItem] = []
        reader = self._reader
        try:
            reader.feed(data, items)
        except ProtocolError as exc:
            self._fail(exc)
            raise
        if reader.control:
            reader.control = False
            return self._handle_control(items)
        return cast("list[Event]", items)

    def _handle_control(self, items: list[ReaderItem]) -> list[Event]:
        events: list[Event] = []
        for item in items:
            if isinstance(item, PingFrame):
                if self._state == _OPEN:
                    self._out.append(self._writer.control(PONG, item.payload))
            elif isinstance(item, CloseFrame):
                if self._state == _OPEN:
                    self._out.append(self._writer.close(item.code))
                self._state = _CLOSED
                events.append(Closed(item.code, item.reason, clean=True))
            else:
                events.append(item)
        return events

    def _fail(self, exc: ProtocolError) -> None:
        if self._state == _OPEN:
            if isinstance(exc, MessageTooLarge):
                code = 1009
            elif isinstance(exc, FrameError):
                code = exc.close_code
            else:
                code = 1002
            self._out.append(self._writer.close(code, str(exc)[:_CLOSE_REASON_LIMIT]))
        self._state = _CLOSED

    def _open(self, trailing: bytes, opened: Opened) -> list[Event]:
        """Switch to frames; ``trailing`` are bytes received after the HTTP head."""
        self._state = _OPEN
        if not trailing:
            return [opened]
        events: list[Event] = [opened]
        events.extend(self._receive_frames(trailing))
        return events

    # -- HTTP --------------------------------------------------------------

    def _receive_http(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        try:
            rest = self._feed_http(data, events)
        except (HandshakeError, MessageTooLarge) as exc:
            self._http_failed(exc)
            self._state = _CLOSED
            raise
        if self._state == _OPEN:
            trailing, _ = self._h11.trailing_data
            opened = events.pop()
            assert isinstance(opened, Opened)
            events.extend(self._open(trailing + rest, opened))
        return events

    def _feed_http(self, data: bytes, events: list[Event]) -> bytes:
        """Feed h11 until it needs more data or the HTTP phase ends; return unfed bytes."""
        conn = self._h11
        limit = self._config.max_http_head_size
        if not self._client and not self._head_fed and data[:1] == TLS_HANDSHAKE_RECORD:
            # A wss:// client on a plain port: say so, not "bad HTTP" with TLS bytes.
            raise HandshakeError("TLS handshake on a plain ws:// port", 400)
        while data:
            if self._head_done:
                chunk, data = data, b""
            else:
                # Feed no more than the limit allows, so a complete but oversized head
                # is refused as surely as an incomplete one.
                room = limit - self._head_fed
                if room <= 0:
                    raise HandshakeError(f"HTTP head larger than {limit} bytes", 431)
                chunk, data = data[:room], data[room:]
                self._head_fed += len(chunk)
            conn.receive_data(chunk)
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise HandshakeError(f"bad HTTP: {exc}", exc.error_status_hint) from None
                if event is h11.NEED_DATA:
                    if not self._head_done and self._head_fed >= limit:
                        raise HandshakeError(f"HTTP head larger than {limit} bytes", 431)
                    break
                if event is h11.PAUSED:
                    return data
                self._on_http_event(event, events)
                if self._state != _HANDSHAKE:
                    return data
        return data

    def _on_http_event(self, event: object, events: list[Event]) -> None:
        raise NotImplementedError

    def _http_failed(self, exc: ProtocolError) -> None:
        """Queue what the peer should get when the HTTP phase fails."""


class ServerWebSocket(_Connection):
    """Server side of one accepted connection.

    Reports :class:`Opened` (WebSocket) or :class:`HttpRequest` (plain
    HTTP) first, then messages. See the module documentation for the rules.
    """

    def __init__(self, config: WSConfig | None = None) -> None:
        super().__init__(client=False, config=config)
        self._request: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0

    def send_http_response(
        self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        """Answer the :class:`HttpRequest` just reported; the connection then closes.

        ``Content-Length`` and ``Connection: close`` are set here (framing
        headers among ``headers`` are replaced). Raises ``ValueError`` for an
        invalid status or header.
        """
        if self._state != _HTTP or self._request is None:
            raise InvalidState("no HTTP request is waiting for a response")
        if not 200 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        framing = {"content-length", "transfer-encoding", "connection"}
        fields = [(name, value) for name, value in headers if name.lower() not in framing]
        fields += [("Content-Length", str(len(body))), ("Connection", "close")]
        head_only = self._request.method == b"HEAD"
        try:
            response = h11.Response(status_code=status, headers=fields, reason=_phrase(status))
        except h11.LocalProtocolError as exc:
            raise ValueError(f"invalid HTTP response: {exc}") from None
        self._queue_response(response, b"" if head_only else bytes(body))
        self._state = _CLOSED

    def _queue_response(self, response: h11.Response, body: bytes) -> None:
        conn = self._h11
        out = conn.send(response) or b""
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        self._out.append(out)

    def _http_failed(self, exc: ProtocolError) -> None:
        status = 413 if isinstance(exc, MessageTooLarge) else 400
        if isinstance(exc, HandshakeError) and exc.status:
            status = exc.status
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
        if status == 426:
            headers.append(("Sec-WebSocket-Version", VERSION))
        body = f"{exc}\n".encode()
        headers.append(("Content-Length", str(len(body))))
        try:
            response = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
            self._queue_response(response, body)
        except h11.LocalProtocolError:
            pass  # h11 cannot answer in its state: the driver just drops the connection

    def _on_http_event(self, event: object, events: list[Event]) -> None:
        if isinstance(event, h11.Request):
            self._head_done = True
            self._request = event
            if wants_websocket(event):
                check_request(event)
            else:
                self._check_declared_body(event)
        elif isinstance(event, h11.Data):
            self._body_size += len(event.data)
            if self._body_size > self._config.max_http_body_size:
                raise MessageTooLarge(self._body_size, self._config.max_http_body_size)
            self._body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            request = self._request
            assert request is not None
            path = request.target.decode("latin-1")
            headers = decode_headers(request.headers)
            if wants_websocket(request):
                if self._body_size:
                    raise HandshakeError("WebSocket upgrade request with a body", 400)
                self._accept(check_request(request))
                events.append(Opened(path, headers))
            else:
                self._state = _HTTP
                method = request.method.decode("latin-1")
                events.append(HttpRequest(method, path, headers, b"".join(self._body)))
                self._body = []

    def _check_declared_body(self, request: h11.Request) -> None:
        """Refuse at once a body whose ``Content-Length`` is over the limit."""
        limit = self._config.max_http_body_size
        for name, value in request.headers:
            if name == b"content-length" and int(value) > limit:
                raise MessageTooLarge(int(value), limit)

    def _accept(self, key: bytes) -> None:
        response = h11.InformationalResponse(
            status_code=101,
            headers=[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_token(key).decode()),
            ],
            reason=b"Switching Protocols",
        )
        try:
            self._out.append(self._h11.send(response) or b"")
        except h11.LocalProtocolError:
            raise HandshakeError("this request cannot be upgraded", 400) from None
        self._state = _OPEN


class ClientWebSocket(_Connection):
    """Client side: the upgrade request for ``host`` and ``path`` is queued at once.

    ``host`` is the ``Host`` header value (``"example.com:8338"``); ``path``
    the request target. ``extra_headers`` are added to the request (an
    offered ``Sec-WebSocket-Protocol`` is then accepted in the answer).
    ``random(n)`` gives the handshake key and the mask keys (default: a
    fork-safe :class:`~rembus_proto.entropy.RandomPool`). Raises
    ``ValueError`` if the arguments cannot form a valid request.
    """

    def __init__(
        self,
        host: str,
        path: str = "/",
        config: WSConfig | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        *,
        random: RandomSource | None = None,
    ) -> None:
        super().__init__(client=True, config=config, random=random)
        self.host = host
        self.path = path
        self._key = new_key(self._random)
        self._protocols = {
            token.strip().lower().encode("latin-1")
            for name, value in extra_headers
            if name.lower() == "sec-websocket-protocol"
            for token in value.split(",")
        }
        headers = [
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self._key.decode()),
            ("Sec-WebSocket-Version", VERSION),
            *extra_headers,
        ]
        try:
            request = h11.Request(method="GET", target=path, headers=headers)
            out = self._h11.send(request) or b""
            out += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise ValueError(f"invalid upgrade request: {exc}") from None
        self._out.append(out)

    def _on_http_event(self, event: object, events: list[Event]) -> None:
        if isinstance(event, h11.InformationalResponse):
            if event.status_code != 101:
                return  # interim 1xx answers are allowed before the final one
            self._head_done = True
            check_response(event, self._key, self._protocols)
            self._state = _OPEN
            events.append(Opened(self.path, decode_headers(event.headers)))
        elif isinstance(event, h11.Response):
            reason = event.reason.decode("latin-1")
            raise HandshakeError(
                f"server answered HTTP {event.status_code} {reason}".rstrip(), event.status_code
            )


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b""
