"""The broker: an asyncio server around the sans-IO Router and a store.

One asyncio protocol object per TCP connection
(:class:`rembus.broker.connection.Peer`) moves bytes to and from a
:class:`~rembus_proto.broker.peer.BrokerPeer` (WebSocket, dialect, router
feed). Once per event-loop turn the broker answers the router's data
requests (stored messages, keys) from its ports, commits the store (so
stored messages are durable before any QoS ACK leaves), gives every
connection one ``write`` and carries out the router's orders. Timers run on
the monotonic clock; stored messages are stamped with the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from rembus import logs
from rembus.broker import status
from rembus.broker.cluster.port import CLUSTER_ORDERS, ClusterPort
from rembus.broker.connection import CLOSE_POLICY, BrokerConfig, Peer
from rembus.broker.http_api import HttpApi, Passwords
from rembus.security.crypto import verify_signature
from rembus.version import __version__
from rembus_proto.broker import (
    CLOSE_GOING_AWAY,
    Close,
    Connection,
    Router,
    ShutdownRequested,
    Skipped,
    answer_requests,
)
from rembus_proto.broker.peer import BrokerPeer
from rembus_proto.security_port import MemorySecurity, Security
from rembus_proto.store import MemoryStore, Pruned, Store
from rembus_proto.ws import WSConfig

__all__ = ["Broker", "BrokerConfig"]

log = logging.getLogger("rembus.broker")


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
        self.peers: set[Peer] = set()
        self.by_conn: dict[Connection, Peer] = {}
        self.per_address: dict[str, int] = {}
        """Open connections per IP address."""
        self.handshaking = 0
        self.dropped_json = 0
        """Messages not sent to a JSON component because they cannot be written as JSON."""
        self.partial_bytes = 0
        """Bytes of unfinished messages held for all connections."""
        self.partial_since: dict[Peer, float] = {}
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
            lambda: Peer(self), self.config.host, self.config.port, reuse_address=True,
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
        cluster = self.cluster
        orders = answer_requests(router, self.store, self.security, time.monotonic(), time.time(),
                                 pruned, replay=cluster is None,
                                 defer_key=cluster.defer_key if cluster is not None else None)
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
