"""The broker's brain: twins, interests, exposers, QoS per hop, offline replay.

:class:`Router` is a sans-IO state machine. The driver calls
:meth:`Router.connect`, :meth:`Router.receive` (one whole message),
:meth:`Router.disconnect`, :meth:`Router.handle_timer` and
:meth:`Router.drained`, and after each batch of input it pulls the bytes to
write with :meth:`Router.pull` and the connections to close with
:meth:`Router.take_closes`. Persistence goes through the :class:`Store` port;
keys, tenants, admins and private topics through the
:class:`~rembus_proto.security.Security` port, whose rules live in
:mod:`rembus_proto.auth`.

One turn of a driver, so that messages are durable before a QoS ACK leaves
and a delivery mark only moves once its message was handed to the socket::

    router.receive(...)            # for every input of this turn
    store.commit()
    for conn, frames in router.pull():   # marks advance here
        write(conn, frames)
    router.flush()                 # stage twin updates for the next commit
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from . import cbor
from .auth import BROKER_COMMANDS, SECURITY_COMMANDS, TOPIC_COMMANDS, UNAUTHORIZED, Guard
from .cbor import byte_string, head, text
from .constants import (
    CONFIG_TOPIC,
    DEFAULT_MAX_DEPTH,
    QOS2,
    QOS_MASK,
    Status,
)
from .entropy import RandomPool
from .messages import (
    DEFAULT_LIMITS,
    Ack,
    Ack2,
    Admin,
    DecodeLimits,
    Identity,
    Pub,
    Response,
    Rpc,
    decode,
    split_qos0_pub,
)
from .security import MemorySecurity, Security, Verify
from .store import Store, StoredMessage, TwinRecord
from .topics import compile_pattern, is_pattern, normalize_name, pattern_payload, tenant

Policy = Literal["first_up", "round_robin", "less_busy"]
POLICIES: tuple[Policy, ...] = ("first_up", "round_robin", "less_busy")

#: WebSocket close code used when a newer connection takes over a name.
CLOSE_OVERWRITTEN = 4000
#: WebSocket close code for a consumer that cannot keep up (policy violation).
CLOSE_SLOW_CONSUMER = 1008


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Broker behaviour; every limit is explicit."""

    name: str = "broker"
    version: str = "0"
    policy: Policy = "first_up"
    overwrite_connection: bool = False
    authenticated: bool = False
    """Every connection must log in with a registered key (spec 5.4)."""
    challenge_timeout: float = 3.0
    """Seconds to answer a challenge; in authenticated mode, to log in at all."""
    pin_attempts: int = 5
    """Wrong PINs in a row for one tenant before its registrations are locked."""
    pin_lockout: float = 60.0
    """Seconds a tenant stays locked; doubled by every wrong PIN after that, up to an hour."""
    limits: DecodeLimits = DEFAULT_LIMITS
    ack_timeout: float = 2.0
    """Seconds before a QoS1/2 delivery is sent again."""
    send_retries: int = 10
    max_inflight: int = 1_000
    """QoS1/2 deliveries awaiting ACK per subscriber; beyond it the subscriber is too slow."""
    max_queued: int = 100_000
    """Messages queued for one connection between two pulls; beyond it, it is too slow."""
    replay_batch: int = 500
    """Stored messages sent to a returning subscriber before waiting for its socket to drain."""
    call_timeout: float = 120.0
    """Seconds after which a forwarded RPC nobody answered is forgotten."""
    max_pending_calls: int = 10_000
    """RPCs in flight per requesting connection."""
    legacy_max_message: int = 1 << 20
    """Largest message sent to a 0.1.x peer (16-byte ids): its WebSocket client closes
    the connection on anything larger, so larger ones are never sent to it."""
    qos2_dedup_size: int = 100_000
    retention_max_age: float = 7 * 86_400.0
    retention_max_per_topic: int = 100_000
    prune_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Close:
    """The driver must close ``conn`` (after flushing its pending output)."""

    conn: Connection
    code: int
    reason: str


class _Call:
    """An RPC forwarded to an exposer, waiting for its RESPONSE."""

    __slots__ = ("deadline", "orig_id", "requester", "topic")

    def __init__(self, requester: Connection, orig_id: bytes, topic: str, deadline: float) -> None:
        self.requester = requester
        self.orig_id = orig_id
        self.topic = topic
        self.deadline = deadline


class _Inflight:
    """A QoS1/2 delivery to a subscriber, waiting for its ACK."""

    __slots__ = ("deadline", "frame", "qos2", "retries", "seq")

    def __init__(self, frame: bytes, seq: int, qos2: bool, deadline: float, retries: int) -> None:
        self.frame = frame
        self.seq = seq
        self.qos2 = qos2
        self.deadline = deadline
        self.retries = retries


