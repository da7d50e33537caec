"""One connection of a component: the WebSocket client layer and the client machine together.

A :class:`ClientSession` is what a client driver feeds: bytes read from the
socket in, bytes to write and application events out, one timer. It follows
the contract of every state machine of this package:

* ``receive_data(data, now)`` with the bytes read (``b""`` at end of stream);
* ``events()`` — the :class:`~rembus_proto.ClientConnection` events, then
  :class:`Disconnected` once the connection is over;
* ``data_to_send() -> list[bytes]`` — write them in order;
* ``next_deadline()`` / ``handle_timer(now)`` — the WebSocket upgrade timeout
  and the client machine's timers;
* a sticky error state: after a :class:`~rembus_proto.ProtocolError` (raised
  once, from the call that met it) every further input raises
  :class:`~rembus_proto.ConnectionFailed` and changes nothing.

The :class:`~rembus_proto.ClientConnection` outlives its sessions: a driver
that reconnects makes a new session around the same connection, which then
restores subscriptions and resends what was not acknowledged.
"""

from __future__ import annotations

from typing import NamedTuple

from .client import ClientConnection
from .client_events import Event as ClientEvent
from .entropy import RandomSource
from .errors import ConnectionFailed, HandshakeError, ProtocolError
from .ws import ClientWebSocket, WSConfig
from .wsevents import Closed, Opened, WsMessage

#: Why a connection ended before the WebSocket upgrade: the words every driver uses.
CLOSED_BEFORE_UPGRADE = "the connection was closed without a WebSocket upgrade answer"


def no_upgrade_answer(timeout: float) -> str:
    """The reason of a connection that got no upgrade answer within ``timeout`` seconds."""
    return f"no WebSocket upgrade answer within {timeout:g} s"


def upgrade_refused(detail: object) -> str:
    """The reason of a connection whose upgrade the server refused (``detail`` says how)."""
    return f"WebSocket upgrade refused: {detail}"


class Disconnected(NamedTuple):
    """The connection is over (reported once, last). ``reason`` says why, for people.

    ``opened`` is false when the WebSocket upgrade never completed: the broker
    was not reached, so the reason says what did not happen.
    """

    reason: str
    opened: bool


SessionEvent = ClientEvent | Disconnected


class ClientSession:
    """The WebSocket upgrade to ``host``/``path``, then the Rembus client protocol over it.

    ``now`` is the time the transport came up; without an answer to the
    upgrade by ``now + open_timeout`` the session ends with
    ``Disconnected("no WebSocket upgrade answer within ... s")``. Once the
    upgrade is done ``conn.connect()`` is called (IDENTITY goes out for a
    named component); when the session ends ``conn.connection_lost()``.
    """

    def __init__(self, conn: ClientConnection, host: str, path: str = "/", *, now: float,
                 open_timeout: float, config: WSConfig | None = None,
                 random: RandomSource | None = None) -> None:
        if not open_timeout > 0:
            raise ValueError(f"open_timeout must be > 0, not {open_timeout!r}")
        self.conn = conn
        self._ws = ClientWebSocket(host, path, config, random=random)
        self._open_timeout = open_timeout
        self._open_deadline: float | None = now + open_timeout
        self._opened = False
        self._events: list[SessionEvent] = []
        self._ended = False
        self._end_reason: str | None = None
        self._failure: ProtocolError | None = None
        self.closed: Closed | None = None
        """The close frame the broker sent (its code says why), once received."""

    @property
    def is_open(self) -> bool:
        """True between the completed upgrade and the end: messages flow."""
        return self._opened and not self._ended

    @property
    def ended(self) -> bool:
        """True once :class:`Disconnected` was queued: flush the output, drop the transport."""
        return self._ended

    @property
    def end_reason(self) -> str | None:
        """Why the session ended (the reason of :class:`Disconnected`); ``None`` until then."""
        return self._end_reason

    # -- the contract --------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process bytes read from the transport; ``b""`` means end of stream.

        Raises :class:`~rembus_proto.ProtocolError` for bad input (then the
        session has ended: write :meth:`data_to_send`, drop the transport) and
        :class:`~rembus_proto.ConnectionFailed` for any input after that.
        Input after a clean end is ignored.
        """
        if self._failure is not None:
            raise ConnectionFailed(self._failure)
        if self._ended:
            return
        try:
            ws = self._ws
            ws.receive_data(data)
            for event in ws.events():
                if event.__class__ is WsMessage:
                    content = event.data
                    if type(content) is bytes:
                        self.conn.receive_message(content, now)
                elif isinstance(event, Opened):
                    self._opened = True
                    self._open_deadline = None
                    self.conn.connect(now)
                elif isinstance(event, Closed):
                    self.closed = event
                    self._end(self._closed_reason(event), now)
        except ProtocolError as exc:
            self._failure = exc
            if self._ws.is_open:  # a bad Rembus message: the WebSocket itself is fine
                self._ws.close(1002, "bad message")
            self._end(self._failure_reason(exc), now)
            raise

    def events(self) -> list[SessionEvent]:
        """Take the queued events, oldest first."""
        events: list[SessionEvent] = self._events
        more = self.conn.events()
        if not events:
            return list(more)
        self._events = []
        events.extend(more)
        return events

    def data_to_send(self) -> list[bytes]:
        """Take the bytes to write, in order (the client machine's messages framed)."""
        frames = self.conn.data_to_send()
        ws = self._ws
        if frames and ws.is_open:
            ws.send_messages(frames)
        # else: not connected; the client machine keeps what must survive (outbox, QoS)
        return ws.data_to_send()

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next, ``None`` if no timer runs."""
        deadline = self.conn.next_deadline()
        opening = self._open_deadline
        if opening is not None and (deadline is None or opening < deadline):
            return opening
        return deadline

    def handle_timer(self, now: float) -> None:
        """Fire what is due at ``now``: the upgrade timeout, request timeouts, resends."""
        opening = self._open_deadline
        if opening is not None and now >= opening and not self._ended:
            self._ws.close()
            self._end(no_upgrade_answer(self._open_timeout), now)
        self.conn.handle_timer(now)

    def close(self, now: float) -> None:
        """Start the WebSocket close handshake (the client machine is left as it is)."""
        if self._ws.is_open:
            self._ws.close()
        if not self._opened:
            self._end("closed before the WebSocket upgrade answer", now)

    # -- ending --------------------------------------------------------------

    def _end(self, reason: str, now: float) -> None:
        if self._ended:
            return
        self._ended = True
        self._end_reason = reason
        self._open_deadline = None
        self.conn.connection_lost(now)
        self._events.extend(self.conn.events())
        self._events.append(Disconnected(reason, self._opened))

    def _closed_reason(self, event: Closed) -> str:
        if not self._opened:
            return CLOSED_BEFORE_UPGRADE
        if not event.clean:
            return "the connection was closed by the broker"
        return f"closed by the broker ({event.code} {event.reason})".strip()

    def _failure_reason(self, exc: ProtocolError) -> str:
        if isinstance(exc, HandshakeError):
            return upgrade_refused(exc)
        return f"the broker sent bad data: {exc}"


__all__ = [
    "CLOSED_BEFORE_UPGRADE",
    "ClientSession",
    "Disconnected",
    "SessionEvent",
    "no_upgrade_answer",
    "upgrade_refused",
]
