"""What a router joined in a cluster tells its driver, and what it keeps for that.

A router alone never uses this module. Once :meth:`Router.join_cluster` is
called it emits, besides its usual actions:

* :class:`~.actions.InterestChanged` when the local components start or stop
  wanting publications of a (tenant, topic or pattern), calls of a method of a
  tenant (only connected exposers count), or calls addressed to a named
  component connected here;
* :class:`~.actions.Forward` for every publication of a local component (never
  for one that came from the cluster: no echo loops);
* :class:`~.actions.RemoteCall` when no local component can serve a request
  (never for a request that came from the cluster);
* :class:`~.actions.NeedLease` before a name is bound, and
  :class:`~.actions.LeaseReleased` when its connection ends;
* :class:`~.actions.TwinChanged` when the persistent part of a named twin
  changed (the driver keeps it in the cluster, where the next broker of that
  component finds it).

Stored messages live in the cluster's archive, not in the router's store: a
publication is *kept* when it is QoS1/2 or when a retroactive subscription
anywhere in the cluster wants it (:meth:`ClusterHooks.retro`, fed by the
driver). A named subscriber reads what is kept for its retroactive
subscriptions through its replay, which then never ends (it follows the
archive), and is skipped by live delivery of kept publications.

What other brokers send comes in through pseudo-connections, one per tenant,
that no socket backs: a publication from the cluster is routed as if one of
them had published it, a request as if one of them had asked it; the answers
the router queues for them are the driver's to send back.
"""

from __future__ import annotations

from ..constants import Status
from ..topics import is_pattern
from ..wildcard import Wildcard
from .actions import InterestChanged, LeaseReleased, NeedLease, RemoteCall, TwinChanged
from .effects import Effects
from .state import Connection, Twin

#: Tenants that may have a pseudo-connection at once (the tenants of the whole cluster).
MAX_REMOTE_TENANTS = 10_000
#: What :meth:`ClusterHooks.lease` answers while the driver takes the lease.
HOLD = "hold"

SUB = "sub"
RPC = "rpc"
DIRECT = "direct"


