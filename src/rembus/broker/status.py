"""What the broker shows of itself over HTTP: ``/metrics``, ``/status``, ``/status.json``.

``/status`` is one self-contained page (``status.html``, no external
resource) that polls ``status.json`` every 2 s. When the broker runs
``--authenticated``, all three answer only to HTTP Basic credentials of an
admin: the user is an admin's name, the password the PIN of its tenant (the
REGISTER check, with its lockout). The README documents the JSON schema.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Any, Protocol

from rembus.version import __version__
from rembus_proto.broker import Router
from rembus_proto.broker.peer import BrokerPeer

METRICS_PATHS = frozenset({"/metrics"})
STATUS_PATHS = frozenset({"/status", "/status.json"})

MAX_ROWS = 1000
"""Rows of each table of ``status.json`` at most (the busiest first); the number of
rows left out is in ``omitted``."""

RATE_INTERVAL = 1.0
"""Seconds between two samples of the counters that rates are computed from."""

INSTALL_HINT = b"prometheus-client is not installed: pip install 'rembus[metrics]'\n"

Answer = tuple[int, str, bytes, list[tuple[str, str]]]
"""Status, content type, body and more headers of an HTTP answer."""

_TEXT = "text/plain; charset=utf-8"


class Broker(Protocol):
    """What the metrics and the status page read of a running broker."""

    router: Router
    started: float
    """Wall-clock start time."""
    pruned: dict[str, int]
    """Stored messages dropped by the retention rules, per rule."""
    dropped_json: int
    """Messages not sent to a JSON component because they cannot be written as JSON."""
    cluster: Any
    """The cluster driver (``status()``), ``None`` when the broker is alone."""

    def components(self) -> Iterator[tuple[BrokerPeer, float]]:
        """Each open WebSocket connection, and when it was accepted (wall clock)."""
        ...


def paths(*, metrics: bool, status: bool) -> frozenset[str]:
    """The paths answered here when ``/metrics`` and ``/status`` are turned on or off."""
    return (METRICS_PATHS if metrics else frozenset()) | (STATUS_PATHS if status else frozenset())


def answer(broker: Broker, path: str, headers: Sequence[tuple[str, str]],
           address: str = "") -> Answer:
    """The answer to ``GET path`` (one of :func:`paths`) from ``address``."""
    refused = _unauthorized(broker, headers, address)
    if refused is not None:
        return refused
    if path == "/metrics":
        try:
            from rembus.broker import metrics
        except ImportError:
            return 501, _TEXT, INSTALL_HINT, []
        return 200, metrics.CONTENT_TYPE, metrics.generate(broker), []
    if path == "/status":
        page = resources.files("rembus.broker").joinpath("status.html").read_bytes()
        return 200, "text/html; charset=utf-8", page, [("cache-control", "no-store")]
    body = json.dumps(status(broker), separators=(",", ":")).encode()
    return 200, "application/json", body, [("cache-control", "no-store")]


def _unauthorized(broker: Broker, headers: Sequence[tuple[str, str]],
                  address: str) -> Answer | None:
    """``None`` when the request may see the broker, else the 401 answer."""
    if not broker.router.config.authenticated:
        return None
    credentials = _basic_credentials(headers)
    if credentials is not None:
        name, password = credentials
        problem = broker.router.admin_password(name, password, time.monotonic())
        if problem is None:
            return None
        broker.router.stats.refused(time.time(), address, "admin_http", problem)
    return (401, _TEXT, b"admin credentials required (user: an admin, password: its tenant "
            b"PIN)\n", [("www-authenticate", 'Basic realm="rembus broker", charset="UTF-8"')])


def _basic_credentials(headers: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The user and password of an ``Authorization: Basic`` header, if well formed."""
    for name, value in headers:
        if name.lower() != "authorization":
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        return (user, password) if colon else None
    return None


class _Rates:
    """Per-key rates of counters between two samples at least :data:`RATE_INTERVAL` apart."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.counts: dict[str, int] = {}
        self.rates: dict[str, float] = {}

    def update(self, now: float, counts: dict[str, int]) -> dict[str, float]:
        if self.at is None:
            self.at, self.counts = now, dict(counts)
        elif now - self.at >= RATE_INTERVAL:
            elapsed = now - self.at
            self.rates = {key: (value - self.counts.get(key, 0)) / elapsed
                          for key, value in counts.items()}
            self.at, self.counts = now, dict(counts)
        return self.rates


_rates: weakref.WeakKeyDictionary[Broker, tuple[_Rates, _Rates]] = weakref.WeakKeyDictionary()


def _top(rows: Iterable[dict[str, Any]], key: str, omitted: dict[str, int],
         table: str) -> list[dict[str, Any]]:
    """The :data:`MAX_ROWS` rows with the largest ``key``; counts the others."""
    ordered = sorted(rows, key=lambda row: -row[key])
    omitted[table] = max(0, len(ordered) - MAX_ROWS)
    return ordered[:MAX_ROWS]


def status(broker: Broker) -> dict[str, Any]:
    """What ``GET /status.json`` answers (schema in the README)."""
    router = broker.router
    stats = router.stats
    now = time.monotonic()
    topic_rates, method_rates = _rates.setdefault(broker, (_Rates(), _Rates()))
    publication_rates = topic_rates.update(now, stats.publications)
    call_rates = method_rates.update(now, stats.calls)
    omitted: dict[str, int] = {}
    components = []
    for core, since in broker.components():
        conn = core.conn
        if conn is None:
            continue
        components.append({"name": conn.twin.name if conn.twin.named else None,
                           "address": core.name, "since": round(since, 3),
                           "messages_in": core.messages_in, "messages_out": core.messages_out})
    subscribers = router.subscriber_counts()
    topics = [{"topic": topic, "subscribers": subscribers.get(topic, 0),
               "publications": stats.publications.get(topic, 0),
               "rate": round(publication_rates.get(topic, 0.0), 3)}
              for topic in subscribers.keys() | stats.publications.keys()]
    exposers = router.exposers()
    methods = []
    for method in exposers.keys() | stats.calls.keys():
        histogram = stats.latency.get(method)
        latency = (round(1000 * histogram.total / histogram.count, 3)
                   if histogram is not None and histogram.count else None)
        methods.append({"method": method, "exposers": exposers.get(method, []),
                        "calls": stats.calls.get(method, 0),
                        "rate": round(call_rates.get(method, 0.0), 3), "latency_ms": latency})
    backlog = [{"component": name, "messages": behind}
               for name, behind in router.replay_backlog().items()]
    extra = {} if broker.cluster is None else {"cluster": broker.cluster.status()}
    return {
        "broker": {"name": router.config.name, "version": __version__,
                   "time": round(time.time(), 3),
                   "uptime": round(time.time() - broker.started, 3)},
        "totals": {"connections": len(router.connections), "messages_in": stats.messages_in,
                   "messages_out": stats.messages_out, "bytes_in": stats.bytes_in,
                   "bytes_out": stats.bytes_out},
        "components": _top(components, "messages_in", omitted, "components"),
        "topics": _top(topics, "publications", omitted, "topics"),
        "methods": _top(methods, "calls", omitted, "methods"),
        "backlog": _top(backlog, "messages", omitted, "backlog"),
        "refusals": [{"time": round(r.wall, 3), "address": r.address, "kind": r.kind,
                      "reason": r.reason} for r in reversed(stats.recent_refusals)],
        "omitted": omitted,
        **extra,
    }


__all__ = ["MAX_ROWS", "Broker", "answer", "paths", "status"]
