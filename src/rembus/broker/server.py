"""The broker: an asyncio server around the sans-IO Router and a store.

One asyncio protocol object per TCP connection feeds a
:class:`~rembus_proto.ws.ServerWebSocket`; whole messages go to the shared
:class:`~rembus_proto.router.Router`. Output is written once per event-loop
turn: the store commits first (so stored messages are durable before any
QoS ACK leaves), then every connection gets one ``write``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from rembus import logs
from rembus.security.crypto import verify_signature
from rembus.version import __version__
from rembus_proto import ProtocolError, decode
from rembus_proto.jsonrpc import encode_json, to_cbor
from rembus_proto.router import Close, Connection, Router, RouterConfig
from rembus_proto.security import Security
from rembus_proto.store import MemoryStore, Store
from rembus_proto.ws import ServerWebSocket, WSConfig
from rembus_proto.wsevents import Closed, HttpRequest, Message, Opened

log = logging.getLogger("rembus.broker")

#: Close code for a connection whose peer sent something we cannot accept.
CLOSE_PROTOCOL_ERROR = 1002
#: Close code when the broker stops.
CLOSE_GOING_AWAY = 1001


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
    max_backlog: int = 64 * 1024 * 1024
    """Bytes written to a connection and not yet sent; beyond it the peer is too slow."""
    write_high_water: int = 4 * 1024 * 1024
    write_low_water: int = 1024 * 1024
    tick: float = 0.1
    """Seconds between two timer checks (QoS resends, retention, challenges)."""
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    """Serve ``wss://`` with this TLS context (see :func:`rembus.security.tls.server_context`)."""


