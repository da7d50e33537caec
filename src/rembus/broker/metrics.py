"""``GET /metrics``: the broker's counters in the Prometheus text format.

Needs ``prometheus-client`` (``pip install 'rembus[metrics]'``). Nothing is
counted by Prometheus objects while the broker works: the router keeps plain
counters (:class:`~rembus_proto.broker.stats.Stats`) and a custom collector
reads them at scrape time. Each broker has its own registry (never the
global one), with the library's process collector.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as _generate
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from rembus.broker.status import Broker
from rembus.version import __version__
from rembus_proto.broker.stats import Histogram

CONTENT_TYPE = CONTENT_TYPE_LATEST

_registries: weakref.WeakKeyDictionary[Broker, CollectorRegistry] = (
    weakref.WeakKeyDictionary())


def generate(broker: Broker) -> bytes:
    """The current metrics of ``broker`` (its registry is made at the first scrape)."""
    registry = _registries.get(broker)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BrokerCollector(broker))
        ProcessCollector(registry=registry)
        _registries[broker] = registry
    return _generate(registry)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(family: CounterMetricFamily | GaugeMetricFamily,
              values: Iterable[tuple[str, float]]) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in values:
        family.add_metric([label], value)
    return family


def _bound(bound: float) -> str:
    """A bucket's upper bound as Prometheus writes it."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def _histogram(name: str, doc: str, label: str,
               histograms: Iterable[tuple[str, Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for key, histogram in histograms:
        buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
        family.add_metric([key] if label else [], buckets, histogram.total)
    return family


class BrokerCollector(Collector):
    """Reads a broker's counters at scrape time (it keeps only a weak reference)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = weakref.ref(broker)

    def collect(self) -> Iterator[Metric]:
        """Every ``rembus_*`` metric of the broker."""
        broker = self._broker()
        if broker is None:
            return
        router = broker.router
        stats = router.stats
        info = GaugeMetricFamily("rembus_broker_info", "The broker's name and version.",
                                 labels=["name", "version"])
        info.add_metric([router.config.name, __version__], 1)
        yield info
        connections = router.connections
        named = sum(1 for conn in connections if conn.twin.named)
        yield GaugeMetricFamily("rembus_connections", "Open WebSocket connections.",
                                value=len(connections))
        yield _counter("rembus_connections_opened", "WebSocket connections opened.",
                       stats.opened)
        yield _labelled(CounterMetricFamily(
            "rembus_connections_closed", "WebSocket connections closed, by reason.",
            labels=["reason"]), stats.closed.items())
        yield _labelled(GaugeMetricFamily(
            "rembus_components", "Connected components, named or anonymous.", labels=["kind"]),
            [("named", named), ("anonymous", len(connections) - named)])
        yield _counter("rembus_messages_received", "Messages received from components.",
                       stats.messages_in)
        yield _counter("rembus_messages_sent", "Messages sent to components.",
                       stats.messages_out)
        yield _counter("rembus_bytes_received", "Bytes received on WebSocket connections.",
                       stats.bytes_in)
        yield _counter("rembus_bytes_sent", "Bytes sent on WebSocket connections.",
                       stats.bytes_out)
        yield _labelled(CounterMetricFamily(
            "rembus_publications", "Publications received, by topic (at most "
            "--metrics-max-labels topics; the rest under 'other').", labels=["topic"]),
            stats.publications.items())
        yield _labelled(CounterMetricFamily(
            "rembus_rpc_requests", "RPC requests received, by method (bounded like topics).",
            labels=["method"]), stats.calls.items())
        yield _histogram("rembus_rpc_latency_seconds", "Seconds from forwarding an RPC to "
                         "its answer, by method.", "method", stats.latency.items())
        yield _labelled(CounterMetricFamily(
            "rembus_rpc_errors", "RPC requests that failed, by status code ('timeout': "
            "never answered).", labels=["status"]), stats.rpc_errors.items())
        yield _labelled(CounterMetricFamily(
            "rembus_deliveries_dropped", "Messages not delivered: 'slow_consumer' counts "
            "consumers disconnected for being slow, 'size' messages over the size limit, "
            "'decode' messages that cannot be written as JSON.", labels=["reason"]),
            [("slow_consumer", stats.closed["slow_consumer"]), ("size", router.skipped),
             ("decode", broker.dropped_json)])
        yield _counter("rembus_stored_messages", "Publications stored for retroactive "
                       "subscribers.", stats.stored_messages)
        yield _counter("rembus_stored_bytes", "Payload bytes of the stored publications.",
                       stats.stored_bytes)
        yield _labelled(CounterMetricFamily(
            "rembus_pruned_messages", "Stored messages dropped by the retention rules, by "
            "rule.", labels=["reason"]), broker.pruned.items())
        backlog = router.replay_backlog()
        yield GaugeMetricFamily("rembus_replay_backlog_messages", "Stored messages newer "
                                "than the delivery mark of retroactive subscribers, summed.",
                                value=sum(backlog.values()))
        yield GaugeMetricFamily("rembus_replay_backlog_components", "Retroactive subscribers "
                                "behind the archive.", value=len(backlog))
        yield _labelled(CounterMetricFamily(
            "rembus_qos_resends", "QoS deliveries sent again for want of an ACK.",
            labels=["qos"]), stats.resends.items())
        yield _labelled(CounterMetricFamily(
            "rembus_refusals", "Connections refused and logins failed, by reason.",
            labels=["reason"]), stats.refusals.items())
        yield _histogram("rembus_event_loop_lag_seconds", "How late the broker's periodic "
                         "callback ran.", "", [("", stats.loop_lag)])


__all__ = ["CONTENT_TYPE", "BrokerCollector", "generate"]
