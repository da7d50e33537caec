"""One WebSocket connection of the broker, in front of the router.

:class:`BrokerPeer` owns what the asyncio server used to decide itself: the
server side of the WebSocket, the dialect of the component (CBOR, or JSON
text frames, spec 1.1-1.2: answers go in the dialect last heard), feeding
whole messages to the :class:`~rembus_proto.broker.Router`, closing on bad
input, and the slow-consumer rule. The driver moves bytes::

    events = peer.receive_data(data, now, wall)  # Opened / HttpRequest for the driver
    transport.write(peer.data_to_send())
    if peer.finished: transport.close()
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ProtocolError
from ..jsonrpc import encode_json, to_cbor
from ..messages import Attestation, Identity, decode
from ..ws import ServerWebSocket, WSConfig
from ..wsevents import Closed, HttpRequest, Message, Opened
from .config import CLOSE_PROTOCOL_ERROR, CLOSE_SLOW_CONSUMER
from .router import Router
from .state import Connection


class BrokerPeer:
    """The broker side of one component's WebSocket connection."""

    def __init__(self, router: Router, ws_config: WSConfig, name: str,
                 max_backlog: int) -> None:
        self.router = router
        self.ws = ServerWebSocket(ws_config)
        self.name = name
        """The remote address, for logs."""
        self.max_backlog = max_backlog
        """Bytes written and not yet sent beyond which the peer is too slow."""
        self.conn: Connection | None = None
        """The router's handle, once the WebSocket is open."""
        self.json = False
        """The component last sent a text frame: it is written to in JSON."""
        self.finished = False
        """The transport must be closed once :meth:`data_to_send` is written."""
        self.problem = ""
        """Why the connection was closed because of the component (empty: it was not)."""
        self.dropped: list[str] = []
        """Messages that could not be sent as JSON since the last call (why, each)."""
        self.heard = False
        """The component sent at least one message the router accepted."""
        self.identified = False
        """The component is known named or anonymous: it sent more than login messages."""
        self.reason = ""
        """Why the connection ends, for logs (the first reason given); empty while open."""
        self.peer_fault = False
        """The connection ends because of what the component sent (or failed to read)."""

    def receive_data(self, data: bytes, now: float,
                     wall: float | None = None) -> list[Opened | HttpRequest]:
        """Bytes from the transport (``b""``: end of stream); returns what the driver
        handles itself: the opening of the WebSocket, a plain HTTP request."""
        if self.finished:
            return []
        try:
            events = self.ws.receive_data(data)
        except ProtocolError as exc:
            self.ending(f"closed by the broker: {exc}", peer_fault=True)
            self._finish(str(exc))
            return []
        out: list[Opened | HttpRequest] = []
        frames: list[bytes] = []  # consecutive messages go to the router together
        for event in events:
            if event.__class__ is Message:
                content = event.data
                if type(content) is bytes:
                    frames.append(content)
                    self.json = False
                    continue
                assert isinstance(content, str)
                try:
                    frames.append(to_cbor(content))
                except ProtocolError as exc:
                    if self._route(frames, now, wall):
                        self._fail(CLOSE_PROTOCOL_ERROR, f"bad JSON message: {exc}")
                    return out
                self.json = True
                continue
            if frames and not self._route(frames, now, wall):
                return out
            frames = []
            if isinstance(event, Opened):
                self.conn = self.router.connect(now, self.name)
                out.append(event)
            elif isinstance(event, HttpRequest):
                out.append(event)
            elif isinstance(event, Closed):
                self.ending(_closed_by_component(event), peer_fault=False)
                self._finish("")
                return out
        if frames:
            self._route(frames, now, wall)
        return out

    def answer_http(self, status: int, content_type: str, body: bytes,
                    headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer a plain HTTP request; the connection then ends."""
        self.ws.send_http_response(status, [("content-type", content_type), *headers], body)
        self._finish("")

    def send(self, frames: list[bytes]) -> None:
        """Queue messages from the router, as JSON text to a component that speaks it."""
        ws = self.ws
        if not ws.is_open:
            return
        if self.json:
            for frame in frames:
                try:
                    ws.send_message(encode_json(decode(frame)))
                except ProtocolError as exc:
                    self.dropped.append(str(exc))
        else:
            ws.send_messages(frames)

    def check_backlog(self, buffered: int) -> bool:
        """``buffered`` bytes wait in the transport: close a consumer that is too slow."""
        if buffered <= self.max_backlog:
            return False
        self._fail(CLOSE_SLOW_CONSUMER, "slow consumer: too much data waiting to be sent")
        return True

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (if open); the connection then ends."""
        self.ending(f"closed by the broker: {reason} (code {code})", peer_fault=False)
        if self.ws.is_open:
            self.ws.close(code, reason[:120])
        self.finished = True

    def lost(self, now: float) -> None:
        """The transport is gone: tell the router (once)."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.router.disconnect(conn, now)

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport."""
        return self.ws.data_to_send()

    def _route(self, frames: list[bytes], now: float, wall: float | None) -> bool:
        """Give messages to the router; false when they made us close the connection."""
        if self.conn is None:
            return True
        try:
            self.router.receive_many(self.conn, frames, now, wall)
        except ProtocolError as exc:
            self._fail(CLOSE_PROTOCOL_ERROR, str(exc))
            return False
        self.heard = True
        if not self.identified and (self.conn.twin.named or not _only_login(frames)):
            self.identified = True
        return True

    def ending(self, reason: str, *, peer_fault: bool) -> None:
        """Note why the connection ends (the first reason given wins)."""
        if not self.reason:
            self.reason = reason
            self.peer_fault = peer_fault

    def _fail(self, code: int, problem: str) -> None:
        """Close because of what the peer sent (or failed to read)."""
        self.ending(f"closed by the broker: {problem} (code {code})", peer_fault=True)
        self.close(code, problem)
        self._finish(problem)

    def _finish(self, problem: str) -> None:
        self.finished = True
        if problem and not self.problem:
            self.problem = problem


def _closed_by_component(closed: Closed) -> str:
    """The reason of a close the component started (or of a connection lost without one)."""
    if not closed.clean:
        return "connection lost"
    why = f": {closed.reason}" if closed.reason else ""
    return f"closed by the component (code {closed.code}{why})"


def _only_login(frames: list[bytes]) -> bool:
    """Whether ``frames`` are only login messages (IDENTITY, ATTESTATION).

    Until a component sends something else, it may still turn out to be named.
    """
    for frame in frames:
        try:
            if not isinstance(decode(frame), Identity | Attestation):
                return False
        except ProtocolError:
            return False
    return True


__all__ = ["BrokerPeer"]