class Twin:
    """The broker-side state of one component (persistent when named)."""

    __slots__ = (
        "conn",
        "dirty",
        "done_above",
        "exposed",
        "inflight",
        "mark",
        "name",
        "named",
        "qos2_seen",
        "reactive",
        "replay_cursor",
        "replaying",
        "since",
        "subs",
        "tenant",
    )

    def __init__(self, name: str, named: bool, record: TwinRecord | None = None) -> None:
        self.name = name
        self.named = named
        self.tenant = tenant(name)
        self.conn: Connection | None = None
        self.reactive = False
        self.subs: dict[str, float] = dict(record.subscriptions) if record else {}
        self.exposed: list[str] = list(record.exposed) if record else []
        self.mark = record.mark if record else 0
        self.done_above: set[int] = set(record.done_above) if record else set()
        self.since: dict[str, int] = dict(record.since) if record else {}
        self.inflight: dict[bytes, _Inflight] = {}
        self.qos2_seen: OrderedDict[bytes, None] = OrderedDict()
        self.replaying = False
        self.replay_cursor = 0
        self.dirty = False

    def record(self) -> TwinRecord:
        """The persistent part."""
        return TwinRecord(self.name, dict(self.subs), list(self.exposed), self.mark,
                          sorted(self.done_above), dict(self.since))

    def retroactive_topics(self) -> dict[str, float]:
        """Subscriptions that want stored messages: topic -> ``msg_from``."""
        return {topic: window for topic, window in self.subs.items() if window > 0}

    def complete(self, seq: int) -> None:
        """A delivery of archive entry ``seq`` is done (written or acknowledged)."""
        if seq <= self.mark:
            return
        lowest_open = min((i.seq for i in self.inflight.values() if i.seq > 0),
                          default=None)
        if lowest_open is None or seq < lowest_open:
            self.mark = seq
            if self.done_above:
                limit = lowest_open if lowest_open is not None else math.inf
                below = [s for s in self.done_above if s < limit]
                if below:
                    self.mark = max(self.mark, *below)
                    self.done_above.difference_update(below)
        else:
            self.done_above.add(seq)
        self.dirty = True

    def __repr__(self) -> str:
        return f"Twin({self.name!r})"


class Connection:
    """One transport connection as the router sees it."""

    __slots__ = ("calls", "calls_made", "closed", "id_len", "out", "peer", "twin",
                 "waiting_drain", "written")

    def __init__(self, twin: Twin, peer: str) -> None:
        self.twin = twin
        self.peer = peer
        self.out: list[bytes] = []
        self.written: list[int] = []
        self.calls: dict[bytes, _Call] = {}
        self.calls_made = 0
        self.id_len = 0
        self.closed = False
        self.waiting_drain = False

    @property
    def legacy(self) -> bool:
        """A 0.1.x peer (16-byte ids): gets plain QoS0 PUBs and null login data."""
        return self.id_len == 16

    def __repr__(self) -> str:
        return f"Connection({self.twin.name!r}, {self.peer!r})"


