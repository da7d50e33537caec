"""Connections and twins: who is connected, under which name; binding a name."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..constants import Status
from ..store import Store, TwinRecord
from .auth import Guard
from .config import CLOSE_OVERWRITTEN
from .effects import Effects
from .index import SubscriptionIndex
from .replay import Archive, Replayer
from .rpc import RpcRouter
from .state import Connection, Twin

if TYPE_CHECKING:
    from .cluster import ClusterHooks

SWEEP_LIMIT = 1_000
"""Twins :meth:`Sessions.forget_away` examines at most per call."""


class Sessions:
    """Every twin (named ones persist) and every open connection."""

    def __init__(self, effects: Effects, store: Store, index: SubscriptionIndex,
                 rpc: RpcRouter, guard: Guard, archive: Archive, replayer: Replayer,
                 twins: dict[str, Twin], id_factory: Callable[[int], bytes]) -> None:
        self.effects = effects
        self.store = store
        self.index = index
        self.rpc = rpc
        self.guard = guard
        self.archive = archive
        self.replayer = replayer
        self.twins = twins
        self.connections: set[Connection] = set()
        self._id_factory = id_factory
        self._dirty: dict[Twin, None] = {}
        """Named twins whose persistent part changed since the last flush."""
        self._away: dict[Twin, float] = {}
        """Named twins not connected -> since when (wall seconds), oldest first."""
        self._loaded = False
        self.cluster: ClusterHooks | None = None
        """Set when the broker is joined in a cluster: saved twins are kept there too."""
        self.forgotten = 0
        """Named twins forgotten by :meth:`forget_away` since the start."""

    def load(self, records: list[TwinRecord]) -> None:
        """Bring back the named twins of a previous run."""
        self._loaded = bool(records)
        for record in records:
            twin = Twin(record.name, True, record, self._dirty)
            self.twins[twin.name] = twin
            self._away[twin] = math.inf  # the time it left is not stored: see forget_away
            self.index.add_twin(twin)
            self.rpc.index(twin)
        window = self.effects.config.qos2_dedup_size
        for name, msg_id in self.store.load_qos2():
            publisher = self.twins.get(name)
            if publisher is None:  # a twin that was forgotten
                self.store.qos2_released(name, msg_id)
                continue
            seen = publisher.qos2_seen
            seen[msg_id] = self.effects.now  # its age counts from the restart
            if len(seen) > window:
                self.store.qos2_released(name, seen.popitem(last=False)[0])

    def adopt(self, record: TwinRecord, qos2: Iterable[bytes]) -> None:
        """The cluster's copy of a named twin, about to be bound here, replaces ours
        (unless ours is connected: then it is the newest)."""
        old = self.twins.get(record.name)
        if old is not None:
            if old.conn is not None:
                return
            self._away.pop(old, None)
            self._dirty.pop(old, None)
            old.sink = None
            self.index.remove_twin(old)
            self.rpc.unindex(old)
        twin = Twin(record.name, True, record, self._dirty)
        twin.saved = False  # the local store may not have it: saved whole next time
        now = self.effects.now
        for msg_id in qos2:
            twin.qos2_seen[msg_id] = now
        self.twins[twin.name] = twin
        self._away[twin] = self.effects.wall
        self.index.add_twin(twin)
        self.rpc.index(twin)

    def connect(self, peer: str) -> Connection:
        """A new connection, with an anonymous twin of its own."""
        name = str(uuid.UUID(bytes=self._id_factory(16), version=4))
        conn = Connection(Twin(name, False), peer)
        conn.twin.conn = conn
        self.connections.add(conn)
        self.effects.stats.opened += 1
        self.guard.on_connect(conn)
        return conn

    def disconnect(self, conn: Connection) -> None:
        """The connection is gone: fail its calls, keep a named twin, drop an anonymous one."""
        if conn.closed:
            return
        conn.closed = True
        conn.held = None
        self.connections.discard(conn)
        self.effects.dirty.pop(conn, None)
        self.guard.forget(conn)
        self.rpc.fail_calls(conn)
        twin = conn.twin
        if twin.conn is not conn:
            return
        twin.conn = None
        twin.reactive = False
        self.replayer.stop(twin)
        twin.clear_inflight()
        if twin.named:
            self.save(twin)
            self._away[twin] = self.effects.wall
        else:
            self.index.remove_twin(twin)
            self.rpc.unindex(twin)

    def identity_error(self, conn: Connection, name: str) -> str | None:
        """Why ``conn`` cannot take ``name`` now, or ``None``."""
        if not name:
            return "empty cid"
        if conn.twin.named:
            return "already identified"
        twin = self.twins.get(name)
        if (twin is not None and twin.conn is not None
                and not self.effects.config.overwrite_connection):
            return "already connected"
        return None

    def bind(self, conn: Connection, msg_id: bytes, name: str) -> bool:
        """Give the connection the twin of ``name`` and answer ``msg_id`` (OK or 10)."""
        effects = self.effects
        twin = self.twins.get(name)
        if twin is not None and twin.conn is not None:
            if not effects.config.overwrite_connection:
                effects.reply(conn, msg_id, Status.GENERIC_ERROR, "already connected")
                return False
            old = twin.conn
            self.disconnect(old)
            effects.close(old, CLOSE_OVERWRITTEN, "overwritten")
        anonymous = conn.twin
        self.index.remove_twin(anonymous)
        self.rpc.unindex(anonymous)
        if twin is None:
            twin = Twin(name, True, sink=self._dirty)
            twin.mark = self.archive.last_seq  # retroactive: "what is published while away"
            self.twins[name] = twin
            self.save(twin)
        twin.conn = conn
        twin.reactive = False
        conn.twin = twin
        self._away.pop(twin, None)
        effects.reply(conn, msg_id, Status.OK, None)
        return True

    def save(self, twin: Twin) -> None:
        """Stage what changed in the persistent part of ``twin`` (all of it the first time)."""
        twin.dirty = False
        if self.cluster is not None:
            self.cluster.saved(twin)
        if twin.saved:
            self.store.update_twin(twin.update())
            return
        twin.saved = True
        twin.touched_subs = {}
        twin.touched_exposed = {}
        self.store.save_twin(twin.record())

    def forget_away(self, wall: float, limit: int = SWEEP_LIMIT) -> int:
        """Forget up to ``limit`` named twins away for longer than the retention that owe
        nothing and are not registered; returns how many. Costs what it forgets."""
        away = self._away
        if self._loaded:  # the first wall time seen starts the clock of loaded twins
            self._loaded = False
            for loaded, since in away.items():
                if since == math.inf:
                    away[loaded] = wall
        cutoff = wall - self.effects.config.twin_retention
        forgotten = 0
        for _ in range(limit):
            twin = next(iter(away), None)
            if twin is None or away[twin] > cutoff:
                break
            del away[twin]
            if twin.retroactive_topics() and twin.mark < self.archive.last_seq:
                away[twin] = wall  # may still be owed stored messages: look again later
            elif self.guard.security.public_key(twin.name) is None:
                self._forget(twin)
                forgotten += 1
        self.forgotten += forgotten
        return forgotten

    def _forget(self, twin: Twin) -> None:
        del self.twins[twin.name]
        self._dirty.pop(twin, None)
        twin.sink = None
        self.index.remove_twin(twin)
        self.rpc.unindex(twin)
        self.store.delete_twin(twin.name)

    def flush(self) -> None:
        """Stage the twins whose state changed (only those: no scan of every twin)."""
        dirty = self._dirty
        if not dirty:
            return
        twins = list(dirty)
        dirty.clear()
        for twin in twins:
            if twin.dirty and self.twins.get(twin.name) is twin:
                self.save(twin)


__all__ = ["SWEEP_LIMIT", "Sessions"]
