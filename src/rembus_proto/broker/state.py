"""Connection and twin state: what the broker knows of each peer and component."""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque

from ..store import StoredMessage, TwinRecord, TwinUpdate
from ..topics import tenant


class Call:
    """An RPC forwarded to an exposer, waiting for its RESPONSE."""

    __slots__ = ("deadline", "orig_id", "requester", "started", "topic")

    def __init__(self, requester: Connection, orig_id: bytes, topic: str, deadline: float,
                 started: float = 0.0) -> None:
        self.requester = requester
        self.orig_id = orig_id
        self.topic = topic
        self.deadline = deadline
        self.started = started
        """When it was forwarded (monotonic seconds)."""


class Inflight:
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
        "held_ack2",
        "inflight",
        "inflight_bytes",
        "mark",
        "name",
        "named",
        "open_heap",
        "open_seqs",
        "qos2_seen",
        "reactive",
        "replay_cursor",
        "replay_last",
        "replay_rows",
        "replay_token",
        "replay_waiting",
        "replaying",
        "saved",
        "since",
        "sink",
        "subs",
        "tenant",
        "touched_exposed",
        "touched_subs",
    )

    def __init__(self, name: str, named: bool, record: TwinRecord | None = None,
                 sink: dict[Twin, None] | None = None) -> None:
        self.name = name
        self.named = named
        self.tenant = tenant(name)
        self.conn: Connection | None = None
        self.reactive = False
        self.subs: dict[str, float] = dict(record.subscriptions) if record else {}
        self.exposed: dict[str, None] = dict.fromkeys(record.exposed) if record else {}
        """Exposed topics, in the order they were exposed (a dict: O(1) membership)."""
        self.mark = record.mark if record else 0
        self.done_above: set[int] = set(record.done_above) if record else set()
        self.since: dict[str, int] = dict(record.since) if record else {}
        self.inflight: dict[bytes, Inflight] = {}
        self.inflight_bytes = 0
        """Bytes of the frames in ``inflight`` (kept to be sent again)."""
        self.open_seqs: set[int] = set()
        """Archive seqs of the deliveries in ``inflight``."""
        self.open_heap: list[int] = []
        """``open_seqs`` and seqs closed since, lowest first (closed ones are skipped)."""
        self.qos2_seen: OrderedDict[bytes, float] = OrderedDict()
        self.held_ack2: list[bytes] = []
        """ACK2s waiting until the cluster stored the mark they moved (in a cluster)."""
        self.replaying = False
        self.replay_cursor = 0
        self.replay_token = 0
        """Tells the answer to the current replay request from stale ones."""
        self.replay_waiting = False
        """A replay request is out and not answered yet."""
        self.replay_rows: deque[StoredMessage] = deque()
        """Rows of the last replay batch not sent yet (bounded by the batch size)."""
        self.replay_last = False
        """The last replay batch was the end of the archive."""
        self.dirty = False
        self.saved = record is not None
        """The store has a record of it: changes are saved as updates."""
        self.touched_subs: dict[str, None] = {}
        """Subscriptions (and their ``since``) changed since the last save."""
        self.touched_exposed: dict[str, None] = {}
        """Exposed topics changed since the last save, in the order of the changes."""
        self.sink = sink
        """Where the twin files itself when it becomes dirty: the broker saves only those."""

    def record(self) -> TwinRecord:
        """The persistent part."""
        return TwinRecord(self.name, dict(self.subs), list(self.exposed), self.mark,
                          sorted(self.done_above), dict(self.since))

    def update(self) -> TwinUpdate:
        """What changed since the last save (then forgotten)."""
        subs, since = self.subs, self.since
        update = TwinUpdate(self.name, self.mark, sorted(self.done_above),
                            {topic: subs.get(topic) for topic in self.touched_subs},
                            {topic: since.get(topic) for topic in self.touched_subs},
                            {topic: topic in self.exposed for topic in self.touched_exposed})
        self.touched_subs = {}
        self.touched_exposed = {}
        return update

    def retroactive_topics(self) -> dict[str, float]:
        """Subscriptions that want stored messages: topic -> ``msg_from``."""
        return {topic: window for topic, window in self.subs.items() if window > 0}

    def retroactive(self, topic: str) -> bool:
        """Whether the subscription to ``topic`` wants stored messages."""
        return self.named and self.subs[topic] > 0

    def add_inflight(self, msg_id: bytes, inflight: Inflight) -> None:
        """A QoS1/2 delivery now waits for its ACK."""
        self.pop_inflight(msg_id)  # sent again: replaces the earlier copy
        self.inflight[msg_id] = inflight
        self.inflight_bytes += len(inflight.frame)
        if inflight.seq:
            self.open_seqs.add(inflight.seq)
            heapq.heappush(self.open_heap, inflight.seq)
            if len(self.open_heap) > 2 * len(self.open_seqs) + 64:  # bound the stale ones
                self.open_heap = sorted(self.open_seqs)

    def pop_inflight(self, msg_id: bytes) -> Inflight | None:
        """The delivery ``msg_id`` no longer waits (acknowledged or given up)."""
        inflight = self.inflight.pop(msg_id, None)
        if inflight is not None:
            self.inflight_bytes -= len(inflight.frame)
            # its timer entry stays on the heap until due: it must not keep the frame
            inflight.frame = b""
            if inflight.seq:
                self.open_seqs.discard(inflight.seq)
        return inflight

    def clear_inflight(self) -> None:
        """No delivery waits any more (the connection is gone)."""
        for inflight in self.inflight.values():
            inflight.frame = b""
        self.inflight.clear()
        self.held_ack2.clear()
        self.inflight_bytes = 0
        self.open_seqs.clear()
        self.open_heap.clear()

    def _lowest_open(self) -> int | None:
        heap = self.open_heap
        while heap and heap[0] not in self.open_seqs:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def complete(self, seq: int) -> bool:
        """A delivery of archive entry ``seq`` is done (written or acknowledged); false
        when it was already."""
        if seq <= self.mark or seq in self.done_above:
            return False
        lowest_open = self._lowest_open()
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
        if not self.dirty:
            self._dirty()
        return True

    def changed(self, subscription: str | None = None, exposed: str | None = None) -> None:
        """Its persistent part changed (the subscription to, or the exposure of, that
        topic): it is saved at the next flush."""
        if not self.named:
            return
        if subscription is not None:
            self.touched_subs[subscription] = None
        if exposed is not None:
            self.touched_exposed.pop(exposed, None)  # moved last, as in ``exposed``
            self.touched_exposed[exposed] = None
        if not self.dirty:
            self._dirty()

    def _dirty(self) -> None:
        self.dirty = True
        if self.sink is not None:
            self.sink[self] = None

    def __repr__(self) -> str:
        return f"Twin({self.name!r})"


class Connection:
    """One transport connection as the router sees it."""

    __slots__ = ("calls", "calls_made", "closed", "held", "id_len", "out", "peer", "twin",
                 "waiting_drain", "written")

    def __init__(self, twin: Twin, peer: str) -> None:
        self.twin = twin
        self.peer = peer
        self.out: list[bytes] = []
        self.written: list[int] = []
        self.calls: dict[bytes, Call] = {}
        self.calls_made = 0
        self.id_len = 0
        self.closed = False
        self.waiting_drain = False
        self.held: list[bytes] | None = None
        """Input waiting for a key lookup (the first one asked for it); ``None``: none."""

    @property
    def legacy(self) -> bool:
        """A 0.1.x peer (16-byte ids): gets plain QoS0 PUBs and null login data."""
        return self.id_len == 16

    def learn_generation(self, msg_id: bytes) -> None:
        """The first id a peer sends tells its generation (8 or 16 bytes)."""
        if not self.id_len:
            self.id_len = len(msg_id)

    def __repr__(self) -> str:
        return f"Connection({self.twin.name!r}, {self.peer!r})"


__all__ = ["Call", "Connection", "Inflight", "Twin"]
