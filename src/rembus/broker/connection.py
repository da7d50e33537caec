"""One TCP connection of the broker: bytes between its transport and a ``BrokerPeer``.

The :class:`Peer` protocol object applies the connection-level budgets (handshake,
identify and fragment timeouts, keepalive, unfinished-message bytes, slow
consumers) and reports to the :class:`BrokerHost` that accepted it, which owns
the shared counts and the router.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import weakref
from dataclasses import dataclass, field
from typing import Protocol, cast

from rembus import logs
from rembus.broker import status
from rembus.broker.http_api import HttpApi
from rembus.writes import SlicedWriter
from rembus_proto.broker import CLOSE_GOING_AWAY, Connection, RouterConfig
from rembus_proto.broker.peer import BrokerPeer
from rembus_proto.ws import WSConfig
from rembus_proto.wsevents import HttpRequest, Opened

log = logging.getLogger("rembus.broker")

CLOSE_POLICY = 1008
"""Close code of a connection that let a timeout expire."""
CLOSE_TOO_BIG = 1009
"""Close code of a connection whose unfinished message broke the budget."""


@dataclass(frozen=True)
class BrokerConfig:
    """Everything the broker can be told; the CLI and environment fill it."""

    host: str = "127.0.0.1"
    port: int = 8000
    router: RouterConfig = field(default_factory=RouterConfig)
    max_message_size: int = 60 * 1024 * 1024
    max_connections: int = 10_000
    handshake_timeout: float = 10.0
    """Seconds a new connection has to complete its HTTP upgrade (slowloris guard)."""
    identify_timeout: float = 10.0
    """Seconds an open WebSocket has to send its first message or answer the ping sent
    when it opens."""
    keepalive: float = 30.0
    """Seconds between server pings; a connection silent for two of them is closed."""
    max_connections_per_address: int = 1000
    """Open connections from one IP address beyond which new ones are refused."""
    close_grace: float = 5.0
    """Seconds a closed connection has to take its last bytes before it is aborted."""
    max_partial_bytes: int = 256 * 1024 * 1024
    """Bytes of unfinished messages held for all connections together."""
    fragment_timeout: float = 60.0
    """Seconds a message has to arrive in full once its first byte is in."""
    max_backlog: int = 64 * 1024 * 1024
    """Bytes written to a connection and not yet sent; beyond it the peer is too slow."""
    write_high_water: int = 4 * 1024 * 1024
    write_low_water: int = 1024 * 1024
    tick: float = 0.1
    """Seconds between two timer checks (QoS resends, retention, challenges)."""
    metrics: bool = True
    """Answer ``GET /metrics`` (Prometheus); needs ``prometheus-client``."""
    status: bool = True
    """Answer ``GET /status`` (a page) and ``GET /status.json``."""
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    """Serve ``wss://`` with this TLS context (see :func:`rembus.security.tls.server_context`)."""
    http_api: bool = True
    """Serve the HTTP API (:mod:`rembus.broker.http_api`) on the broker's port."""
    http_max_body: int = 1024 * 1024
    """Bytes of an HTTP request body; beyond it the request gets 413."""


class BrokerHost(status.Broker, Protocol):
    """What a connection uses of the broker that accepted it."""

    config: BrokerConfig
    ws_config: WSConfig
    peers: set[Peer]
    by_conn: dict[Connection, Peer]
    per_address: dict[str, int]
    """Open connections per IP address."""
    handshaking: int
    """TLS handshakes in progress."""
    partial_bytes: int
    """Bytes of unfinished messages held for all connections."""
    partial_since: dict[Peer, float]
    """Connections holding an unfinished message, and since when."""
    http_api: HttpApi | None
    observable: frozenset[str]
    """The paths of ``/metrics``, ``/status``, ``/status.json`` that are turned on."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        ...

    def refuse(self, address: str, kind: str, reason: str) -> None:
        """Log and count a refused connection."""
        ...

    def schedule_flush(self) -> None:
        """Run the router's output at the end of this event-loop turn."""
        ...

    def health(self) -> dict[str, object]:
        """The ``GET /health`` answer."""
        ...