class Router:
    """Routes messages between connections; see the module docstring for the driver loop."""

    def __init__(self, store: Store, config: RouterConfig | None = None, *,
                 id_factory: Callable[[int], bytes] | None = None, now: float = 0.0,
                 security: Security | None = None, verify: Verify | None = None) -> None:
        self.config = config or RouterConfig()
        if self.config.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.config.policy!r}: use one of {POLICIES}")
        self.store = store
        if id_factory is None:
            id_factory = RandomPool()
        self._id_factory = id_factory
        self._started = now
        self._now = now
        last_seq, records = store.load()
        self._seq = last_seq
        self.twins: dict[str, Twin] = {}
        self._subs: dict[str, dict[Twin, None]] = {}
        self._patterns: dict[str, tuple[Any, dict[Twin, None]]] = {}
        self._retro: dict[str, int] = {}
        self._retro_patterns: dict[str, int] = {}
        self._exposers: dict[str, list[Twin]] = {}
        self._rr: dict[str, int] = {}
        self.connections: set[Connection] = set()
        self._dirty: dict[Connection, None] = {}
        self._closes: list[Close] = []
        self.shutdown_requested = False
        """An admin sent ``shutdown``: the driver should stop the broker."""
        self._call_counter = int.from_bytes(id_factory(4), "little") << 32
        self._next_prune = now + self.config.prune_interval
        self.guard = Guard(self, security if security is not None else MemorySecurity(), verify,
                           id_factory)
        self._gate = self.guard.gate
        self._private = self.guard.private
        for record in records:
            twin = Twin(record.name, True, record)
            self.twins[twin.name] = twin
            self._index(twin)
        self._builtins: dict[str, Callable[[], Any]] = {
            "rid": lambda: self.config.name,
            "version": lambda: self.config.version,
            "uptime": lambda: f"up for {int(self._now - self._started)} seconds",
        }

    # -- connections -------------------------------------------------------

    def connect(self, now: float, peer: str = "") -> Connection:
        """A transport connection was accepted; returns its handle."""
        self._now = now
        name = str(uuid.UUID(bytes=self._id_factory(16), version=4))
        conn = Connection(Twin(name, False), peer)
        conn.twin.conn = conn
        self.connections.add(conn)
        self.guard.on_connect(conn, now)
        return conn

    def disconnect(self, conn: Connection, now: float) -> None:
        """The transport connection is gone (closed by either side or lost)."""
        if conn.closed:
            return
        self._now = now
        conn.closed = True
        self.connections.discard(conn)
        self._dirty.pop(conn, None)
        self.guard.forget(conn)
        for call in conn.calls.values():
            self._reply(call.requester, call.orig_id, Status.METHOD_UNAVAILABLE,
                        f"{call.topic}: exposer {conn.twin.name} disconnected")
            call.requester.calls_made -= 1
        conn.calls.clear()
        twin = conn.twin
        if twin.conn is not conn:
            return
        twin.conn = None
        twin.reactive = False
        twin.replaying = False
        twin.inflight.clear()
        if twin.named:
            self._save(twin)
        else:
            self._unindex(twin)

    def drained(self, conn: Connection, now: float) -> None:
        """The connection's socket buffer has room again: continue a replay."""
        self._now = now
        conn.waiting_drain = False
        twin = conn.twin
        if twin.replaying and twin.conn is conn:
            self._replay(twin)

    # -- output ------------------------------------------------------------

    def pull(self) -> Iterator[tuple[Connection, list[bytes]]]:
        """Frames to write, per connection; delivery marks advance as they are taken."""
        dirty = self._dirty
        self._dirty = {}
        for conn in dirty:
            frames = conn.out
            if not frames:
                continue
            conn.out = []
            if conn.written:
                twin = conn.twin
                for seq in conn.written:
                    twin.complete(seq)
                conn.written = []
            yield conn, frames

    def take_closes(self) -> list[Close]:
        """Connections the router wants closed (overwritten names, slow consumers...)."""
        closes, self._closes = self._closes, []
        return closes

    def flush(self) -> None:
        """Stage the updates of twins whose state changed (delivery marks)."""
        for twin in self.twins.values():
            if twin.dirty:
                self._save(twin)

    def shutdown(self, now: float) -> None:
        """Save every twin; call before the last commit of the store."""
        self._now = now
        for conn in list(self.connections):
            self.disconnect(conn, now)
        self.flush()

    @property
    def now(self) -> float:
        """The last time given to the router."""
        return self._now

    # -- timers ------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next."""
        deadline = self._next_prune
        for conn in self.connections:
            for inflight in conn.twin.inflight.values():
                deadline = min(deadline, inflight.deadline)
            for call in conn.calls.values():
                deadline = min(deadline, call.deadline)
        challenge = self.guard.next_deadline()
        return deadline if challenge is None else min(deadline, challenge)

    def handle_timer(self, now: float) -> None:
        """Resend unacknowledged QoS deliveries, forget stale calls, prune the archive."""
        self._now = now
        cfg = self.config
        for conn in list(self.connections):
            twin = conn.twin
            for msg_id, inflight in list(twin.inflight.items()):
                if inflight.deadline > now:
                    continue
                if inflight.retries <= 0:
                    del twin.inflight[msg_id]  # stays in the archive for a later replay
                    continue
                inflight.retries -= 1
                inflight.deadline = now + cfg.ack_timeout
                self._send(conn, inflight.frame)
            for call_id, call in list(conn.calls.items()):
                if call.deadline <= now:
                    del conn.calls[call_id]
                    call.requester.calls_made -= 1
        self.guard.handle_timer(now)
        if now >= self._next_prune:
            self._next_prune = now + cfg.prune_interval
            self.store.prune(int((now - cfg.retention_max_age) * 1e9), cfg.retention_max_per_topic)

    # -- input -------------------------------------------------------------

    def receive(self, conn: Connection, frame: bytes, now: float) -> None:
        """Process one message from ``conn``; raises :class:`ProtocolError` if malformed."""
        self.receive_many(conn, [frame], now)

    def _dispatch(self, conn: Connection, frame: bytes, gated: bool) -> None:
        """Decode a message and hand it to its handler."""
        message = decode(frame, self.config.limits)
        if gated and not self.guard.admit(conn, message):
            return
        if isinstance(message, Pub):  # its payload is the tail of the frame
            self._on_pub(conn, message.topic, message.flags, message.id, frame,
                         len(frame) - len(message.data.raw))
        elif isinstance(message, Rpc):
            self._on_rpc(conn, message)
        elif isinstance(message, Response):
            self._on_response(conn, message)
        elif isinstance(message, Ack):
            self._on_ack(conn, message.id)
        elif isinstance(message, Ack2):
            conn.twin.qos2_seen.pop(message.id, None)
        elif isinstance(message, Admin):
            self._on_admin(conn, message)
        elif isinstance(message, Identity):
            self._on_identity(conn, message)
        else:
            self._learn_generation(conn, message.id)
            self.guard.receive(conn, message, self._now)

    # -- publish -----------------------------------------------------------

    def receive_many(self, conn: Connection, frames: list[bytes], now: float) -> None:
        """Process messages of ``conn`` in order, as :meth:`receive` does one by one.

        What a driver read at once. Plain publications take the hot path:
        nothing is decoded but their topic.
        """
        self._now = now
        limit = self.config.limits.max_message_size
        gate = self._gate
        on_pub = self._on_pub
        for frame in frames:
            if conn.closed:
                return
            gated = bool(gate) and conn in gate  # an attestation may open the gate
            if not gated:
                quick = split_qos0_pub(frame)
                if quick is not None and len(frame) <= limit:
                    on_pub(conn, quick[0], 0, None, frame, quick[1])
                    continue
            self._dispatch(conn, frame, gated)  # decode() applies the size limit

    def _on_pub(self, conn: Connection, topic: str, flags: int, msg_id: bytes | None,
                frame: bytes, offset: int) -> None:
        """Route a publication; its payload is ``frame[offset:]``, sliced only if needed."""
        publisher = conn.twin
        acl = self._private.get(topic) if self._private else None
        if acl is not None and not self.guard.allowed(conn, acl):
            return  # private topic: dropped silently (spec 7.1)
        qos = flags & QOS_MASK
        if msg_id is not None:
            self._learn_generation(conn, msg_id)
            if qos == QOS2:
                seen = publisher.qos2_seen
                if msg_id in seen:
                    self._send(conn, b"\x82\x05" + byte_string(msg_id))
                    return
                seen[msg_id] = None
                if len(seen) > self.config.qos2_dedup_size:
                    seen.popitem(last=False)
        seq = 0
        if self._retro and (topic in self._retro or self._matches_retro_pattern(topic)):
            self._seq += 1
            seq = self._seq
            self.store.append(StoredMessage(seq, int(self._now * 1e9), topic, flags, msg_id,
                                            frame[offset:], publisher.name))
        if qos and msg_id is not None:
            self._send(conn, b"\x82\x05" + byte_string(msg_id))
        subscribers: Collection[Twin] | None = self._subs.get(topic)
        if subscribers and acl is not None:
            subscribers = self.guard.only_allowed(subscribers, acl)
        if subscribers:
            tenant = publisher.tenant
            legacy_frame: bytes | None = None
            dirty = self._dirty
            max_queued = self.config.max_queued
            for twin in subscribers:
                sub_conn = twin.conn
                if (sub_conn is None or twin is publisher or not twin.reactive
                        or twin.tenant != tenant):
                    continue
                if seq and twin.replaying:
                    continue  # the replay reaches it, in order
                if sub_conn.id_len == 16:
                    if legacy_frame is None:
                        legacy_frame = b"\x83\x01" + text(topic) + frame[offset:]
                    self._deliver(twin, sub_conn, legacy_frame, 0, seq, None)
                elif qos or (seq and twin.named) or sub_conn.closed:
                    self._deliver(twin, sub_conn, frame, qos, seq, msg_id)
                else:  # plain QoS0 delivery, inlined: the most frequent case by far
                    out = sub_conn.out
                    out.append(frame)
                    if len(out) == 1:
                        dirty[sub_conn] = None
                    elif len(out) == max_queued + 1:
                        self._close(sub_conn, CLOSE_SLOW_CONSUMER, "too many queued messages")
        if self._patterns:
            self._deliver_patterns(publisher, topic, frame[offset:], seq, acl)

    def _matches_retro_pattern(self, topic: str) -> bool:
        patterns = self._patterns
        return any(patterns[pattern][0].fullmatch(topic) for pattern in self._retro_patterns)

    def _deliver_patterns(self, publisher: Twin, topic: str, payload: bytes, seq: int,
                          acl: set[str] | None = None) -> None:
        for pattern, (regex, twins) in self._patterns.items():
            if not regex.fullmatch(topic):
                continue
            frame = b"\x83\x01" + text(pattern) + pattern_payload(topic, payload)
            for twin in twins:
                conn = twin.conn
                if (conn is None or twin is publisher or not twin.reactive
                        or twin.tenant != publisher.tenant or (twin.replaying and seq)
                        or (acl is not None and not self.guard.allowed(conn, acl))):
                    continue
                self._deliver(twin, conn, frame, 0, seq, None)

    def _deliver(self, twin: Twin, conn: Connection, frame: bytes, qos: int, seq: int,
                 msg_id: bytes | None) -> None:
        if conn.legacy and len(frame) > self.config.legacy_max_message:
            return  # the peer would drop its connection: it only misses this message
        if qos and msg_id is not None:
            if len(twin.inflight) >= self.config.max_inflight:
                self._close(conn, CLOSE_SLOW_CONSUMER, "too many unacknowledged messages")
                return
            twin.inflight[msg_id] = _Inflight(frame, seq if twin.named else 0, qos == QOS2,
                                              self._now + self.config.ack_timeout,
                                              self.config.send_retries)
        elif seq and twin.named:
            conn.written.append(seq)
        self._send(conn, frame)

    def _on_ack(self, conn: Connection, msg_id: bytes) -> None:
        twin = conn.twin
        inflight = twin.inflight.pop(msg_id, None)
        if inflight is None:
            return
        if inflight.qos2:
            self._send(conn, b"\x82\x06" + byte_string(msg_id))
        if inflight.seq:
            twin.complete(inflight.seq)
        if twin.replaying and not conn.waiting_drain:
            self._replay(twin)

    # -- replay of stored messages ------------------------------------------

    def _start_replay(self, twin: Twin) -> None:
        if not twin.named or twin.conn is None or not twin.retroactive_topics():
            return
        twin.replaying = True
        twin.replay_cursor = twin.mark
        self._replay(twin)

    def _replay(self, twin: Twin) -> None:
        conn = twin.conn
        assert conn is not None
        retro = twin.retroactive_topics()
        exact = None if any(is_pattern(t) for t in retro) else set(retro)
        now_ns = int(self._now * 1e9)
        budget = self.config.replay_batch
        window = self.config.max_inflight // 2
        while budget > 0:
            batch = self.store.replay(twin.replay_cursor, exact, budget)
            for stored in batch:
                if len(twin.inflight) >= window:
                    return  # resumes as ACKs come back
                twin.replay_cursor = stored.seq
                budget -= 1
                if stored.seq <= twin.mark or stored.seq in twin.done_above:
                    continue
                if self._wants(twin, retro, stored, now_ns):
                    self._send_stored(twin, conn, stored)
            if budget > 0:
                twin.replaying = False  # caught up: live delivery from now on
                return
        conn.waiting_drain = True

    def _wants(self, twin: Twin, retro: dict[str, float], stored: StoredMessage,
               now_ns: int) -> bool:
        if tenant(stored.publisher) != twin.tenant or stored.publisher == twin.name:
            return False
        if self._private and twin.conn is not None and not self.guard.permits(twin.conn,
                                                                             stored.topic):
            return False
        topic = stored.topic
        if topic not in retro:
            topic = next((p for p in retro if is_pattern(p)
                          and self._patterns[p][0].fullmatch(stored.topic)), "")
            if not topic:
                return False
        if stored.seq <= twin.since.get(topic, 0):
            return False  # published before this subscription was made
        window = retro[topic]
        return window == math.inf or stored.recv_ns > now_ns - window

    def _send_stored(self, twin: Twin, conn: Connection, stored: StoredMessage) -> None:
        topic = stored.topic
        if stored.topic in twin.subs or conn.legacy:
            pass
        else:  # reached through a pattern subscription
            pattern = next(p for p in twin.subs if is_pattern(p)
                           and self._patterns[p][0].fullmatch(topic))
            frame = b"\x83\x01" + text(pattern) + pattern_payload(topic, stored.payload)
            self._deliver(twin, conn, frame, 0, stored.seq, None)
            return
        qos = stored.flags & QOS_MASK
        if conn.legacy or stored.msg_id is None:
            self._deliver(twin, conn, b"\x83\x01" + text(topic) + stored.payload, 0, stored.seq,
                          None)
            return
        frame = b"".join((b"\x84", head(0, 1 | stored.flags), byte_string(stored.msg_id),
                          text(topic), stored.payload))
        self._deliver(twin, conn, frame, qos, stored.seq, stored.msg_id)

    # -- RPC ---------------------------------------------------------------

    def _on_rpc(self, conn: Connection, msg: Rpc) -> None:
        self._learn_generation(conn, msg.id)
        requester = conn.twin
        topic = msg.topic
        acl = self._private.get(topic) if self._private else None
        if acl is not None and not self.guard.allowed(conn, acl):
            self._reply(conn, msg.id, Status.GENERIC_ERROR, UNAUTHORIZED)
            return
        if msg.target is not None:
            target = self.twins.get(normalize_name(msg.target))
            if target is None:
                self._reply(conn, msg.id, Status.TARGET_NOT_FOUND, msg.target)
            elif target is requester:
                self._reply(conn, msg.id, Status.METHOD_LOOPBACK, f"{topic}: method loopback")
            elif target.conn is None:
                self._reply(conn, msg.id, Status.TARGET_DOWN, msg.target)
            else:
                self._forward(conn, msg, target.conn)
            return
        builtin = self._builtins.get(topic)
        if builtin is not None:
            self._reply(conn, msg.id, Status.OK, builtin())
            return
        exposers = self._exposers.get(topic)
        if not exposers:
            self._reply(conn, msg.id, Status.METHOD_NOT_FOUND, f"{topic}: method unknown")
            return
        if acl is not None:
            exposers = self.guard.only_allowed(exposers, acl)
        chosen = self._select(topic, exposers, requester) if exposers else None
        if chosen is None:
            if exposers and all(t is requester for t in exposers):
                self._reply(conn, msg.id, Status.METHOD_LOOPBACK, f"{topic}: method loopback")
            else:
                self._reply(conn, msg.id, Status.METHOD_UNAVAILABLE,
                            f"{topic}: method unavailable")
            return
        assert chosen.conn is not None
        self._forward(conn, msg, chosen.conn)

    def _select(self, topic: str, exposers: list[Twin], requester: Twin) -> Twin | None:
        policy = self.config.policy
        candidates = [t for t in exposers if t is not requester and t.conn is not None
                      and t.tenant == requester.tenant]
        if not candidates:
            return None
        if policy == "first_up":
            return candidates[0]
        if policy == "less_busy":
            return min(candidates, key=lambda t: len(t.conn.calls))  # type: ignore[union-attr]
        index = self._rr.get(topic, 0) % len(candidates)
        self._rr[topic] = index + 1
        return candidates[index]

    def _forward(self, conn: Connection, msg: Rpc, exposer: Connection) -> None:
        if conn.calls_made >= self.config.max_pending_calls:
            self._reply(conn, msg.id, Status.GENERIC_ERROR, "too many requests in flight")
            return
        self._call_counter += 1
        size = 16 if exposer.legacy else 8
        new_id = (self._call_counter & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        frame = b"".join((b"\x85\x02", byte_string(new_id), text(msg.topic), cbor.NULL,
                          msg.data.raw))
        if exposer.legacy and len(frame) > self.config.legacy_max_message:
            self._reply(conn, msg.id, Status.GENERIC_ERROR,
                        f"{msg.topic}: request too large for {exposer.twin.name} (0.1.x)")
            return
        exposer.calls[new_id] = _Call(conn, msg.id, msg.topic, self._now + self.config.call_timeout)
        conn.calls_made += 1
        self._send(exposer, frame)

    def _on_response(self, conn: Connection, msg: Response) -> None:
        call = conn.calls.pop(msg.id, None)
        if call is None:
            return  # e.g. an answer to nothing we asked, or a call already forgotten
        requester = call.requester
        requester.calls_made -= 1
        if requester.closed:
            return
        frame = b"".join((b"\x84\x04", byte_string(call.orig_id), head(0, msg.status),
                          msg.data.raw))
        if requester.legacy and len(frame) > self.config.legacy_max_message:
            self._reply(requester, call.orig_id, Status.GENERIC_ERROR,
                        f"{call.topic}: response too large for a 0.1.x component")
            return
        self._send(requester, frame)

    # -- admin -------------------------------------------------------------

    def _on_admin(self, conn: Connection, msg: Admin) -> None:
        self._learn_generation(conn, msg.id)
        command = msg.command
        cmd = msg.cmd
        if cmd is None:
            self._reply(conn, msg.id, Status.GENERIC_ERROR, None)
            return
        twin = conn.twin
        topic = msg.topic
        assert isinstance(command, dict)
        if cmd in SECURITY_COMMANDS:
            self.guard.admin_command(conn, msg)
            return
        if cmd in BROKER_COMMANDS:
            self._broker_command(conn, msg.id, cmd)
            return
        if self._private and cmd in TOPIC_COMMANDS and not self.guard.permits(conn, topic):
            self._reply(conn, msg.id, Status.GENERIC_ERROR, UNAUTHORIZED)
            return
        if cmd in ("subscribe", "add_interest"):
            msg_from = _msg_from(command)
            if msg_from is None:
                self._reply(conn, msg.id, Status.GENERIC_ERROR,
                            "msg_from must be a non-negative number of nanoseconds")
                return
            self._subscribe(twin, topic, msg_from)
        elif cmd in ("unsubscribe", "remove_interest"):
            self._unsubscribe(twin, topic)
        elif cmd in ("expose", "add_impl"):
            self._expose(twin, topic)
        elif cmd in ("unexpose", "remove_impl"):
            self._unexpose(twin, topic)
        elif cmd == "reactive":
            self._set_reactive(twin, bool(command.get("status", False)))
        elif cmd == "setup":  # private topics the sender may not use are skipped
            permits = self.guard.permits
            for name in _topics(command.get("exposers")):
                if permits(conn, name):
                    self._expose(twin, name)
            for name in _topics(command.get("subscribers")):
                if name not in twin.subs and permits(conn, name):
                    self._subscribe(twin, name, 0.0)
            self._set_reactive(twin, True)
        else:
            self._reply(conn, msg.id, Status.UNKNOWN_ADMIN_CMD, None)
            return
        self._reply(conn, msg.id, Status.OK, None)

    def _broker_command(self, conn: Connection, msg_id: bytes, cmd: str) -> None:
        """broker_config, load_config, save_config and shutdown: for admins only."""
        if not self.guard.is_admin(conn):
            self._reply(conn, msg_id, Status.GENERIC_ERROR, UNAUTHORIZED)
            return
        value: Any = None
        if cmd == "broker_config":
            subscribers = {topic: _names(twins) for topic, twins in self._subs.items()}
            for pattern, (_, twins) in self._patterns.items():
                subscribers[pattern] = _names(twins)
            value = {"exposers": {topic: _names(twins) for topic, twins in self._exposers.items()},
                     "subscribers": subscribers}
        elif cmd == "load_config":
            self.guard.reload()
        elif cmd == "shutdown":
            self.shutdown_requested = True
        # save_config: keys, tenants, admins and private topics are saved when they change
        self._reply(conn, msg_id, Status.OK, value)

    def _subscribe(self, twin: Twin, topic: str, msg_from: float) -> None:
        if topic in twin.subs:
            self._unindex_sub(twin, topic)
        else:
            twin.since[topic] = self._seq
        twin.subs[topic] = msg_from
        self._index_sub(twin, topic)
        self._changed(twin)
        if twin.reactive and twin.named and msg_from > 0 and not twin.replaying:
            self._start_replay(twin)

    def _unsubscribe(self, twin: Twin, topic: str) -> None:
        if topic in twin.subs:
            self._unindex_sub(twin, topic)
            del twin.subs[topic]
            twin.since.pop(topic, None)
            self._changed(twin)

    def _expose(self, twin: Twin, topic: str) -> None:
        if topic not in twin.exposed:
            twin.exposed.append(topic)
            self._exposers.setdefault(topic, []).append(twin)
            self._changed(twin)

    def _unexpose(self, twin: Twin, topic: str) -> None:
        if topic in twin.exposed:
            twin.exposed.remove(topic)
            exposers = self._exposers[topic]
            exposers.remove(twin)
            if not exposers:
                del self._exposers[topic]
            self._changed(twin)

    def _set_reactive(self, twin: Twin, on: bool) -> None:
        if on == twin.reactive:
            return
        twin.reactive = on
        if on:
            self._start_replay(twin)
        else:
            twin.replaying = False

    # -- identity ----------------------------------------------------------

    def _on_identity(self, conn: Connection, msg: Identity) -> None:
        self._learn_generation(conn, msg.id)
        name = normalize_name(msg.cid)
        if not name:
            self._reply(conn, msg.id, Status.GENERIC_ERROR, "empty cid")
            return
        if conn.twin.named:
            self._reply(conn, msg.id, Status.GENERIC_ERROR, "already identified")
            return
        twin = self.twins.get(name)
        if (twin is not None and twin.conn is not None
                and not self.config.overwrite_connection):
            self._reply(conn, msg.id, Status.GENERIC_ERROR, "already connected")
            return
        if self.guard.challenge(conn, msg.id, name, self._now):
            return  # a registered name: bound after a valid ATTESTATION
        self._bind(conn, msg.id, name)

    def _bind(self, conn: Connection, msg_id: bytes, name: str) -> bool:
        """Give the connection the twin of ``name`` and answer ``msg_id`` (OK or 10)."""
        twin = self.twins.get(name)
        if twin is not None and twin.conn is not None:
            if not self.config.overwrite_connection:
                self._reply(conn, msg_id, Status.GENERIC_ERROR, "already connected")
                return False
            old = twin.conn
            self.disconnect(old, self._now)
            self._close(old, CLOSE_OVERWRITTEN, "overwritten")
        anonymous = conn.twin
        self._unindex(anonymous)
        if twin is None:
            twin = Twin(name, True)
            twin.mark = self._seq  # retroactive means "what is published while I am away"
            self.twins[name] = twin
            self._save(twin)
        twin.conn = conn
        twin.reactive = False
        conn.twin = twin
        self._reply(conn, msg_id, Status.OK, None)
        return True

    # -- helpers -----------------------------------------------------------

    def _learn_generation(self, conn: Connection, msg_id: bytes) -> None:
        if not conn.id_len:
            conn.id_len = len(msg_id)

    def _reply(self, conn: Connection, msg_id: bytes, status: int, value: Any) -> None:
        data = cbor.NULL if value is None else cbor.dumps(value)
        self._send(conn, b"".join((b"\x84\x04", byte_string(msg_id), head(0, int(status)), data)))

    def _send(self, conn: Connection, frame: bytes) -> None:
        if conn.closed:
            return
        out = conn.out
        out.append(frame)
        if len(out) == 1:
            self._dirty[conn] = None
        elif len(out) == self.config.max_queued + 1:
            self._close(conn, CLOSE_SLOW_CONSUMER, "too many queued messages")

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        self._closes.append(Close(conn, code, reason))

    def _changed(self, twin: Twin) -> None:
        if twin.named:
            twin.dirty = True

    def _save(self, twin: Twin) -> None:
        twin.dirty = False
        self.store.save_twin(twin.record())

    def _index(self, twin: Twin) -> None:
        for topic in twin.subs:
            self._index_sub(twin, topic)
        for topic in twin.exposed:
            self._exposers.setdefault(topic, []).append(twin)

    def _unindex(self, twin: Twin) -> None:
        for topic in list(twin.subs):
            self._unindex_sub(twin, topic)
        for topic in twin.exposed:
            exposers = self._exposers.get(topic)
            if exposers and twin in exposers:
                exposers.remove(twin)
                if not exposers:
                    del self._exposers[topic]

    def _index_sub(self, twin: Twin, topic: str) -> None:
        retro = twin.named and twin.subs[topic] > 0
        if is_pattern(topic):
            entry = self._patterns.get(topic)
            if entry is None:
                entry = self._patterns[topic] = (compile_pattern(topic), {})
            entry[1][twin] = None
            if retro:
                self._retro_patterns[topic] = self._retro_patterns.get(topic, 0) + 1
        else:
            self._subs.setdefault(topic, {})[twin] = None
            if retro:
                self._retro[topic] = self._retro.get(topic, 0) + 1

    def _unindex_sub(self, twin: Twin, topic: str) -> None:
        retro = twin.named and twin.subs[topic] > 0
        if is_pattern(topic):
            entry = self._patterns.get(topic)
            if entry is not None:
                entry[1].pop(twin, None)
                if not entry[1]:
                    del self._patterns[topic]
            counts = self._retro_patterns
        else:
            twins = self._subs.get(topic)
            if twins is not None:
                twins.pop(twin, None)
                if not twins:
                    del self._subs[topic]
            counts = self._retro
        if retro:
            left = counts.get(topic, 0) - 1
            if left > 0:
                counts[topic] = left
            else:
                counts.pop(topic, None)


def _msg_from(command: dict[Any, Any]) -> float | None:
    """``msg_from`` of a subscribe command, or the 0.1.x ``retroactive`` flag."""
    if "msg_from" in command:
        value = command["msg_from"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        return None
    if command.get("retroactive") is True:
        return math.inf
    return 0.0


def _names(twins: Iterable[Twin]) -> list[str]:
    return sorted(twin.name for twin in twins)


def _topics(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


__all__ = [
    "CLOSE_OVERWRITTEN",
    "CLOSE_SLOW_CONSUMER",
    "CONFIG_TOPIC",
    "DEFAULT_MAX_DEPTH",
    "POLICIES",
    "Close",
    "Connection",
    "Policy",
    "Router",
    "RouterConfig",
    "Twin",
]
