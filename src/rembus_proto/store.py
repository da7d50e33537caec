"""The storage port of the broker's router, and an in-memory implementation.

The router never imports a database: it calls a :class:`Store`. The broker
wires in a SQLite store; tests use :class:`MemoryStore`. Writes may be
staged by the store and made durable by the driver (``commit``) once per
event-loop turn, before any output of that turn is written to a socket.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .values import typed_equality


class StoredMessage(NamedTuple):
    """A publication kept for subscribers that are away (a named tuple: one is
    built for every retroactive publication)."""

    seq: int
    """Position in the archive: strictly increasing in publish order."""
    recv_ns: int
    """Wall-clock receive time in nanoseconds."""
    topic: str
    flags: int
    """QoS/SLOT bits of the original type byte."""
    msg_id: bytes | None
    payload: bytes
    """The payload exactly as received."""
    publisher: str


typed_equality(StoredMessage)


class Pruned(NamedTuple):
    """Messages of one topic dropped by a prune, and why."""

    topic: str
    dropped: int
    reason: str
    """``"age"`` (received before the limit), ``"count"`` (beyond the newest kept),
    ``"bytes"`` (the topic's budget) or ``"total"`` (the budget of all topics)."""


@dataclass(slots=True)
class TwinRecord:
    """What the broker remembers of a named component between connections."""

    name: str
    subscriptions: dict[str, float] = field(default_factory=dict)
    """Topic (or pattern) -> ``msg_from`` (0: live only, inf: all since the mark, else ns)."""
    exposed: list[str] = field(default_factory=list)
    mark: int = 0
    """Every archived message up to this seq is done for this component."""
    done_above: list[int] = field(default_factory=list)
    """Seqs above ``mark`` already delivered (skipped on replay)."""
    since: dict[str, int] = field(default_factory=dict)
    """Topic -> archive seq when the subscription was made: older messages are not owed."""


@dataclass(slots=True)
class TwinUpdate:
    """What changed in a stored twin since it was last saved: a store writes only that,
    so a change costs the same whatever the twin holds."""

    name: str
    mark: int
    done_above: list[int]
    subscriptions: dict[str, float | None] = field(default_factory=dict)
    """Topic -> new ``msg_from``, or ``None``: unsubscribed."""
    since: dict[str, int | None] = field(default_factory=dict)
    """Topic -> new seq, or ``None``: removed."""
    exposed: dict[str, bool] = field(default_factory=dict)
    """Topic -> ``True``: exposed (last in the order), ``False``: not any more; in the
    order the changes were made."""

    def merge(self, later: TwinUpdate) -> None:
        """Add the changes of ``later`` (made after these)."""
        self.mark = later.mark
        self.done_above = later.done_above
        self.subscriptions.update(later.subscriptions)
        self.since.update(later.since)
        for topic, present in later.exposed.items():
            self.exposed.pop(topic, None)
            self.exposed[topic] = present

    def apply(self, record: TwinRecord) -> None:
        """Change ``record`` (costs what changed, plus the exposed list when that changed)."""
        record.mark = self.mark
        record.done_above = list(self.done_above)
        _apply(record.subscriptions, self.subscriptions)
        _apply(record.since, self.since)
        if self.exposed:
            exposed = dict.fromkeys(record.exposed)
            for topic, present in self.exposed.items():
                exposed.pop(topic, None)
                if present:
                    exposed[topic] = None
            record.exposed = list(exposed)


def _apply(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


class Store(Protocol):
    """Narrow persistence interface used by the router."""

    def load(self) -> tuple[int, list[TwinRecord]]:
        """Return the last archived seq and every stored twin."""

    def save_twin(self, twin: TwinRecord) -> None:
        """Insert or replace a twin."""

    def update_twin(self, update: TwinUpdate) -> None:
        """Apply ``update`` to a twin saved before (durable at the next ``commit``)."""

    def delete_twin(self, name: str) -> None:
        """Forget a twin."""

    def append(self, message: StoredMessage) -> None:
        """Archive a message (durable at the next ``commit``)."""

    def replay(self, after_seq: int, topics: Collection[str] | None,
               limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        """Up to ``limit`` archived messages with ``seq > after_seq`` in seq order.

        ``topics`` restricts the result to those exact topics; ``None`` means all.
        With ``max_bytes`` the payloads add up to at most that much, except that
        a first message larger than that is returned alone.
        """

    def prune(self, min_recv_ns: int, max_per_topic: int,
              report: list[Pruned] | None = None, *, max_topic_bytes: int | None = None,
              max_total_bytes: int | None = None) -> int:
        """Drop messages received before ``min_recv_ns``, all but the newest
        ``max_per_topic`` of each topic, the oldest of a topic while its payloads
        add up to more than ``max_topic_bytes``, then the oldest of all while
        they add up to more than ``max_total_bytes``; return how many were
        dropped, and add what was dropped, per topic and reason, to ``report``."""

    def qos2_received(self, publisher: str, msg_id: bytes) -> None:
        """Remember that the QoS2 publication ``msg_id`` of ``publisher`` arrived
        (durable at the next ``commit``): a resend of it is a duplicate."""

    def qos2_released(self, publisher: str, msg_id: bytes) -> None:
        """Forget a QoS2 id (its ACK2 came, or it left the dedup window)."""

    def load_qos2(self) -> list[tuple[str, bytes]]:
        """The remembered QoS2 ids: (publisher, msg_id), oldest first."""

    def commit(self) -> None:
        """Make every staged write durable."""


class MemoryStore(Store):
    """A :class:`Store` in memory, for tests and brokers without persistence."""

    def __init__(self) -> None:
        self.twins: dict[str, TwinRecord] = {}
        self.messages: list[StoredMessage] = []
        self._seqs: list[int] = []
        self._last_seq = 0
        self.qos2: dict[tuple[str, bytes], None] = {}
        self.commits = 0

    def load(self) -> tuple[int, list[TwinRecord]]:
        return self._last_seq, [_copy(t) for t in self.twins.values()]

    def save_twin(self, twin: TwinRecord) -> None:
        self.twins[twin.name] = _copy(twin)

    def update_twin(self, update: TwinUpdate) -> None:
        record = self.twins.get(update.name)
        if record is not None:
            update.apply(record)

    def delete_twin(self, name: str) -> None:
        self.twins.pop(name, None)
        for key in [k for k in self.qos2 if k[0] == name]:
            del self.qos2[key]

    def append(self, message: StoredMessage) -> None:
        self.messages.append(message)
        self._seqs.append(message.seq)
        self._last_seq = message.seq

    def replay(self, after_seq: int, topics: Collection[str] | None,
               limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        start = bisect.bisect_right(self._seqs, after_seq)
        out: list[StoredMessage] = []
        size = 0
        for message in self.messages[start:]:
            if topics is None or message.topic in topics:
                size += len(message.payload)
                if out and max_bytes is not None and size > max_bytes:
                    break
                out.append(message)
                if len(out) >= limit:
                    break
        return out

    def prune(self, min_recv_ns: int, max_per_topic: int,
              report: list[Pruned] | None = None, *, max_topic_bytes: int | None = None,
              max_total_bytes: int | None = None) -> int:
        per_topic: dict[str, int] = {}
        topic_bytes: dict[str, int] = {}
        full: set[str] = set()
        total = 0
        keep: list[StoredMessage] = []
        gone: dict[tuple[str, str], int] = {}
        for message in reversed(self.messages):  # newest first, rules in the order documented
            topic, size = message.topic, len(message.payload)
            count = per_topic.get(topic, 0)
            if message.recv_ns < min_recv_ns:
                reason = "age"
            elif count >= max_per_topic:
                reason = "count"
            else:
                per_topic[topic] = count + 1
                kept = topic_bytes.get(topic, 0) + size
                if topic in full or (max_topic_bytes is not None and kept > max_topic_bytes):
                    full.add(topic)  # the older ones of the topic go too
                    reason = "bytes"
                elif total < 0 or (max_total_bytes is not None
                                   and total + size > max_total_bytes):
                    total = -1  # every older one goes too
                    topic_bytes[topic] = kept
                    reason = "total"
                else:
                    topic_bytes[topic] = kept
                    total += size
                    keep.append(message)
                    continue
            gone[topic, reason] = gone.get((topic, reason), 0) + 1
        if report is not None:
            report.extend(Pruned(topic, count, reason)
                          for (topic, reason), count in sorted(gone.items()))
        dropped = len(self.messages) - len(keep)
        keep.reverse()
        self.messages = keep
        self._seqs = [m.seq for m in keep]
        return dropped

    def qos2_received(self, publisher: str, msg_id: bytes) -> None:
        self.qos2[publisher, msg_id] = None

    def qos2_released(self, publisher: str, msg_id: bytes) -> None:
        self.qos2.pop((publisher, msg_id), None)

    def load_qos2(self) -> list[tuple[str, bytes]]:
        return list(self.qos2)

    def commit(self) -> None:
        self.commits += 1


def _copy(twin: TwinRecord) -> TwinRecord:
    return TwinRecord(twin.name, dict(twin.subscriptions), list(twin.exposed), twin.mark,
                      list(twin.done_above), dict(twin.since))