class Peer(asyncio.Protocol):
    """One TCP connection: moves bytes between its transport and a :class:`BrokerPeer`."""

    def __init__(self, broker: BrokerHost) -> None:
        self.broker = broker
        self.core: BrokerPeer | None = None
        self.transport: asyncio.Transport | None = None
        self.out: SlicedWriter | None = None
        self.paused = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        """The handshake timeout, then the identify timeout."""
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._pinged = False
        """A ping went out and nothing came in since."""
        self.address = ""
        """The IP address counted in ``broker.per_address`` (empty: not counted)."""
        self.since = time.time()
        """When the connection was accepted (wall clock)."""
        self._handshake = _Handshake(broker) if broker.config.ssl_context is not None else None
        if self._handshake is not None:
            # Created at accept time, before the TLS handshake: it counts until it ends. A
            # failed handshake never calls us back; the protocol object is then dropped.
            weakref.finalize(self, self._handshake.done)
            broker.loop.call_later(broker.config.handshake_timeout, self._handshake.done)
        self.released = False
        self.partial = 0
        """Bytes of an unfinished message held (counted in ``broker.partial_bytes``)."""
        """The transport is gone (``connection_lost``)."""
        self.announced = False
        """The "connected" line is logged (once the component is known named or not)."""

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface without the base class
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        broker = self.broker
        self._tls_done()
        open_now = len(broker.peers) + broker.handshaking
        if open_now >= broker.config.max_connections:
            broker.refuse(name, "max_connections",
                          f"{open_now} connections open (--max-connections)")
            transport.abort()
            return
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        if broker.per_address.get(host, 0) >= broker.config.max_connections_per_address:
            broker.refuse(name, "max_connections_per_address",
                          f"{broker.per_address[host]} connections open from {host} "
                          "(--max-connections-per-address)")
            transport.abort()
            return
        self.address = host
        broker.per_address[host] = broker.per_address.get(host, 0) + 1
        self.core = BrokerPeer(broker.router, broker.ws_config, name, broker.config.max_backlog)
        broker.peers.add(self)
        # Past high water the peer is not read any more: what it makes the broker queue
        # (pongs, replies) stays within the backlog budget.
        high = min(broker.config.write_high_water, broker.config.max_backlog // 2)
        self.out = SlicedWriter(transport, high=high,
                                low=min(broker.config.write_low_water, high // 4),
                                pause=self._pause, resume=self._resume)
        self._handshake_timer = broker.loop.call_later(broker.config.handshake_timeout,
                                                       self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        core = self.core
        if core is None:
            return
        self._pinged = False
        core.receive_data(data, time.monotonic(), time.time())
        for event in core.events():
            self._cancel_handshake_timer()
            if isinstance(event, Opened):
                assert core.conn is not None
                self.broker.by_conn[core.conn] = self
                log.debug("%s: WebSocket open", core.name)
                self._opened()
            else:
                self._http(core, event)
        if core.heard:
            self._cancel_handshake_timer()
        if self._partial_over(core.ws.partial):
            return
        self._announce()
        self._write(core.data_to_send())
        out = self.out
        if core.finished or (out is not None and core.check_backlog(out.size)):
            self._drop()
            return
        self.broker.schedule_flush()

    def send(self, frames: list[bytes]) -> None:
        """Write messages from the router."""
        core = self.core
        if core is None or not core.ws.is_open:
            return
        core.send(frames)
        self._announce()  # e.g. the answer to an IDENTITY whose key was looked up
        for problem in core.dropped:
            self.broker.dropped_json += 1
            log.warning("%s: a message cannot be sent as JSON, dropped: %s", core.name, problem)
        core.dropped.clear()
        self._write(core.data_to_send())
        out = self.out
        if out is not None and core.check_backlog(out.size):
            self._drop()

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.released = True
        if self.out is not None:
            self.out.lost()
        if self.core is not None:
            self.core.ending(f"connection lost: {exc}" if exc else "connection lost",
                             peer_fault=False)
        self._forget()

    def pause_writing(self) -> None:
        if self.out is not None:
            self.out.transport_paused()

    def resume_writing(self) -> None:
        if self.out is not None:
            self.out.transport_resumed()

    def _pause(self) -> None:
        """More than the high-water mark waits to be sent: stop reading this peer."""
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def _resume(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        conn = self.core.conn if self.core is not None else None
        if conn is not None and conn.waiting_drain:
            self.broker.router.drained(conn, time.monotonic())
            self.broker.schedule_flush()

    # -- helpers -----------------------------------------------------------

    def _announce(self) -> None:
        """Log the "connected" line once the component is known named or anonymous."""
        core = self.core
        if self.announced or core is None or core.conn is None:
            return
        if core.identified or core.conn.twin.named:
            self.announced = True
            logs.connected(core.name, _component(core.conn))

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _partial_over(self, partial: int) -> bool:
        """Account this connection's unfinished message; close it if it breaks the budget."""
        broker = self.broker
        if partial == self.partial:
            return False
        if not self.partial:
            broker.partial_since[self] = time.monotonic()
        elif not partial:
            broker.partial_since.pop(self, None)
        broker.partial_bytes += partial - self.partial
        self.partial = partial
        if broker.partial_bytes <= broker.config.max_partial_bytes:
            return False
        self.expire(CLOSE_TOO_BIG, f"{broker.partial_bytes} bytes of unfinished messages "
                    "held (--max-partial-bytes)")
        return True

    def _tls_done(self) -> None:
        """The TLS handshake ended: it no longer counts as pending."""
        if self._handshake is not None:
            self._handshake.done()

    def _opened(self) -> None:
        """The WebSocket is open: it must now send a message, and keep answering pings."""
        loop = self.broker.loop
        config = self.broker.config
        core = self.core
        if core is not None and not core.heard:
            # a client that reads answers at once, even one that has nothing to say
            core.ws.send_ping()
            self._write(core.data_to_send())
            self._handshake_timer = loop.call_later(config.identify_timeout,
                                                    self._identify_expired)
        self._keepalive_timer = loop.call_later(config.keepalive, self._keepalive)

    def _identify_expired(self) -> None:
        self._handshake_timer = None
        core = self.core
        if core is not None and core.ponged and not core.heard:
            log.debug("%s: no message yet, but it answers pings: kept (--identify-timeout)",
                      core.name)
        elif core is not None and not core.heard and self.transport is not None:
            timeout = self.broker.config.identify_timeout
            self.expire(CLOSE_GOING_AWAY, f"no message within {timeout:g} s "
                        "(--identify-timeout)")

    def _keepalive(self) -> None:
        self._keepalive_timer = None
        core = self.core
        if core is None or self.transport is None or not core.ws.is_open:
            return
        if self._pinged:
            self.expire(CLOSE_GOING_AWAY, f"no pong within {self.broker.config.keepalive:g} s "
                        "(--keepalive)")
            return
        self._pinged = True
        core.ws.send_ping()
        self._write(core.data_to_send())
        self._keepalive_timer = self.broker.loop.call_later(self.broker.config.keepalive,
                                                            self._keepalive)

    def expire(self, code: int, problem: str) -> None:
        """Close a connection that let a timeout expire or broke a budget (its fault)."""
        if self.core is not None:
            self.core.ending(f"closed by the broker: {problem}", peer_fault=True)
        self.close(code, problem)

    def _http(self, core: BrokerPeer, request: HttpRequest) -> None:
        path = request.target.split("?", 1)[0]
        api = self.broker.http_api
        if request.method in ("GET", "HEAD") and path == "/health":
            core.answer_http(200, "application/json", json.dumps(self.broker.health()).encode())
        elif request.method in ("GET", "HEAD") and path in self.broker.observable:
            core.answer_http(*status.answer(self.broker, path, request.headers, core.name))
        elif api is not None and api.handle(self, request, core.name):
            return  # answered by reply_http, now or once the router answers
        else:
            core.answer_http(404, "text/plain", b"not found\n")
        log.debug("%s: HTTP %s %s", core.name, request.method, path)

    def reply_http(self, status: int, content_type: str, body: bytes,
                   headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer the HTTP request of this connection (perhaps after it left) and close."""
        core = self.core
        if core is None or self.released:
            return
        core.answer_http(status, content_type, body, headers)
        self._write(core.data_to_send())
        self._drop()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        core = self.core
        if core is not None and core.conn is None and self.transport is not None:
            self.broker.refuse(core.name, "handshake_timeout", "no WebSocket handshake within "
                               f"{self.broker.config.handshake_timeout:g} s")
            self._drop()

    def _write(self, data: list[bytes]) -> None:
        if data and self.out is not None:
            self.out.writelines(data)

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (if open) and drop the connection."""
        if self.core is not None:
            self.core.close(code, reason)
            self._write(self.core.data_to_send())
        self._drop()

    def _drop(self) -> None:
        core = self.core
        if core is not None:
            self._write(core.data_to_send())  # the close frame, when the core has just failed
        if core is not None and core.conn is None and core.problem:
            self.broker.refuse(core.name, "bad_request", core.problem)  # before the upgrade
            core.problem = ""
        self._forget()
        transport = self.transport
        out = self.out
        if transport is None or transport.is_closing() or (out is not None and out.closing):
            return
        if out is None:
            transport.close()
            return
        out.close()
        if out.size:
            # A peer that does not read would keep its buffer (and socket) forever.
            self.broker.loop.call_later(self.broker.config.close_grace, self._abort, transport)

    def _abort(self, transport: asyncio.Transport) -> None:
        if not self.released:
            name = self.core.name if self.core is not None else "?"
            log.warning("%s: aborted, %d bytes still unread %g s after closing (--close-grace)",
                        name, self.out.size if self.out is not None else 0,
                        self.broker.config.close_grace)
            transport.abort()

    def _forget(self) -> None:
        self._cancel_handshake_timer()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self._tls_done()
        self._partial_over(0)
        broker = self.broker
        broker.peers.discard(self)
        if self.address:
            left = broker.per_address[self.address] - 1
            if left:
                broker.per_address[self.address] = left
            else:
                del broker.per_address[self.address]
            self.address = ""
        core = self.core
        conn = core.conn if core is not None else None
        if core is not None and conn is not None:
            broker.by_conn.pop(conn, None)
            core.lost(time.monotonic())
            broker.schedule_flush()
            broker.router.stats.connection_closed(core.reason or "closed", core.peer_fault)
            logs.disconnected(core.name, _component(conn), core.reason or "closed",
                              peer_fault=core.peer_fault)


class _Handshake:
    """A TLS handshake in progress, counted in ``broker.handshaking`` until :meth:`done`."""

    __slots__ = ("broker",)

    def __init__(self, broker: BrokerHost) -> None:
        self.broker: BrokerHost | None = broker
        broker.handshaking += 1

    def done(self) -> None:
        if self.broker is not None:
            self.broker.handshaking -= 1
            self.broker = None


def _component(conn: Connection) -> str | None:
    return conn.twin.name if conn.twin.named else None
