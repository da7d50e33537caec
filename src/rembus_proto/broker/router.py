"""The broker's facade: one object the driver feeds and drains.

Input: :meth:`Router.connect`, :meth:`Router.receive` / :meth:`Router.receive_many`
(whole messages), :meth:`Router.disconnect`, :meth:`Router.drained`,
:meth:`Router.handle_timer`, and the answers to data requests,
:meth:`Router.replay_batch` and :meth:`Router.key_found`. Output:
:meth:`Router.data_to_send` (frames per connection) and :meth:`Router.events`
(closes, shutdown, data requests, archive pruning). ``now`` is monotonic
seconds (timers); ``wall`` is wall-clock seconds since the epoch, used only
to stamp and age stored messages; it defaults to ``now`` for drivers that run
one clock (tests).

The router calls no blocking port while it handles input: it writes to the
store (staged until the driver commits) but reads stored messages and keys
only through :class:`~rembus_proto.broker.actions.NeedReplay` and
:class:`~rembus_proto.broker.actions.NeedKey`. One driver turn::

    router.receive_many(conn, frames, now, wall)   # for every input of this turn
    answer data requests from router.events()      # replay_batch / key_found; keep orders
    router.flush()                                 # stage twin updates (delivery marks)
    store.commit()                                 # durable before any ACK or ACK2 leaves
    for conn, frames in router.data_to_send():     # marks of written QoS0 advance here,
        write(conn, frames)                        # staged by the next turn's flush
    carry out the orders (Close, ShutdownRequested, PruneArchive)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..constants import QOS_MASK, Status
from ..entropy import RandomPool
from ..errors import MalformedMessage, ProtocolError
from ..messages import (
    Ack,
    Ack2,
    Admin,
    Identity,
    Pub,
    Response,
    Rpc,
    decode,
    split_ack,
    split_qos0_pub,
)
from ..payload import Payload
from ..security_port import MemorySecurity, PublicKey, Security, Verify
from ..store import Store, StoredMessage, TwinRecord
from ..topics import check_name, check_topic, normalize_name
from .actions import Event, NeedKey, NeedReplay, PruneArchive
from .admin import AdminCommands
from .auth import DONE, PROCEED, Bind, Decision, Guard, LookUpKey
from .cluster import HOLD, ClusterHooks
from .config import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SLOW_CONSUMER,
    POLICIES,
    RouterConfig,
)
from .effects import Effects
from .fanout import Fanout
from .frames import encode_pub_flags_raw, encode_pub_raw, encode_response_raw
from .index import PatternMatcher, SubscriptionIndex
from .replay import Archive, Replayer
from .rpc import RpcRouter
from .sessions import Sessions
from .state import Call, Connection, Twin
from .stats import Stats


class Router:
    """Routes messages between connections; see the module docstring for the driver loop."""

    def __init__(self, store: Store, config: RouterConfig | None = None, *,
                 id_factory: Callable[[int], bytes] | None = None, now: float = 0.0,
                 security: Security | None = None, verify: Verify | None = None,
                 matcher: PatternMatcher | None = None) -> None:
        self.config = config or RouterConfig()
        if self.config.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.config.policy!r}: use one of {POLICIES}")
        self.store = store
        if id_factory is None:
            id_factory = RandomPool()
        self._started = now
        self._next_prune = now + self.config.prune_interval
        last_seq, records = store.load()
        effects = self._effects = Effects(self.config, now, now)
        self.guard = Guard(self.config, effects, security if security is not None
                           else MemorySecurity(), verify, id_factory)
        self._index = SubscriptionIndex(matcher)
        cfg = self.config
        # a quarter of the smaller budget: between two prunes, stored bytes stay within 1.25x
        self._archive = Archive(store, last_seq,
                                min(cfg.retention_max_bytes, cfg.retention_max_total_bytes) // 4
                                or 1, self._prune)
        self._replayer = Replayer(effects, self._index, self.guard)
        self.twins: dict[str, Twin] = {}
        builtins: dict[str, Callable[[], Any]] = {
            "rid": lambda: self.config.name,
            "version": lambda: self.config.version,
            "uptime": lambda: f"up for {int(effects.now - self._started)} seconds",
        }
        self._rpc = RpcRouter(effects, self.guard, self.twins,
                              int.from_bytes(id_factory(4), "little") << 32, builtins)
        self._fanout = Fanout(effects, self._index, self.guard, self._archive, self._replayer)
        self._admin = AdminCommands(effects, self.guard, self._index, self._rpc,
                                    self._archive, self._replayer)
        self._sessions = Sessions(effects, store, self._index, self._rpc, self.guard,
                                  self._archive, self._replayer, self.twins, id_factory)
        self._sessions.load(records)
        self._cluster: ClusterHooks | None = None

    # -- connections -------------------------------------------------------

    @property
    def connections(self) -> set[Connection]:
        """Open connections."""
        return self._sessions.connections

    @property
    def stats(self) -> Stats:
        """The broker's counters (publications, calls, refusals...)."""
        return self._effects.stats

    @property
    def now(self) -> float:
        """The last monotonic time given to the router."""
        return self._effects.now

    def subscriber_counts(self) -> dict[str, int]:
        """Every topic and pattern with its number of subscribers."""
        index = self._index
        counts = {topic: len(twins) for topic, twins in index.exact.items()}
        counts.update((pattern, len(twins)) for pattern, twins in index.patterns.items())
        return counts

    def exposers(self) -> dict[str, list[str]]:
        """Every exposed method with the sorted names of its exposers."""
        return self._rpc.snapshot()

    def replay_backlog(self) -> dict[str, int]:
        """Named components with a retroactive subscription that are behind the archive:
        name -> stored messages (of any topic) newer than their delivery mark."""
        last = self._archive.last_seq
        return {name: last - twin.mark for name, twin in self.twins.items()
                if twin.mark < last and twin.retroactive_topics()}

    def admin_password(self, name: str, password: str, now: float) -> str | None:
        """Check an admin's password given outside the protocol (see
        :meth:`~rembus_proto.broker.auth.Guard.admin_password`); ``None``: accepted."""
        return self.guard.admin_password(name, password, now)

    def connect(self, now: float, peer: str = "") -> Connection:
        """A transport connection was accepted; returns its handle."""
        self._effects.now = now
        conn = self._sessions.connect(peer)
        if self._cluster is not None:
            self._cluster.up(conn.twin)
        return conn

    def disconnect(self, conn: Connection, now: float) -> None:
        """The transport connection is gone (closed by either side or lost)."""
        self._effects.now = now
        cluster = self._cluster
        if cluster is not None and not conn.closed:
            if conn.twin.conn is conn:
                cluster.down(conn.twin)
            self._sessions.disconnect(conn)  # saves the twin before its lease goes
            cluster.disconnected(conn)
            return
        self._sessions.disconnect(conn)

    def drained(self, conn: Connection, now: float) -> None:
        """The connection's socket buffer has room again: continue a replay."""
        self._effects.now = now
        conn.waiting_drain = False
        twin = conn.twin
        if twin.replaying and twin.conn is conn:
            self._replayer.resume(twin)

    def shutdown(self, now: float) -> None:
        """Save every twin; call before the last commit of the store."""
        for conn in list(self.connections):
            self.disconnect(conn, now)
        self.flush()

    # -- output ------------------------------------------------------------

    def data_to_send(self) -> list[tuple[Connection, list[bytes]]]:
        """Frames to write, per connection; delivery marks advance as they are taken."""
        return self._effects.data_to_send()

    @property
    def skipped(self) -> int:
        """Messages never sent because they would have been over the size limit
        (each one also a :class:`~rembus_proto.broker.actions.Skipped` order)."""
        return self._effects.skipped

    @property
    def forgotten(self) -> int:
        """Named twins forgotten since the start (away longer than ``twin_retention``)."""
        return self._sessions.forgotten

    def events(self) -> list[Event]:
        """Orders (:class:`Close`, :class:`ShutdownRequested`, :class:`PruneArchive`) and
        data requests (:class:`NeedReplay`, :class:`NeedKey`) since the last call."""
        return self._effects.events()

    def flush(self) -> None:
        """Stage the updates of twins whose state changed (delivery marks)."""
        self._sessions.flush()

    # -- timers ------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next."""
        deadline = self._next_prune
        for other in (self._effects.timers.next_deadline(), self.guard.next_deadline()):
            if other is not None and other < deadline:
                deadline = other
        return deadline

    def handle_timer(self, now: float, wall: float | None = None) -> None:
        """Resend unacknowledged QoS deliveries, forget stale calls, prune the archive.

        It costs what is due: open connections with nothing due cost nothing.
        """
        effects = self._effects
        effects.at(now, wall)
        for _, _, owner, key, item in effects.timers.due(now):
            if isinstance(item, Call):
                assert isinstance(owner, Connection)
                self._rpc.expire(owner, key, item)
            else:
                assert isinstance(owner, Twin)
                self._fanout.resend(owner, key, item, now)
        self.guard.handle_timer(now)
        self._sessions.forget_away(effects.wall)
        if now >= self._next_prune:
            self._prune()

    def _prune(self) -> None:
        """Ask the driver to apply the retention rules now."""
        effects = self._effects
        cfg = self.config
        self._next_prune = effects.now + cfg.prune_interval
        self._archive.unpruned = 0
        effects.emit(PruneArchive(int((effects.wall - cfg.retention_max_age) * 1e9),
                                  cfg.retention_max_per_topic, cfg.retention_max_bytes,
                                  cfg.retention_max_total_bytes))

    # -- answers to data requests ----------------------------------------------

    def replay_batch(self, request: NeedReplay, batch: list[StoredMessage], now: float,
                     wall: float | None = None) -> None:
        """The stored messages asked for by ``request`` (fewer than its limit: no more)."""
        self._effects.at(now, wall)
        self._replayer.batch(request.twin, request.token, batch)

    def key_found(self, conn: Connection, name: str, key: PublicKey | None, now: float,
                  wall: float | None = None) -> None:
        """The key of ``name`` asked for by :class:`NeedKey` (``None``: not registered).

        The held input of ``conn`` goes on; a malformed message in it is answered
        with a :class:`Close` event rather than an exception.
        """
        held = conn.held
        if conn.closed or held is None:
            return
        conn.held = None
        self.guard.key_found(conn, name, key)
        try:
            self.receive_many(conn, held, now, wall)
        except ProtocolError as exc:
            conn.held = []  # nothing more from it: the driver closes it
            self._effects.close(conn, CLOSE_PROTOCOL_ERROR, str(exc))

    # -- a cluster of brokers ---------------------------------------------------

    def join_cluster(self) -> ClusterHooks:
        """Start emitting the cluster actions (see :mod:`.cluster`); the interests of the
        twins already known come out as :class:`InterestChanged` events at once."""
        if self._cluster is None:
            cluster = self._cluster = ClusterHooks(self._effects, self.guard.trusted)
            for table in (self._index.exact, self._index.patterns):
                for topic, twins in table.items():
                    for twin in twins:
                        cluster.subscription(twin, topic, True)
            self._index.listener = cluster.subscription
            self._rpc.cluster = cluster
            self._fanout.cluster = cluster
            self._sessions.cluster = cluster
            self._replayer.follow = True
            for conn in self.connections:
                if conn.twin.conn is conn:
                    cluster.up(conn.twin)
        return self._cluster

    def use_security(self, security: Security, *, deferred_keys: bool = False) -> None:
        """Serve keys, tenants, admins and private topics from ``security`` from now on
        (the private topics are read again). ``deferred_keys``: REGISTER saves a key
        through a :class:`~.actions.SaveKey` order, answered by :meth:`key_saved`."""
        self.guard.security = security
        self.guard.deferred_keys = deferred_keys
        self.guard.reload()

    def reload_security(self) -> None:
        """The private topics of the security port changed: read them again."""
        self.guard.reload()

    def key_saved(self, conn: Connection, msg_id: bytes, name: str, refusal: str | None,
                  taken: bool, now: float) -> None:
        """The outcome of a :class:`~.actions.SaveKey`: ``taken`` when the name was
        registered already, ``refusal`` when the key could not be saved."""
        self._effects.now = now
        self.guard.key_saved(conn, msg_id, name, refusal, taken)

    def load(self, tenant: str, method: str) -> int | None:
        """Calls in flight at the least busy connected exposer of ``method`` in ``tenant``
        (what ``less_busy`` would pick here); ``None`` when none is connected."""
        return self._rpc.load(tenant, method)

    def _joined(self) -> ClusterHooks:
        if self._cluster is None:
            raise RuntimeError("the router is not joined in a cluster (join_cluster)")
        return self._cluster

    def remote_publish(self, tenant: str, topic: str, payload: bytes, now: float,
                       wall: float | None = None, flags: int = 0, msg_id: bytes | None = None,
                       kept: bool = False) -> None:
        """A publication from another broker: deliver it here, never forward it again.

        ``kept``: the cluster's archive stored it (retroactive subscribers here
        read it from there).
        """
        self._effects.at(now, wall)
        conn = self._joined().remote_conn(tenant)
        if flags & QOS_MASK and msg_id is not None:
            frame = encode_pub_flags_raw(flags, msg_id, topic, payload)
        else:
            flags, msg_id = 0, None
            frame = encode_pub_raw(topic, payload)
        self._fanout.publish(conn, topic, flags, msg_id, frame, len(frame) - len(payload),
                             kept)

    def cluster_acked(self, conn: Connection, msg_id: bytes, now: float) -> None:
        """The cluster's archive stored the QoS1/2 publication ``msg_id`` of ``conn``
        (a :class:`Forward` with ``kept``): acknowledge it to the publisher."""
        self._effects.now = now
        self._fanout.cluster_acked(conn, msg_id)

    def twin_stored(self, name: str, held: int, now: float) -> None:
        """The cluster stored the twin ``name`` as it was when it had ``held`` ACK2s
        held back (:attr:`Twin.held_ack2`): they go now."""
        self._effects.now = now
        twin = self.twins.get(name)
        if twin is not None and held:
            self._fanout.release_ack2(twin, held)

    def archive_seq(self, seq: int) -> None:
        """The cluster's archive holds messages up to ``seq`` (new twins start there,
        new subscriptions are owed only what comes after)."""
        if seq > self._archive.last_seq:
            self._archive.last_seq = seq

    def cluster_retro(self, tenant: str, topic: str, delta: int) -> None:
        """A retroactive subscription to ``topic`` of ``tenant`` appeared (``delta`` 1)
        or went (-1) in the cluster: publications it matches are kept."""
        self._joined().retro(tenant, topic, delta)

    def remote_request(self, tenant: str, topic: str, target: str | None, data: bytes,
                       token: bytes, now: float, wall: float | None = None) -> Connection:
        """A request from another broker, answered on the returned pseudo-connection
        with a RESPONSE whose id is ``token`` (unless nobody answers in time)."""
        self._effects.at(now, wall)
        conn = self._joined().remote_conn(tenant)
        self._rpc.request(conn, Rpc(token, topic, Payload(data), target))
        return conn

    def remote_reply(self, conn: Connection, msg_id: bytes, status: int, data: bytes,
                     now: float) -> None:
        """The answer, from the cluster, to a :class:`RemoteCall` of ``conn``."""
        self._effects.now = now
        if not conn.closed:
            self._effects.send(conn, encode_response_raw(msg_id, status, data))

    def lease_found(self, conn: Connection, name: str, refusal: str | None, now: float,
                    wall: float | None = None, record: TwinRecord | None = None,
                    qos2: Iterable[bytes] = (), archive_seq: int = 0) -> None:
        """The outcome of a :class:`NeedLease` (``refusal``: why not; ``None``: won).
        The held input of ``conn`` goes on, as after :meth:`key_found`.

        ``record``, ``qos2``: the twin of ``name`` as the cluster keeps it (it
        replaces ours), with the QoS2 ids it received; ``archive_seq``: the
        last seq of the cluster's archive (a new twin is owed what comes after).
        """
        cluster = self._joined()
        cluster.lease_found(conn, name, refusal)
        if refusal is None:
            self._effects.at(now, wall)
            self.archive_seq(archive_seq)
            if record is not None:
                self._sessions.adopt(record, qos2)
        if conn.closed:  # gone while the lease was taken: give it back
            cluster.disconnected(conn)
            return
        held = conn.held
        if conn.closed or held is None:
            return
        conn.held = None
        try:
            self.receive_many(conn, held, now, wall)
        except ProtocolError as exc:
            conn.held = []
            self._effects.close(conn, CLOSE_PROTOCOL_ERROR, str(exc))

    def serve_failed(self, conn: Connection, reason: str) -> None:
        """The driver could not go on serving ``conn`` (an unexpected error of its own):
        close it with 1011, as for an error of the router; the component reconnects."""
        if not conn.closed:
            self._effects.close(conn, CLOSE_INTERNAL_ERROR, reason)

    def lease_lost(self, name: str, code: int, reason: str) -> None:
        """The cluster no longer grants ``name`` to us: close the connection using it."""
        conn = self._joined().lease_lost(name)
        if conn is not None and not conn.closed:
            self._effects.close(conn, code, reason)

    # -- input -------------------------------------------------------------

    def receive(self, conn: Connection, frame: bytes, now: float,
                wall: float | None = None) -> None:
        """Process one message from ``conn``; raises :class:`ProtocolError` if malformed."""
        self.receive_many(conn, [frame], now, wall)

    def receive_many(self, conn: Connection, frames: list[bytes], now: float,
                     wall: float | None = None) -> None:
        """Process messages of ``conn`` in order, as :meth:`receive` does one by one.

        What a driver read at once. Plain publications take the hot path:
        nothing is decoded but their topic.
        """
        self._effects.at(now, wall)
        if conn.held is not None:
            self._hold(conn, frames)
            return
        try:
            self._receive_many(conn, frames)
        except ProtocolError:
            raise
        except Exception as exc:  # a bug must cost only the connection that hit it
            conn.held = []  # nothing more from it: the driver closes it
            self._effects.close(conn, CLOSE_INTERNAL_ERROR,
                                f"internal error handling a message: {type(exc).__name__}: {exc}")

    def _receive_many(self, conn: Connection, frames: list[bytes]) -> None:
        limit = self.config.limits.max_message_size
        max_topic = self.config.names.max_topic_length
        gate = self.guard.gate
        max_id = self.config.limits.max_id_length
        fanout = self._fanout
        publish = fanout.publish
        for i, frame in enumerate(frames):
            if conn.closed:
                return
            gated = bool(gate) and conn in gate  # an attestation may open the gate
            if not gated:
                quick = split_qos0_pub(frame)
                if (quick is not None and len(frame) <= limit and quick[0].isprintable()
                        and len(quick[0]) <= max_topic):  # else checked on the slow path
                    publish(conn, quick[0], 0, None, frame, quick[1])
                    continue
                ack = split_ack(frame)
                if ack is not None and len(ack[1]) <= max_id:
                    if ack[0]:
                        fanout.ack2(conn, ack[1])
                    else:
                        fanout.ack(conn, ack[1])
                    continue
            decision = self._dispatch(conn, frame, gated)
            if decision is HOLD:  # a NeedLease is out
                conn.held = frames[i:]
                return
            if isinstance(decision, LookUpKey):
                conn.held = frames[i:]
                self._effects.emit(NeedKey(conn, decision.name))
                return

    def vouch(self, conn: Connection, msg_id: bytes, name: str, now: float) -> None:
        """Log ``conn`` in as ``name``: the driver checked its credentials itself (the
        HTTP API's passwords). It then counts as logged in with a key (admin rights,
        private topics). The answer to ``msg_id`` says whether the name was bound."""
        self._effects.now = now
        conn.learn_generation(msg_id)
        name = normalize_name(name)
        problem = check_name(name, self.config.names) if name else "empty cid"
        error = problem or self._sessions.identity_error(conn, name)
        if error is not None:
            self._effects.reply(conn, msg_id, Status.GENERIC_ERROR, error)
            return
        self._apply(conn, Bind(msg_id, name, login=True))

    def _hold(self, conn: Connection, frames: list[bytes]) -> None:
        held = conn.held
        assert held is not None
        if len(held) + len(frames) > self.config.max_held:
            self._effects.close(conn, CLOSE_SLOW_CONSUMER, "too many messages while logging in")
            return
        held.extend(frames)

    def _dispatch(self, conn: Connection, frame: bytes, gated: bool) -> Decision | str:
        """Decode a message and hand it to its handler."""
        message = decode(frame, self.config.limits)
        if isinstance(message, Identity) and self._refused(conn, message):
            return DONE  # before the guard: a refused name is never looked up
        if gated:
            decision = self.guard.admit(conn, message)
            if decision is not PROCEED:
                return decision
        if isinstance(message, Rpc | Pub) and self._refused(conn, message):
            return DONE
        if isinstance(message, Pub):  # its payload is the tail of the frame
            self._fanout.publish(conn, message.topic, message.flags, message.id, frame,
                                 len(frame) - len(message.data.raw))
        elif isinstance(message, Rpc):
            self._rpc.request(conn, message)
        elif isinstance(message, Response):
            self._rpc.response(conn, message)
        elif isinstance(message, Ack):
            self._fanout.ack(conn, message.id)
        elif isinstance(message, Ack2):
            self._fanout.ack2(conn, message.id)
        elif isinstance(message, Admin):
            self._admin.receive(conn, message)
        elif isinstance(message, Identity):
            return self._identity(conn, message)
        else:
            conn.learn_generation(message.id)
            return self._apply(conn, self.guard.receive(conn, message, self._effects.now))
        return DONE

    def _refused(self, conn: Connection, message: Identity | Rpc | Pub) -> bool:
        """Refuse a name or topic over the limits or with look-alike characters
        (:mod:`rembus_proto.topics`): a status, or for a PUB a protocol error."""
        names = self.config.names
        if isinstance(message, Identity):
            name = normalize_name(message.cid)
            problem = check_name(name, names) if name else None  # empty: "empty cid"
        else:
            problem = check_topic(message.topic, names)
        if problem is None:
            return False
        if isinstance(message, Pub):  # nobody to tell: a malformed message
            raise MalformedMessage(f"PUB {problem}")
        conn.learn_generation(message.id)
        self._effects.reply(conn, message.id, Status.GENERIC_ERROR, problem)
        return True

    def _identity(self, conn: Connection, msg: Identity) -> Decision | str:
        conn.learn_generation(msg.id)
        name = normalize_name(msg.cid)
        error = self._sessions.identity_error(conn, name)
        if error is None and self._cluster is not None:
            error = self._cluster.lease(conn, name)
            if error is HOLD:
                return HOLD
        if error is not None:
            self._effects.reply(conn, msg.id, Status.GENERIC_ERROR, error)
            return DONE
        return self._apply(conn, self.guard.identify(conn, msg.id, name))

    def _apply(self, conn: Connection, decision: Decision) -> Decision:
        """Carry out a :class:`Bind`; pass any other decision on."""
        if isinstance(decision, Bind):
            before = conn.twin
            ok = self._sessions.bind(conn, decision.msg_id, decision.name)
            if ok and self._cluster is not None:
                self._cluster.down(before)
                self._cluster.up(conn.twin)
            self.guard.bound(conn, decision, ok)
            return DONE
        return decision


__all__ = ["Router"]
