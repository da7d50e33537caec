"""A tiny in-memory network around the sans-IO Router, for tests."""

from __future__ import annotations

import itertools
from typing import Any

import rembus_proto as rp
from rembus_proto.broker import (
    Close,
    Connection,
    NeedReplay,
    Order,
    Router,
    RouterConfig,
    ShutdownRequested,
    answer_requests,
)
from rembus_proto.store import MemoryStore, Store


class Peer:
    """A fake component: sends frames, collects what the router writes to it."""

    def __init__(self, net: Net, conn: Connection, id_len: int = 8) -> None:
        self.net = net
        self.conn = conn
        self.id_len = id_len
        self.inbox: list[bytes] = []

    def new_id(self) -> bytes:
        # unique across peers and restarts, as random ids are in practice
        return next(self.net.request_ids).to_bytes(self.id_len, "little")

    def send(self, message: rp.Message | bytes) -> None:
        frame = message if isinstance(message, bytes) else rp.encode(message)
        self.net.router.receive(self.conn, frame, self.net.now)
        self.net.pump()

    def request(self, message_factory: Any) -> rp.Response:
        msg_id = self.new_id()
        self.send(message_factory(msg_id))
        return self.response(msg_id)

    def response(self, msg_id: bytes) -> rp.Response:
        for frame in list(self.inbox):
            message = rp.decode(frame)
            if isinstance(message, rp.Response) and message.id == msg_id:
                self.inbox.remove(frame)
                return message
        raise AssertionError(f"no response for {msg_id.hex()} in {self.messages()}")

    def messages(self) -> list[rp.Message]:
        return [rp.decode(f) for f in self.inbox]

    def take(self) -> list[rp.Message]:
        out = self.messages()
        self.inbox.clear()
        return out

    def pubs(self) -> list[tuple[str, Any]]:
        """Publications received (and removed from the inbox), as (topic, args)."""
        out = []
        rest = []
        for frame in self.inbox:
            message = rp.decode(frame)
            if isinstance(message, rp.Pub):
                out.append((message.topic, message.data.args))
            else:
                rest.append(frame)
        self.inbox = rest
        return out

    def identify(self, name: str) -> rp.Response:
        return self.request(lambda i: rp.Identity(i, name))

    def admin(self, topic: str, command: dict[str, Any]) -> rp.Response:
        return self.request(lambda i: rp.Admin(i, topic, command))

    def subscribe(self, topic: str, msg_from: float = 0.0, reactive: bool = True) -> None:
        assert self.admin(topic, {"cmd": "subscribe", "msg_from": msg_from}).status == 0
        if reactive:
            self.reactive(True)

    def reactive(self, on: bool) -> None:
        assert self.admin("__config__", {"cmd": "reactive", "status": on}).status == 0

    def expose(self, topic: str) -> None:
        assert self.admin(topic, {"cmd": "expose"}).status == 0

    def publish(self, topic: str, *args: Any, qos: int = 0) -> bytes | None:
        if qos == 0:
            self.send(rp.Pub(topic, rp.Payload.of(list(args))))
            return None
        msg_id = self.new_id()
        self.send(rp.Pub(topic, rp.Payload.of(list(args)), msg_id, 0x10 if qos == 1 else 0x30))
        return msg_id

    def rpc(self, topic: str, *args: Any, target: str | None = None) -> bytes:
        msg_id = self.new_id()
        self.send(rp.Rpc(msg_id, topic, rp.Payload.of(list(args)), target))
        return msg_id

    def close(self) -> None:
        self.net.router.disconnect(self.conn, self.net.now)
        self.net.pump()


class Net:
    """Router + store + fake peers; ``pump`` runs one driver turn."""

    def __init__(self, config: RouterConfig | None = None, store: Store | None = None,
                 now: float = 1_000.0) -> None:
        self.store: Store = store if store is not None else MemoryStore()
        self.config = config or RouterConfig()
        self.now = now
        self._rand = itertools.count(1)
        self.request_ids = itertools.count(1)
        self.router = Router(self.store, self.config, id_factory=self._ids, now=now)
        self.peers: dict[Connection, Peer] = {}
        self.closes: list[Close] = []
        self.orders: list[Order | NeedReplay] = []
        """Every order the router gave (closes, shutdown), in order."""
        self.auto_drain = True
        self.replay_from_store = True
        """False: replay requests are not answered but given as orders (a cluster's)."""

    def _ids(self, size: int) -> bytes:
        return next(self._rand).to_bytes(size, "little")

    def connect(self, id_len: int = 8) -> Peer:
        peer = Peer(self, self.router.connect(self.now, "test"), id_len)
        self.peers[peer.conn] = peer
        return peer

    def named(self, name: str, id_len: int = 8) -> Peer:
        peer = self.connect(id_len)
        assert peer.identify(name).status == 0
        return peer

    def pump(self) -> None:
        for _ in range(1000):
            router = self.router
            orders = answer_requests(router, self.store, router.guard.security, self.now,
                                     replay=self.replay_from_store)
            router.flush()
            self.store.commit()
            pulled = router.data_to_send()
            for conn, frames in pulled:
                peer = self.peers.get(conn)
                if peer is not None:
                    peer.inbox.extend(frames)
            self.orders.extend(orders)
            for order in orders:
                if isinstance(order, Close):
                    self.closes.append(order)
                    router.disconnect(order.conn, self.now)
            if not self.auto_drain:
                return
            waiting = [c for c in self.router.connections if c.waiting_drain]
            if not pulled and not waiting:
                return
            for conn in waiting:
                self.router.drained(conn, self.now)
        raise AssertionError("the router never settled")

    @property
    def shutdown_requested(self) -> bool:
        """An admin asked the broker to stop."""
        return any(isinstance(order, ShutdownRequested) for order in self.orders)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.router.handle_timer(self.now)
        self.pump()

    def restart(self) -> None:
        """Stop the broker cleanly and start a new one on the same store."""
        self.router.shutdown(self.now)
        self.store.commit()
        self.peers.clear()
        self.router = Router(self.store, self.config, id_factory=self._ids, now=self.now)
