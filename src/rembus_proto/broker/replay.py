"""Stored messages: the archive sequence and the replay to returning subscribers.

A replay never reads the store itself: it emits a
:class:`~rembus_proto.broker.actions.NeedReplay` request and goes on when the
driver hands the batch to :meth:`Replayer.batch`. One request per twin is out
at a time; a token tells the current one from answers that come too late
(the twin went away, or the replay started over).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..constants import QOS_MASK
from ..store import Store, StoredMessage
from ..topics import is_pattern, tenant
from .actions import NeedReplay
from .auth import Guard
from .effects import Effects
from .frames import encode_pattern_pub, encode_pub_flags_raw, encode_pub_raw
from .index import SubscriptionIndex
from .state import Connection, Twin


class Archive:
    """Numbers stored publications and hands them to the store."""

    def __init__(self, store: Store, last_seq: int, prune_every: int = 0,
                 prune: Callable[[], None] | None = None) -> None:
        self.store = store
        self.last_seq = last_seq
        """The seq of the newest stored message."""
        self.prune_every = prune_every
        """Payload bytes stored after which ``prune`` is called (0: never), so that the
        byte budgets of the retention hold between two timed prunes too."""
        self._prune = prune
        self.unpruned = 0
        """Payload bytes stored since the last prune."""

    def append(self, topic: str, flags: int, msg_id: bytes | None, payload: bytes,
               publisher: str, wall: float) -> int:
        """Store a publication received at ``wall``; return its seq."""
        self.last_seq += 1
        self.store.append(StoredMessage(self.last_seq, int(wall * 1e9), topic, flags, msg_id,
                                        payload, publisher))
        self.unpruned += len(payload)
        if self.prune_every and self.unpruned >= self.prune_every and self._prune is not None:
            self._prune()
        return self.last_seq


class Replayer:
    """Sends stored messages to a named subscriber that comes back (reactive)."""

    def __init__(self, effects: Effects, index: SubscriptionIndex, guard: Guard) -> None:
        self.effects = effects
        self.index = index
        self.guard = guard
        self.follow = False
        """A replay never ends: it follows the archive (a broker joined in a cluster,
        whose driver answers a :class:`NeedReplay` once there is something to read)."""

    def start(self, twin: Twin) -> None:
        """Replay from the twin's mark, if it has retroactive subscriptions."""
        if not twin.named or twin.conn is None or not twin.retroactive_topics():
            return
        twin.replaying = True
        twin.replay_cursor = twin.mark
        twin.replay_token += 1
        twin.replay_waiting = False
        twin.replay_rows.clear()
        self.resume(twin)

    def stop(self, twin: Twin) -> None:
        """Stop replaying (live delivery from now on); a late answer is ignored."""
        twin.replaying = False
        twin.replay_waiting = False
        twin.replay_rows.clear()

    def resume(self, twin: Twin) -> None:
        """Go on with the rows of the last batch, or ask for the next batch (unless a
        request is already out)."""
        if not twin.replaying or twin.replay_waiting:
            return
        if twin.replay_rows:
            self._send_rows(twin)
            return
        retro = twin.retroactive_topics()
        if self.follow and not retro:
            twin.replaying = False  # nothing to follow: starts again with a subscription
            return
        exact = None if any(is_pattern(t) for t in retro) else set(retro)
        twin.replay_waiting = True
        config = self.effects.config
        self.effects.emit(NeedReplay(twin, twin.replay_token, twin.replay_cursor, exact,
                                     config.replay_batch, config.replay_batch_bytes))

    def batch(self, twin: Twin, token: int, batch: list[StoredMessage]) -> None:
        """The driver's answer to a :class:`NeedReplay`: send what the twin is owed."""
        conn = twin.conn
        if token != twin.replay_token or not twin.replay_waiting or conn is None:
            return  # stale: the twin left, or the replay started over
        twin.replay_waiting = False
        if not twin.replaying:
            return
        twin.replay_rows.extend(batch)
        config = self.effects.config
        # Fewer rows than asked for is the end of the archive, unless the byte budget
        # cut the batch: only a batch that the largest message would still fit into
        # cannot have been cut; otherwise the next (maybe empty) batch tells.
        budget = config.replay_batch_bytes
        twin.replay_last = not batch or (
            len(batch) < config.replay_batch
            and (budget is None or sum(len(stored.payload) for stored in batch)
                 + config.limits.max_message_size <= budget))
        self._send_rows(twin)

    def _send_rows(self, twin: Twin) -> None:
        """Send the rows kept from the last batch while the in-flight window has room.

        QoS1/2 rows stop at the window and go on as ACKs come back, from the
        rows kept: one store query serves a whole batch.
        """
        conn = twin.conn
        assert conn is not None
        rows = twin.replay_rows
        retro = twin.retroactive_topics()
        now_ns = int(self.effects.wall * 1e9)
        config = self.effects.config
        window = config.max_inflight // 2
        budget = config.replay_batch_bytes
        while rows:
            if len(twin.inflight) >= window or (budget is not None
                                                and twin.inflight_bytes >= budget):
                return  # resumes as ACKs come back
            stored = rows.popleft()
            twin.replay_cursor = stored.seq
            if stored.seq <= twin.mark or stored.seq in twin.done_above:
                continue
            if self._wants(twin, conn, retro, stored, now_ns):
                self._send_stored(twin, conn, stored)
        if twin.replay_last:
            if self.follow:
                self.resume(twin)  # the driver answers once there is more
                return
            twin.replaying = False  # caught up: live delivery from now on
            return
        conn.waiting_drain = True

    def _owed_as(self, twin: Twin, retro: dict[str, float], topic: str) -> str:
        """The subscription of ``twin`` through which ``topic`` is owed ('' if none)."""
        if topic in retro:
            return topic
        matched = self.index.match(topic)
        return next((p for p in retro if is_pattern(p) and p in matched), "")

    def _wants(self, twin: Twin, conn: Connection, retro: dict[str, float],
               stored: StoredMessage, now_ns: int) -> bool:
        if tenant(stored.publisher) != twin.tenant or stored.publisher == twin.name:
            return False
        if self.guard.private and not self.guard.permits(conn, stored.topic):
            return False
        topic = self._owed_as(twin, retro, stored.topic)
        if not topic:
            return False
        if stored.seq <= twin.since.get(topic, 0):
            return False  # published before this subscription was made
        window = retro[topic]
        return window == math.inf or stored.recv_ns > now_ns - window

    def _send_stored(self, twin: Twin, conn: Connection, stored: StoredMessage) -> None:
        topic = stored.topic
        deliver = self.effects.deliver
        if topic not in twin.subs and not conn.legacy:  # reached through a pattern
            pattern = self._owed_as(twin, twin.subs, topic)
            deliver(twin, conn, encode_pattern_pub(pattern, topic, stored.payload), 0,
                    stored.seq, None)
            return
        if conn.legacy or stored.msg_id is None:
            deliver(twin, conn, encode_pub_raw(topic, stored.payload), 0, stored.seq, None)
            return
        deliver(twin, conn, encode_pub_flags_raw(stored.flags, stored.msg_id, topic,
                                                 stored.payload),
                stored.flags & QOS_MASK, stored.seq, stored.msg_id)


__all__ = ["Archive", "Replayer"]