class _Peer(asyncio.Protocol):
    """One TCP connection."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.ws = ServerWebSocket(broker.ws_config)
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.name = "?"
        self.paused = False
        self.json = False
        """The component last sent a text frame: it is written to in JSON (spec 1.2)."""
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.announced = False
        """The "connected" line is logged (once the component is known named or not)."""
        self.reason = ""
        """Why the connection ends, for the "disconnected" line; empty while open."""
        self.peer_fault = False

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        broker = self.broker
        if len(broker.peers) >= broker.config.max_connections:
            logs.refused(self.name, f"{len(broker.peers)} connections open (--max-connections)")
            transport.abort()
            return
        broker.peers.add(self)
        transport.set_write_buffer_limits(broker.config.write_high_water,
                                          broker.config.write_low_water)
        self._handshake_timer = broker.loop.call_later(broker.config.handshake_timeout,
                                                       self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.ws.receive_data(data)
        except ProtocolError as exc:
            if self.conn is None:
                logs.refused(self.name, str(exc))
            self._ending(f"closed by the broker: {exc}", peer_fault=True)
            self._write(self.ws.data_to_send())
            self._drop()
            return
        broker = self.broker
        now = time.time()
        frames: list[bytes] = []  # consecutive messages go to the router together
        for event in events:
            if event.__class__ is Message:
                content = event.data
                if type(content) is bytes:
                    frames.append(content)
                    if self.json:
                        self.json = False  # answers go in the dialect last heard (spec 1.1)
                    continue
                assert isinstance(content, str)
                try:
                    frames.append(to_cbor(content))
                except ProtocolError as exc:
                    if self._route(frames, now):
                        self._fail(CLOSE_PROTOCOL_ERROR, f"bad JSON message: {exc}")
                    return
                self.json = True
                continue
            if frames and not self._route(frames, now):
                return
            frames = []
            if isinstance(event, Opened):
                self._opened(now)
            elif isinstance(event, HttpRequest):
                self._http(event)
            elif isinstance(event, Closed):
                self._ending(logs.closed_by_peer(event), peer_fault=False)
                self._write(self.ws.data_to_send())
                self._drop()
                return
        if frames and not self._route(frames, now):
            return
        out = self.ws.data_to_send()
        if out:
            self._write(out)
        broker.schedule_flush()

    def send(self, frames: list[bytes]) -> None:
        """Write messages from the router, as JSON text to a component that speaks it."""
        ws = self.ws
        if self.json:
            for frame in frames:
                try:
                    ws.send_message(encode_json(decode(frame)))
                except ProtocolError as exc:
                    log.warning("%s: a message cannot be sent as JSON, dropped: %s",
                                self.name, exc)
        else:
            ws.send_messages(frames)
        self._write(ws.data_to_send())

    def _route(self, frames: list[bytes], now: float) -> bool:
        """Give messages to the router; false when they made us close the connection."""
        if self.conn is None:
            return True
        try:
            self.broker.router.receive_many(self.conn, frames, now)
        except ProtocolError as exc:
            self._fail(CLOSE_PROTOCOL_ERROR, str(exc))
            return False
        if not self.announced and (self.conn.twin.named or not logs.only_login(frames)):
            self.announced = True
            logs.connected(self.name, self._component(self.conn))
        return True

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ending(f"connection lost: {exc}" if exc else "connection lost", peer_fault=False)
        self._forget()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.conn is not None and self.conn.waiting_drain:
            self.broker.router.drained(self.conn, time.time())
            self.broker.schedule_flush()

    # -- helpers -----------------------------------------------------------

    def _opened(self, now: float) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.conn = self.broker.router.connect(now, self.name)
        self.broker.by_conn[self.conn] = self
        log.debug("%s: WebSocket open", self.name)

    def _http(self, request: HttpRequest) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        path = request.target.split("?", 1)[0]
        if request.method in ("GET", "HEAD") and path == "/health":
            body = json.dumps(self.broker.health()).encode()
            self.ws.send_http_response(200, [("content-type", "application/json")], body)
        else:
            self.ws.send_http_response(404, [("content-type", "text/plain")], b"not found\n")
        log.debug("%s: HTTP %s %s", self.name, request.method, path)
        self._write(self.ws.data_to_send())
        self._drop()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.conn is None and self.transport is not None:
            logs.refused(self.name, "no WebSocket handshake within "
                         f"{self.broker.config.handshake_timeout:g} s")
            self._drop()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _fail(self, code: int, reason: str) -> None:
        """Close this connection because of what its peer sent."""
        self._ending(f"closed by the broker: {reason} (code {code})", peer_fault=True)
        self.close(code, reason)

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (if open) and drop the connection."""
        self._ending(f"closed by the broker: {reason} (code {code})", peer_fault=False)
        if self.ws.is_open:
            self.ws.close(code, reason[:120])
        self._write(self.ws.data_to_send())
        self._drop()

    def _drop(self) -> None:
        self._forget()
        if self.transport is not None:
            self.transport.close()

    def _forget(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        broker = self.broker
        broker.peers.discard(self)
        conn = self.conn
        if conn is not None:
            self.conn = None
            broker.by_conn.pop(conn, None)
            broker.router.disconnect(conn, time.time())
            broker.schedule_flush()
            logs.disconnected(self.name, self._component(conn), self.reason or "closed",
                              peer_fault=self.peer_fault)

    def _ending(self, reason: str, *, peer_fault: bool) -> None:
        """Note why the connection ends (the first reason given wins)."""
        if not self.reason:
            self.reason = reason
            self.peer_fault = peer_fault

    @staticmethod
    def _component(conn: Connection) -> str | None:
        return conn.twin.name if conn.twin.named else None


class Broker:
    """A running broker; use :meth:`start` and :meth:`stop` (or ``async with``)."""

    def __init__(self, config: BrokerConfig | None = None, store: Store | None = None,
                 security: Security | None = None) -> None:
        """``store`` keeps twins and messages (default: in memory); ``security`` keeps keys,
        tenants, admins and private topics (e.g.
        :class:`rembus.security.file_security.FileSecurity`;
        default: in memory, empty: nothing registered, no tenant, no admin)."""
        self.config = config or BrokerConfig()
        self.store: Store = store if store is not None else MemoryStore()
        self.ws_config = WSConfig(max_message_size=self.config.max_message_size)
        router_config = self.config.router
        if router_config.limits.max_message_size != self.config.max_message_size:
            from dataclasses import replace

            router_config = replace(router_config, limits=replace(
                router_config.limits, max_message_size=self.config.max_message_size))
        self.router = Router(self.store, router_config, now=time.time(), security=security,
                             verify=verify_signature)
        self.peers: set[_Peer] = set()
        self.by_conn: dict[Connection, _Peer] = {}
        self.started = time.time()
        self._server: asyncio.Server | None = None
        self._flush_scheduled = False
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested = asyncio.Event()
        """Set when an admin sent ``shutdown``; whoever runs the broker then stops it."""

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
        self._ticker = self._loop.call_later(self.config.tick, self._tick)
        log.debug("broker %s listening on %s", self.config.router.name, self.url)

    async def stop(self) -> None:
        """Close every connection, save every twin and commit the store."""
        if self._server is None:
            return
        self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        for peer in list(self.peers):
            peer.close(CLOSE_GOING_AWAY, "broker shutting down")
        self.router.shutdown(time.time())
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

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers."""
        return {
            "status": "ok",
            "name": self.config.router.name,
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            "connections": len(self.router.connections),
        }

    # -- the turn ----------------------------------------------------------

    def schedule_flush(self) -> None:
        """Write pending output at the end of this event-loop turn (once per turn)."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        router = self.router
        self.store.commit()
        by_conn = self.by_conn
        max_backlog = self.config.max_backlog
        drained: list[Connection] = []
        for conn, frames in router.pull():
            peer = by_conn.get(conn)
            if peer is None or not peer.ws.is_open:
                continue
            peer.send(frames)
            transport = peer.transport
            if transport is not None and transport.get_write_buffer_size() > max_backlog:
                peer._fail(1008, "slow consumer: too much data waiting to be sent")
            elif conn.waiting_drain and not peer.paused:
                drained.append(conn)
        router.flush()
        for close in router.take_closes():
            self._close(close)
        if router.shutdown_requested and not self.stop_requested.is_set():
            log.info("shutdown requested by an admin")
            self.stop_requested.set()
        if drained:
            now = time.time()
            for conn in drained:
                router.drained(conn, now)
            self.schedule_flush()

    def _close(self, close: Close) -> None:
        peer = self.by_conn.get(close.conn)
        if peer is not None:
            peer.close(close.code, close.reason)

    def _tick(self) -> None:
        self._ticker = self.loop.call_later(self.config.tick, self._tick)
        try:
            self.router.handle_timer(time.time())
        finally:
            self.schedule_flush()
