"""Publication fan-out: PUB in, deliveries out, ACKs of QoS1/2 deliveries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from ..constants import QOS2, QOS_MASK
from .actions import Forward
from .auth import Guard
from .config import CLOSE_SLOW_CONSUMER
from .effects import Effects
from .frames import encode_ack, encode_ack2, encode_pattern_pub, encode_pub_raw
from .index import SubscriptionIndex
from .replay import Archive, Replayer
from .state import Connection, Inflight, Twin

if TYPE_CHECKING:
    from .cluster import ClusterHooks


class Fanout:
    """Routes publications to subscribers, archiving those a named subscriber may miss."""

    def __init__(self, effects: Effects, index: SubscriptionIndex, guard: Guard,
                 archive: Archive, replayer: Replayer) -> None:
        self.effects = effects
        self.index = index
        self.guard = guard
        self.archive = archive
        self.replayer = replayer
        # the hot path reads these directly; none of them is ever replaced
        self._exact = index.exact
        self._patterns = index.patterns
        self._retro = index.retro
        self._private = guard.private
        self._max_queued = effects.config.max_queued
        self._stats = effects.stats
        self._publications = effects.stats.publications
        self.cluster: ClusterHooks | None = None
        """Set when the broker is joined in a cluster: local publications go there too."""

    def publish(self, conn: Connection, topic: str, flags: int, msg_id: bytes | None,
                frame: bytes, offset: int, kept: bool = False) -> None:
        """Route a publication; its payload is ``frame[offset:]``, sliced only if needed.

        ``kept``: a publication from the cluster that its archive stored (then its
        retroactive subscribers here read it from there, not from this delivery).
        """
        publisher = conn.twin
        effects = self.effects
        stats = self._stats
        counts = self._publications
        if topic in counts:  # inlined Stats.published: the hot path
            counts[topic] += 1
        else:
            stats.published(topic)
        private = self._private
        acl = private.get(topic) if private else None
        if acl is not None and not self.guard.allowed(conn, acl):
            return  # private topic: dropped silently (spec 7.1)
        qos = flags & QOS_MASK
        cluster = self.cluster
        # every broker checks ACLs: private topics cross brokers too (but are not archived)
        forward = cluster is not None and not cluster.is_remote(conn)
        if msg_id is not None:
            conn.learn_generation(msg_id)
            if qos == QOS2 and not self._first_copy(publisher, msg_id):
                if forward and acl is None:  # ACKed once stored: the archive drops it
                    effects.emit(Forward(publisher.tenant, topic, frame[offset:], flags,
                                         msg_id, publisher.name, True, conn))
                else:
                    effects.send(conn, encode_ack(msg_id))
                return
        patterns: Sequence[str] = self.index.match(topic) if self._patterns else ()
        seq = 0
        if cluster is not None:  # the cluster's archive keeps what is kept
            if forward and acl is None:
                kept = cluster.kept(publisher.tenant, topic, qos)
        elif self._retro and self.index.archived(topic, patterns):
            seq = self.archive.append(topic, flags, msg_id, frame[offset:], publisher.name,
                                      effects.wall)
            stats.stored_messages += 1
            stats.stored_bytes += len(frame) - offset
        if qos and msg_id is not None and not (forward and kept):
            effects.send(conn, encode_ack(msg_id))  # else once the archive stored it
        subscribers: Collection[Twin] | None = self._exact.get(topic)
        if subscribers and acl is not None:
            subscribers = self.guard.only_allowed(subscribers, acl)
        if subscribers:
            self._deliver_exact(publisher, subscribers, topic, frame, offset, qos, seq, msg_id,
                                kept)
        if patterns:
            self._deliver_patterns(publisher, topic, patterns, frame[offset:], seq, acl, kept)
        if forward:
            effects.emit(Forward(publisher.tenant, topic, frame[offset:], flags, msg_id,
                                 publisher.name, kept, conn))

    def _deliver_exact(self, publisher: Twin, subscribers: Collection[Twin], topic: str,
                       frame: bytes, offset: int, qos: int, seq: int,
                       msg_id: bytes | None, kept: bool) -> None:
        """Deliver a publication to the subscribers of its exact topic."""
        effects = self.effects
        tenant = publisher.tenant
        legacy_frame: bytes | None = None
        dirty = effects.dirty
        max_queued = self._max_queued
        for twin in subscribers:
            sub_conn = twin.conn
            if (sub_conn is None or twin is publisher or not twin.reactive
                    or twin.tenant != tenant):
                continue
            if seq and twin.replaying:
                continue  # the replay reaches it, in order
            if kept and twin.named and twin.subs.get(topic, 0) > 0:
                continue  # it follows the cluster's archive
            if sub_conn.id_len == 16:
                if legacy_frame is None:
                    legacy_frame = encode_pub_raw(topic, frame[offset:])
                effects.deliver(twin, sub_conn, legacy_frame, 0, seq, None)
            elif qos or (seq and twin.named) or sub_conn.closed:
                effects.deliver(twin, sub_conn, frame, qos, seq, msg_id)
            else:  # plain QoS0 delivery, inlined: the most frequent case by far
                out = sub_conn.out
                out.append(frame)
                if len(out) == 1:
                    dirty[sub_conn] = None
                elif len(out) == max_queued + 1:
                    effects.close(sub_conn, CLOSE_SLOW_CONSUMER, "too many queued messages")

    def _first_copy(self, publisher: Twin, msg_id: bytes) -> bool:
        """Note a QoS2 id of ``publisher``; false if it is a resend of one noted before.

        The ids of a named publisher are stored with the publication (durable
        before its ACK leaves), so a resend after a broker restart is caught too.
        The window is bounded in size (``qos2_dedup_size``) and age (``qos2_dedup_age``).
        """
        seen = publisher.qos2_seen
        if msg_id in seen:
            return False
        now = self.effects.now
        seen[msg_id] = now
        store = self.archive.store if publisher.named else None
        if store is not None:
            store.qos2_received(publisher.name, msg_id)
        config = self.effects.config
        expired = now - config.qos2_dedup_age
        while seen and (len(seen) > config.qos2_dedup_size
                        or next(iter(seen.values())) < expired):
            oldest, _ = seen.popitem(last=False)
            if store is not None:
                store.qos2_released(publisher.name, oldest)
        return True

    def cluster_acked(self, conn: Connection, msg_id: bytes) -> None:
        """The cluster's archive stored a QoS1/2 publication of ``conn``: ACK it now."""
        if not conn.closed:
            self.effects.send(conn, encode_ack(msg_id))

    def release_ack2(self, twin: Twin, count: int) -> None:
        """The cluster stored the mark of ``twin`` as it was when ``count`` ACK2s were
        held: send them."""
        held = twin.held_ack2
        conn = twin.conn
        count = min(count, len(held))
        if conn is not None and not conn.closed:
            for msg_id in held[:count]:
                self.effects.send(conn, encode_ack2(msg_id))
        del held[:count]

    def ack2(self, conn: Connection, msg_id: bytes) -> None:
        """ACK2 of a QoS2 publication: its resends are no longer expected."""
        twin = conn.twin
        if msg_id in twin.qos2_seen:
            del twin.qos2_seen[msg_id]
            if twin.named:
                self.archive.store.qos2_released(twin.name, msg_id)

    def _deliver_patterns(self, publisher: Twin, topic: str, patterns: Sequence[str],
                          payload: bytes, seq: int, acl: set[str] | None,
                          kept: bool) -> None:
        allowed = self.guard.allowed
        for pattern in patterns:
            frame = encode_pattern_pub(pattern, topic, payload)
            for twin in self.index.pattern_subscribers(pattern):
                conn = twin.conn
                if (conn is None or twin is publisher or not twin.reactive
                        or twin.tenant != publisher.tenant or (twin.replaying and seq)
                        or (acl is not None and not allowed(conn, acl))
                        or (kept and twin.named and twin.subs.get(pattern, 0) > 0)):
                    continue
                self.effects.deliver(twin, conn, frame, 0, seq, None)

    def ack(self, conn: Connection, msg_id: bytes) -> None:
        """ACK of a QoS1/2 delivery (answered with ACK2 for QoS2)."""
        twin = conn.twin
        inflight = twin.pop_inflight(msg_id)
        if inflight is None:
            return
        marked = bool(inflight.seq) and twin.complete(inflight.seq)
        if inflight.qos2:
            held = twin.held_ack2
            if marked and self.cluster is not None and len(held) < self.effects.config.max_inflight:
                held.append(msg_id)  # the subscriber forgets the id: the mark must be stored
            else:
                self.effects.send(conn, encode_ack2(msg_id))
        if twin.replaying and not conn.waiting_drain:
            self.replayer.resume(twin)

    def resend(self, twin: Twin, msg_id: bytes, inflight: Inflight, now: float) -> None:
        """The ACK of ``inflight`` is late: send it again, or give up after the retries."""
        conn = twin.conn
        if inflight.retries <= 0 or conn is None:
            twin.pop_inflight(msg_id)  # stays in the archive for a later replay
            return
        inflight.retries -= 1
        effects = self.effects
        effects.stats.resends["qos2" if inflight.qos2 else "qos1"] += 1
        inflight.deadline = now + effects.config.ack_timeout
        effects.timers.delivery(twin, msg_id, inflight)
        effects.send(conn, inflight.frame)


__all__ = ["Fanout"]
