"""The broker: an asyncio server around the sans-IO Router and a store.

One asyncio protocol object per TCP connection moves bytes to and from a
:class:`~rembus_proto.broker.peer.BrokerPeer` (WebSocket, dialect, router
feed). Once per event-loop turn the broker answers the router's data
requests (stored messages, keys) from its ports, commits the store (so
stored messages are durable before any QoS ACK leaves), gives every
connection one ``write`` and carries out the router's orders. Timers run on
the monotonic clock; stored messages are stamped with the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

from rembus import logs
from rembus.broker import status
from rembus.broker.cluster.port import CLUSTER_ORDERS, ClusterPort
from rembus.broker.http_api import HttpApi, Passwords
from rembus.security.crypto import verify_signature
from rembus.version import __version__
from rembus.writes import SlicedWriter
from rembus_proto.broker import (
    CLOSE_GOING_AWAY,
    Close,
    Connection,
    Router,
    RouterConfig,
    ShutdownRequested,
    Skipped,
    answer_requests,
)
from rembus_proto.broker.peer import BrokerPeer
from rembus_proto.security_port import MemorySecurity, Security
from rembus_proto.store import MemoryStore, Pruned, Store
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


class _Peer(asyncio.Protocol):
    """One TCP connection: moves bytes between its transport and a :class:`BrokerPeer`."""

    def __init__(self, broker: Broker) -> None:
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

    def __init__(self, broker: Broker) -> None:
        self.broker: Broker | None = broker
        broker.handshaking += 1

    def done(self) -> None:
        if self.broker is not None:
            self.broker.handshaking -= 1
            self.broker = None


def _component(conn: Connection) -> str | None:
    return conn.twin.name if conn.twin.named else None


class Broker:
    """A running broker; use :meth:`start` and :meth:`stop` (or ``async with``)."""

    def __init__(self, config: BrokerConfig | None = None, store: Store | None = None,
                 security: Security | None = None, *,
                 passwords: Passwords | None = None) -> None:
        """``store`` keeps twins and messages (default: in memory); ``security`` keeps keys,
        tenants, admins and private topics (e.g. :class:`rembus.security.FileSecurity`;
        default: in memory, empty: nothing registered, no tenant, no admin);
        ``passwords`` are the HTTP API's Basic passwords (default: none is accepted)."""
        self.config = config or BrokerConfig()
        self.store: Store = store if store is not None else MemoryStore()
        self.ws_config = WSConfig(max_message_size=self.config.max_message_size,
                                  max_http_body_size=self.config.http_max_body)
        router_config = self.config.router
        if router_config.limits.max_message_size != self.config.max_message_size:
            router_config = replace(router_config, limits=replace(
                router_config.limits, max_message_size=self.config.max_message_size))
        # a replay batch is read once the socket is below high water (at most half the
        # backlog): a quarter more keeps the connection clear of the backlog limit
        replay_bytes = max(self.config.max_backlog // 4, 1)
        if router_config.replay_batch_bytes is not None:
            replay_bytes = min(replay_bytes, router_config.replay_batch_bytes)
        router_config = replace(router_config, replay_batch_bytes=replay_bytes)
        self.security: Security = security if security is not None else MemorySecurity()
        self.router = Router(self.store, router_config, now=time.monotonic(),
                             security=self.security, verify=verify_signature)
        self.peers: set[_Peer] = set()
        self.by_conn: dict[Connection, _Peer] = {}
        self.per_address: dict[str, int] = {}
        """Open connections per IP address."""
        self.handshaking = 0
        self.dropped_json = 0
        """Messages not sent to a JSON component because they cannot be written as JSON."""
        self.partial_bytes = 0
        """Bytes of unfinished messages held for all connections."""
        self.partial_since: dict[_Peer, float] = {}
        """Connections holding an unfinished message, and since when."""
        """TLS handshakes in progress (they count toward ``max_connections``)."""
        self.started = time.time()
        self.pruned: dict[str, int] = {"age": 0, "count": 0, "bytes": 0, "total": 0}
        """Stored messages dropped by the retention rules since the start, per reason."""
        self.observable = status.paths(metrics=self.config.metrics, status=self.config.status)
        """The paths of ``/metrics``, ``/status``, ``/status.json`` that are turned on."""
        self._server: asyncio.Server | None = None
        self._flush_scheduled = False
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_due = 0.0
        """When the periodic callback should run (monotonic): how late it runs is the
        event-loop lag."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested = asyncio.Event()
        """Set when an admin sent ``shutdown``; whoever runs the broker then stops it."""
        self.http_api = HttpApi(self, passwords) if self.config.http_api else None
        self.cluster: ClusterPort | None = None
        """Set by the cluster driver when the broker is joined in a cluster."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the broker is not started"
        return self._loop

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        assert self._server is not None, "the broker is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS) of this broker."""
        scheme = "wss" if self.config.ssl_context is not None else "ws"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Listen; raises OSError if the address is taken."""
        self._loop = asyncio.get_running_loop()
        context = self.config.ssl_context
        self._server = await self._loop.create_server(
            lambda: _Peer(self), self.config.host, self.config.port, reuse_address=True,
            ssl=context, ssl_handshake_timeout=self.config.handshake_timeout if context else None)
        self._tick_due = time.monotonic() + self.config.tick
        self._ticker = self._loop.call_later(self.config.tick, self._tick)
        log.debug("broker %s listening on %s", self.config.router.name, self.url)

    async def stop(self) -> None:
        """Close every connection, save every twin and commit the store."""
        if self._server is None:
            return
        self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self.http_api is not None:
            self.http_api.stop()
        for peer in list(self.peers):
            peer.close(CLOSE_GOING_AWAY, "broker shutting down")
        self.router.shutdown(time.monotonic())
        self.store.commit()
        await self._server.wait_closed()
        self._server = None
        log.info("broker stopped")

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Serve until cancelled or until an admin sends ``shutdown``, then stop."""
        try:
            await self.stop_requested.wait()
        finally:
            await self.stop()

    def components(self) -> Iterator[tuple[BrokerPeer, float]]:
        """Each open WebSocket connection, and when it was accepted (wall clock)."""
        for peer in self.peers:
            if peer.core is not None and peer.core.conn is not None:
                yield peer.core, peer.since

    def refuse(self, address: str, kind: str, reason: str) -> None:
        """Log and count a connection refused before it became a WebSocket."""
        logs.refused(address, reason)
        self.router.stats.refused(time.time(), address, kind, reason)

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers."""
        health = {
            "status": "ok",
            "name": self.config.router.name,
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            "connections": len(self.router.connections),
            "twins": len(self.router.twins),
            "forgotten": self.router.forgotten,
            "pruned": dict(self.pruned),
            "dropped_json": self.dropped_json,
        }
        rows = getattr(self.store, "rows_written", None)
        if rows is not None:  # a store in a file
            health["store_rows_written"] = rows
        return health

    # -- the turn ----------------------------------------------------------

    def schedule_flush(self) -> None:
        """Write pending output at the end of this event-loop turn (once per turn)."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        router = self.router
        pruned: list[Pruned] = []
        orders = answer_requests(router, self.store, self.security, time.monotonic(), time.time(),
                                 pruned)
        if pruned:
            self._pruned(pruned)
        # a delivery mark moved by an ACK is durable before the ACK2 that answers it
        # leaves: the subscriber then forgets the id, and a replay must not resend it
        router.flush()
        self.store.commit()
        by_conn = self.by_conn
        drained: list[Connection] = []
        for conn, frames in router.data_to_send():
            peer = by_conn.get(conn)
            if peer is None:
                if self.http_api is not None and self.http_api.send(conn, frames):
                    continue
                if self.cluster is not None:  # answers for another broker
                    self.cluster.output(conn, frames)
                continue
            peer.send(frames)
            if conn.waiting_drain and not peer.paused and conn in by_conn:
                drained.append(conn)
        for order in orders:
            if isinstance(order, Close):
                self._close(order)
            elif isinstance(order, Skipped):
                self._skipped(order)
            elif isinstance(order, CLUSTER_ORDERS):
                if self.cluster is not None:
                    self.cluster.handle(order)
            elif isinstance(order, ShutdownRequested) and not self.stop_requested.is_set():
                log.info("shutdown requested by an admin")
                self.stop_requested.set()
        if drained:
            now = time.monotonic()
            for conn in drained:
                router.drained(conn, now)
            self.schedule_flush()

    def _pruned(self, pruned: list[Pruned]) -> None:
        config = self.config.router
        limits = {"age": f"older than --retention-max-age {config.retention_max_age:g} s",
                  "count": f"beyond --retention-max-messages {config.retention_max_per_topic}",
                  "bytes": f"beyond --retention-max-bytes {config.retention_max_bytes}",
                  "total": "beyond --retention-max-total-bytes "
                           f"{config.retention_max_total_bytes}"}
        for topic, count, reason in pruned:
            log.info("retention: dropped %d stored messages of topic %r (%s)", count, topic,
                     limits.get(reason, reason))
            self.pruned[reason] = self.pruned.get(reason, 0) + count

    def _skipped(self, skipped: Skipped) -> None:
        peer = self.by_conn.get(skipped.conn)
        name = peer.core.name if peer is not None and peer.core is not None else "?"
        log.warning("%s: a message of %d bytes not sent: over the limit of %d bytes "
                    "(--max-message-size); %d skipped so far", name, skipped.size,
                    skipped.limit, self.router.skipped)

    def _close(self, close: Close) -> None:
        peer = self.by_conn.get(close.conn)
        if peer is not None:
            peer.close(close.code, close.reason)
        elif self.http_api is not None:
            self.http_api.closed(close.conn, close.reason)

    def _tick(self) -> None:
        now = time.monotonic()
        self.router.stats.loop_lag.observe(max(0.0, now - self._tick_due))
        self._tick_due = now + self.config.tick
        self._ticker = self.loop.call_later(self.config.tick, self._tick)
        late = now - self.config.fragment_timeout
        for peer in [p for p, since in self.partial_since.items() if since < late]:
            peer.expire(CLOSE_POLICY, "message not finished within "
                        f"{self.config.fragment_timeout:g} s (--fragment-timeout)")
        forgotten = self.router.forgotten
        try:
            self.router.handle_timer(now, time.time())
        finally:
            self.schedule_flush()
        if self.router.forgotten > forgotten:
            log.info("forgot %d named components away longer than --twin-retention %g s",
                     self.router.forgotten - forgotten, self.config.router.twin_retention)