class ClusterHooks:
    """Reference counts of local interests, leases per connection, pseudo-connections."""

    def __init__(self, effects: Effects, trusted: set[Connection] | None = None) -> None:
        """``trusted``: where the pseudo-connections are added (the guard's set of
        connections trusted with private topics)."""
        self.effects = effects
        self._counts: dict[tuple[str, str, str], int] = {}
        self._up: set[Twin] = set()
        """Twins whose connection counts: their exposed methods, their name for direct calls."""
        self._remote: dict[str, Connection] = {}
        self._remote_conns: set[Connection] = trusted if trusted is not None else set()
        self.leases: dict[str, Connection] = {}
        """Name -> the connection holding its lease."""
        self._granted: dict[Connection, str] = {}
        self._refused: dict[Connection, tuple[str, str]] = {}
        self._retro: dict[tuple[str, str], int] = {}
        """(tenant, topic or pattern) -> retroactive subscriptions to it in the cluster."""
        self._retro_patterns: dict[str, dict[str, Wildcard]] = {}
        """Tenant -> its patterns with retroactive subscriptions."""

    # -- the archive -------------------------------------------------------------

    def retro(self, tenant: str, topic: str, delta: int) -> None:
        """A retroactive subscription of ``tenant`` to ``topic`` appeared (``delta`` 1)
        or went (-1) somewhere in the cluster."""
        key = (tenant, topic)
        count = self._retro.get(key, 0) + delta
        if count > 0:
            self._retro[key] = count
            if is_pattern(topic):
                self._retro_patterns.setdefault(tenant, {}).setdefault(topic,
                                                                       Wildcard(topic))
            return
        self._retro.pop(key, None)
        patterns = self._retro_patterns.get(tenant)
        if patterns is not None and patterns.pop(topic, None) is not None and not patterns:
            del self._retro_patterns[tenant]

    def kept(self, tenant: str, topic: str, qos: int) -> bool:
        """Whether a publication goes into the cluster's archive."""
        if qos or (tenant, topic) in self._retro:
            return True
        patterns = self._retro_patterns.get(tenant)
        return patterns is not None and any(p.fullmatch(topic) for p in patterns.values())

    def saved(self, twin: Twin) -> None:
        """The persistent part of ``twin`` changed."""
        self.effects.emit(TwinChanged(twin.name))

    # -- interests -----------------------------------------------------------

    def _count(self, kind: str, tenant: str, topic: str, delta: int) -> None:
        key = (kind, tenant, topic)
        count = self._counts.get(key, 0) + delta
        if count > 0:
            self._counts[key] = count
            if count == delta:
                self.effects.emit(InterestChanged(kind, tenant, topic, True))
        elif key in self._counts:
            del self._counts[key]
            self.effects.emit(InterestChanged(kind, tenant, topic, False))

    def interests(self) -> list[tuple[str, str, str]]:
        """Every (kind, tenant, topic) wanted now."""
        return list(self._counts)

    def subscription(self, twin: Twin, topic: str, present: bool) -> None:
        """The index gained (or lost) the subscription of ``twin`` to ``topic``."""
        self._count(SUB, twin.tenant, topic, 1 if present else -1)

    def exposed(self, twin: Twin, topic: str, present: bool) -> None:
        """``twin`` started (or stopped) exposing ``topic``."""
        if twin in self._up:
            self._count(RPC, twin.tenant, topic, 1 if present else -1)

    def up(self, twin: Twin) -> None:
        """``twin`` has a connection here: its methods and its name are reachable."""
        if twin in self._up or twin.conn is None or twin.conn in self._remote_conns:
            return
        self._up.add(twin)
        for topic in twin.exposed:
            self._count(RPC, twin.tenant, topic, 1)
        if twin.named:
            self._count(DIRECT, twin.tenant, twin.name, 1)

    def down(self, twin: Twin) -> None:
        """The connection of ``twin`` is gone (or it became another twin)."""
        if twin not in self._up:
            return
        self._up.discard(twin)
        for topic in twin.exposed:
            self._count(RPC, twin.tenant, topic, -1)
        if twin.named:
            self._count(DIRECT, twin.tenant, twin.name, -1)

    # -- what comes from other brokers -------------------------------------------

    def is_remote(self, conn: Connection) -> bool:
        """Whether ``conn`` stands for other brokers (what it sends never leaves again)."""
        return conn in self._remote_conns

    def remote_conn(self, tenant: str) -> Connection:
        """The pseudo-connection of ``tenant``; raises ``OverflowError`` beyond the bound."""
        conn = self._remote.get(tenant)
        if conn is None:
            if len(self._remote) >= MAX_REMOTE_TENANTS:
                raise OverflowError(f"more than {MAX_REMOTE_TENANTS} tenants from the cluster")
            twin = Twin(f"cluster:{tenant}", False)
            twin.tenant = tenant
            conn = self._remote[tenant] = Connection(twin, "cluster")
            conn.id_len = 8
            twin.conn = conn
            self._remote_conns.add(conn)
        return conn

    def remote_call(self, conn: Connection, msg_id: bytes, topic: str, target: str | None,
                    data: bytes, missing: Status, missing_value: str) -> bool:
        """Ask the cluster for a request nobody here serves; false when it must not go out."""
        if conn in self._remote_conns:
            return False
        self.effects.emit(RemoteCall(conn, msg_id, conn.twin.tenant, topic, target, data,
                                     int(missing), missing_value))
        return True

    # -- leases ----------------------------------------------------------------

    def lease(self, conn: Connection, name: str) -> str | None:
        """``None`` when ``conn`` holds the lease of ``name``, :data:`HOLD` while it is
        being taken (a :class:`NeedLease` is out), else why it cannot have it."""
        if self._granted.get(conn) == name:
            return None
        refused = self._refused.pop(conn, None)
        if refused is not None and refused[0] == name:
            return refused[1]
        self.effects.emit(NeedLease(conn, name))
        return HOLD

    def lease_found(self, conn: Connection, name: str, refusal: str | None) -> None:
        """The outcome of a :class:`NeedLease`: ``refusal`` is ``None`` when it was won."""
        if refusal is not None:
            self._refused[conn] = (name, refusal)
            return
        previous = self._granted.get(conn)
        if previous is not None and previous != name:
            self._release(conn, previous)
        self._granted[conn] = name
        self.leases[name] = conn

    def lease_lost(self, name: str) -> Connection | None:
        """The lease of ``name`` is no longer ours: the connection that held it."""
        conn = self.leases.pop(name, None)
        if conn is not None:
            self._granted.pop(conn, None)
        return conn

    def disconnected(self, conn: Connection) -> None:
        """``conn`` is gone: release its lease (unless another connection took it over)."""
        self._refused.pop(conn, None)
        name = self._granted.pop(conn, None)
        if name is not None:
            self._release(conn, name)

    def _release(self, conn: Connection, name: str) -> None:
        if self.leases.get(name) is conn:
            del self.leases[name]
            self.effects.emit(LeaseReleased(name))


__all__ = ["DIRECT", "HOLD", "MAX_REMOTE_TENANTS", "RPC", "SUB", "ClusterHooks"]
