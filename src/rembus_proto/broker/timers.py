"""Deadlines of the broker on one heap: QoS retransmissions and forwarded calls.

A timer tick costs what is due, not what is open: each QoS1/2 delivery and
each forwarded RPC pushes its deadline once (again when a delivery is sent
again). Nothing is removed when an ACK or a RESPONSE arrives (lazy
deletion): a popped entry whose delivery or call is gone, or whose deadline
moved, is skipped. The heap is rebuilt without such entries when it has
grown to twice what was alive at the last rebuild (plus a margin), so its
size stays within a constant factor of the open deliveries and calls, and
the rebuild costs O(1) per push amortized.
"""

from __future__ import annotations

import heapq
import itertools

from .state import Call, Connection, Inflight, Twin

COMPACT_MARGIN = 1024
"""Entries the heap may hold beyond twice the live ones before it is rebuilt."""

Entry = tuple[float, int, Twin | Connection, bytes, Inflight | Call]


def alive(entry: Entry) -> bool:
    """Whether the delivery or call of ``entry`` still waits for that deadline."""
    deadline, _, owner, key, item = entry
    if isinstance(item, Call):
        assert isinstance(owner, Connection)
        return owner.calls.get(key) is item
    assert isinstance(owner, Twin)
    return owner.inflight.get(key) is item and item.deadline == deadline


class Timers:
    """A heap of deadlines with lazy deletion (see the module docstring)."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._order = itertools.count()
        self._compact_at = COMPACT_MARGIN

    def __len__(self) -> int:
        """Entries held, stale ones included."""
        return len(self._heap)

    def delivery(self, twin: Twin, msg_id: bytes, inflight: Inflight) -> None:
        """``inflight`` (``twin.inflight[msg_id]``) is resent at its deadline."""
        self._push((inflight.deadline, next(self._order), twin, msg_id, inflight))

    def call(self, exposer: Connection, call_id: bytes, call: Call) -> None:
        """``call`` (``exposer.calls[call_id]``) is forgotten at its deadline."""
        self._push((call.deadline, next(self._order), exposer, call_id, call))

    def next_deadline(self) -> float | None:
        """The earliest deadline held (perhaps of a stale entry: a spare wake-up)."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[Entry]:
        """Pop the live entries whose deadline is ``now`` or before."""
        heap = self._heap
        out: list[Entry] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if alive(entry):
                out.append(entry)
        return out

    def _push(self, entry: Entry) -> None:
        heap = self._heap
        heapq.heappush(heap, entry)
        if len(heap) >= self._compact_at:
            live = [e for e in heap if alive(e)]
            heapq.heapify(live)
            self._heap = live
            self._compact_at = 2 * len(live) + COMPACT_MARGIN


__all__ = ["COMPACT_MARGIN", "Timers", "alive"]
