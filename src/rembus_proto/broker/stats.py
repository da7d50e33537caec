"""What the broker counts: plain integers and dictionaries, read by the driver.

The router updates a :class:`Stats` as it works (a few integer additions per
message); a driver exports it when asked (Prometheus, the status page).
Tables keyed by a client-chosen string (topics, methods) hold at most
``max_labels`` keys: beyond it, everything new is counted under
:data:`OTHER`, so a client cannot make them grow without bound.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple, TypeVar

OTHER = "other"
"""The key under which topics and methods beyond ``max_labels`` are counted."""

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
"""Upper bounds (seconds) of the buckets of the RPC latency histograms."""

LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
"""Upper bounds (seconds) of the buckets of the event-loop lag histogram."""

RECENT_REFUSALS = 50
"""Refusals kept in :attr:`Stats.recent_refusals`, newest last."""

CLOSE_KINDS = ("component", "lost", "slow_consumer", "timeout", "auth", "overwritten",
               "shutdown", "protocol_error", "other")
"""The reasons a connection's close is counted under (see :func:`close_kind`)."""

_T = TypeVar("_T")


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and count."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        """``buckets[i]``: observations <= ``bounds[i]`` and above the bound before;
        the last one: above every bound."""
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        index = 0
        for bound in self.bounds:
            if value <= bound:
                break
            index += 1
        self.buckets[index] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` pairs, ending with ``(inf, count)``."""
        pairs: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


class Refusal(NamedTuple):
    """A connection refused or a login that failed."""

    wall: float
    """Wall-clock seconds since the epoch."""
    address: str
    kind: str
    reason: str


class Stats:
    """The broker's counters; the router and its driver add to them."""

    def __init__(self, max_labels: int = 100) -> None:
        self.max_labels = max_labels
        self.publications: dict[str, int] = {}
        """Publications received per topic (bounded: see :meth:`label`)."""
        self.calls: dict[str, int] = {}
        """RPC requests received per method (bounded)."""
        self.latency: dict[str, Histogram] = {}
        """Seconds from a forwarded request to its answer, per method (bounded)."""
        self.rpc_errors: dict[str, int] = {}
        """RPC requests answered with an error (or never answered: ``timeout``) per status."""
        self.resends: dict[str, int] = {"qos1": 0, "qos2": 0}
        """QoS deliveries sent again because their ACK was late."""
        self.stored_messages = 0
        self.stored_bytes = 0
        """Publications (and payload bytes) archived since the start."""
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened = 0
        """WebSocket connections opened since the start."""
        self.closed: dict[str, int] = dict.fromkeys(CLOSE_KINDS, 0)
        """Connections closed since the start, per :func:`close_kind`."""
        self.refusals: dict[str, int] = {}
        """Refused connections and failed logins, per kind (a fixed set of words)."""
        self.recent_refusals: deque[Refusal] = deque(maxlen=RECENT_REFUSALS)
        self.loop_lag = Histogram(LAG_BUCKETS)
        """How late the driver's periodic callback ran (seconds)."""

    def label(self, table: dict[str, _T], key: str) -> str:
        """``key`` if ``table`` has it or room for it, else :data:`OTHER`."""
        if key in table or len(table) < self.max_labels:
            return key
        return OTHER

    def published(self, topic: str) -> None:
        """A publication on ``topic`` was received."""
        table = self.publications
        if topic in table:
            table[topic] += 1
        else:
            key = self.label(table, topic)
            table[key] = table.get(key, 0) + 1

    def called(self, method: str) -> None:
        """An RPC request for ``method`` was received."""
        key = self.label(self.calls, method)
        self.calls[key] = self.calls.get(key, 0) + 1

    def answered(self, method: str, seconds: float, status: int) -> None:
        """A forwarded request for ``method`` was answered after ``seconds``."""
        key = self.label(self.latency, method)
        histogram = self.latency.get(key)
        if histogram is None:
            histogram = self.latency[key] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)
        if status:
            self.rpc_failed(str(status))

    def rpc_failed(self, status: str) -> None:
        """An RPC request failed with ``status`` (a status code, or ``timeout``); an
        exposer chooses the status it answers with, so these keys are bounded too."""
        key = self.label(self.rpc_errors, status)
        self.rpc_errors[key] = self.rpc_errors.get(key, 0) + 1

    def refused(self, wall: float, address: str, kind: str, reason: str) -> None:
        """A connection was refused, or a login failed; ``kind`` is one of a fixed set."""
        self.refusals[kind] = self.refusals.get(kind, 0) + 1
        self.recent_refusals.append(Refusal(wall, address, kind, reason))

    def connection_closed(self, reason: str, peer_fault: bool) -> None:
        """A WebSocket connection ended for ``reason`` (see :func:`close_kind`)."""
        self.closed[close_kind(reason, peer_fault)] += 1


def close_kind(reason: str, peer_fault: bool) -> str:
    """The word of :data:`CLOSE_KINDS` that sums up why a connection ended."""
    if reason.startswith("closed by the component"):
        return "component"
    if reason.startswith("connection lost"):
        return "lost"
    lowered = reason.lower()
    for kind, words in _CLOSE_WORDS:
        if any(word in lowered for word in words):
            return kind
    return "protocol_error" if peer_fault else "other"


_CLOSE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("slow_consumer", ("slow consumer", "too many queued", "too many unacknowledged")),
    ("auth", ("authenticat", "not registered", "challenge", "attestation", "signature")),
    ("timeout", (" within ", "timeout")),
    ("overwritten", ("overwritten",)),
    ("shutdown", ("shutting down",)),
)


__all__ = ["CLOSE_KINDS", "LAG_BUCKETS", "LATENCY_BUCKETS", "OTHER", "RECENT_REFUSALS",
           "Histogram", "Refusal", "Stats", "close_kind"]
