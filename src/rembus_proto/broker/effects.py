"""The one place that queues the router's output: frames, closes, requests.

Every part of the broker writes through one :class:`Effects`: frames go to a
connection's queue, orders and data requests to the event list. The facade
hands both to the driver (:meth:`Router.data_to_send`, :meth:`Router.events`).
"""

from __future__ import annotations

from typing import Any

from ..constants import QOS2
from .actions import Close, Event, Skipped
from .config import CLOSE_SLOW_CONSUMER, RouterConfig
from .frames import encode_reply
from .state import Connection, Inflight, Twin
from .stats import Stats
from .timers import Timers


class Effects:
    """Output queues of a router, and the times of the current input."""

    def __init__(self, config: RouterConfig, now: float, wall: float) -> None:
        self.config = config
        self.now = now
        """Monotonic seconds: every deadline is on this clock."""
        self.wall = wall
        """Wall-clock seconds since the epoch: what is stored is stamped with it."""
        self.dirty: dict[Connection, None] = {}
        """Connections with queued frames, in the order they got their first one."""
        self.pending: list[Event] = []
        self.skipped = 0
        """Messages never sent because they were over the size limit."""
        self.timers = Timers()
        """Deadlines of QoS deliveries and forwarded calls."""
        self.stats = Stats(config.stats_max_labels)
        """What the broker counts (read by the driver)."""

    def at(self, now: float, wall: float | None) -> None:
        """Set the times of the input being processed (``wall`` defaults to ``now``)."""
        self.now = now
        self.wall = now if wall is None else wall

    def send(self, conn: Connection, frame: bytes) -> None:
        """Queue ``frame`` for ``conn``; close it when it has too much queued."""
        if conn.closed:
            return
        out = conn.out
        out.append(frame)
        if len(out) == 1:
            self.dirty[conn] = None
        elif len(out) == self.config.max_queued + 1:
            self.close(conn, CLOSE_SLOW_CONSUMER, "too many queued messages")

    def reply(self, conn: Connection, msg_id: bytes, status: int, value: Any = None) -> None:
        """Answer the request ``msg_id`` of ``conn``."""
        self.send(conn, encode_reply(msg_id, status, value))

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Ask the driver to close ``conn`` once its queued output is written."""
        self.pending.append(Close(conn, code, reason))

    def emit(self, event: Event) -> None:
        """Queue an order or a data request for the driver."""
        self.pending.append(event)

    def deliver(self, twin: Twin, conn: Connection, frame: bytes, qos: int, seq: int,
                msg_id: bytes | None) -> None:
        """Send a publication to a subscriber, tracking its ACK (QoS1/2) or its mark."""
        config = self.config
        if conn.legacy and len(frame) > config.legacy_max_message:
            return  # the peer would drop its connection: it only misses this message
        if len(frame) > config.limits.max_message_size:  # grown by its envelope
            self.skipped += 1
            self.pending.append(Skipped(conn, len(frame), config.limits.max_message_size))
            if seq and twin.named:
                twin.complete(seq)  # never deliverable: not owed in a replay either
            return
        if qos and msg_id is not None:
            if len(twin.inflight) >= config.max_inflight:
                self.close(conn, CLOSE_SLOW_CONSUMER, "too many unacknowledged messages")
                return
            inflight = Inflight(frame, seq if twin.named else 0, qos == QOS2,
                                self.now + config.ack_timeout, config.send_retries)
            twin.add_inflight(msg_id, inflight)
            self.timers.delivery(twin, msg_id, inflight)
        elif seq and twin.named:
            conn.written.append(seq)
        self.send(conn, frame)

    def data_to_send(self) -> list[tuple[Connection, list[bytes]]]:
        """Frames to write, per connection; delivery marks advance as they are taken."""
        dirty = self.dirty
        if not dirty:
            return []
        self.dirty = {}
        batches: list[tuple[Connection, list[bytes]]] = []
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
            batches.append((conn, frames))
        return batches

    def events(self) -> list[Event]:
        """Orders and data requests queued since the last call."""
        events, self.pending = self.pending, []
        return events


__all__ = ["Effects"]
