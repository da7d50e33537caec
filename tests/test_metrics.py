"""``GET /metrics`` of a broker process: scrape, act, scrape; and the counters behind it."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import rembus.sync
import rembus_proto as rp
from broker_process import BrokerProcess
from rembus.client.wire import Wire, WireClosed
from rembus.errors import RembusError
from rembus_proto.broker import Router, RouterConfig
from rembus_proto.broker.stats import OTHER, Histogram, Stats, close_kind
from rembus_proto.security_port import MemorySecurity
from rembus_proto.store import MemoryStore
from router_harness import Net
from tls_hello import client_hello

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(port: int, path: str) -> tuple[int, str, str]:
    """Status, content type and body of ``GET path`` on the broker."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as reply:
            return reply.status, reply.headers["content-type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def scrape(port: int) -> Samples:
    status, content_type, body = http_get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, body)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labels_of(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for (sample, key) in samples if sample == name}


def test_scrape_act_scrape(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", "--metrics-max-labels", "3") as broker:
        assert broker.process is not None
        wait_for = broker.process.wait_for
        before = scrape(broker.port)
        assert value(before, "rembus_connections") == 0
        assert value(before, "process_cpu_seconds_total") > 0  # the process collector

        sub = rembus.sync.component(f"{broker.url}/watcher")
        sub.subscribe(lambda *_: None, True, topic="t0")  # retroactive: t0 is stored
        sub.expose(lambda x: x, topic="echo")
        sub.reactive()
        pub = rembus.sync.component(broker.url)
        for i in range(6):  # more topics than --metrics-max-labels
            pub.publish(f"t{i}", i)
        assert pub.rpc("echo", 7) == 7  # after the publications: they are all routed
        with pytest.raises(RembusError):
            pub.rpc("nobody_serves_this")
        during = scrape(broker.port)

        assert value(during, "rembus_connections") == 2
        assert value(during, "rembus_components", kind="named") == 1
        assert value(during, "rembus_components", kind="anonymous") == 1
        assert value(during, "rembus_connections_opened_total") == 2
        assert value(during, "rembus_publications_total", topic="t0") == 1
        topics = labels_of(during, "rembus_publications_total", "topic")
        assert len(topics) == 4 and OTHER in topics, topics  # 3 topics, then "other"
        assert value(during, "rembus_publications_total", topic=OTHER) == 3
        assert value(during, "rembus_rpc_requests_total", method="echo") == 1
        assert value(during, "rembus_rpc_latency_seconds_count", method="echo") == 1
        assert value(during, "rembus_rpc_errors_total", status="42") == 1
        assert value(during, "rembus_stored_messages_total") == 1
        for counter in ("rembus_messages_received_total", "rembus_messages_sent_total",
                        "rembus_bytes_received_total", "rembus_bytes_sent_total"):
            assert value(during, counter) > value(before, counter), counter
        # the lag is sampled once per --tick: only its presence is certain here
        assert any(name == "rembus_event_loop_lag_seconds_count" for name, _ in during)

        sub.close()
        wait_for(r"component 'watcher' from .* disconnected")
        pub.publish("t0", "while away")
        assert pub.rpc("rid") == "broker"  # the publication is routed
        after = scrape(broker.port)
        assert value(after, "rembus_stored_messages_total") == 2
        assert value(after, "rembus_replay_backlog_messages") == 1
        assert value(after, "rembus_replay_backlog_components") == 1
        assert value(after, "rembus_components", kind="named") == 0
        assert value(after, "rembus_connections_closed_total", reason="component") == 1
        pub.close()
        wait_for(r"anonymous component from .* disconnected")
        assert value(scrape(broker.port), "rembus_connections") == 0


def test_refusals_and_protocol_errors_are_counted(tmp_path: Path) -> None:
    async def send_garbage(port: int) -> None:
        wire = await Wire.open("127.0.0.1", port)
        wire.send(b"\x83\x01\x61")  # a PUB cut short
        with pytest.raises(WireClosed):
            await wire.recv()

    with BrokerProcess(tmp_path / "data") as broker:
        assert broker.process is not None
        before = scrape(broker.port)
        with socket.create_connection(("127.0.0.1", broker.port)) as sock:
            sock.sendall(client_hello())
            sock.settimeout(60)
            while sock.recv(4096):  # the broker answers and closes
                pass
        broker.process.wait_for(r"refused")
        asyncio.run(send_garbage(broker.port))
        broker.process.wait_for(r"disconnected: closed by the broker")
        after = scrape(broker.port)
        assert value(before, "rembus_refusals_total", reason="bad_request") == 0
        assert value(after, "rembus_refusals_total", reason="bad_request") == 1
        assert value(after, "rembus_connections_closed_total", reason="protocol_error") == 1


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", "--no-metrics") as broker:
        assert http_get(broker.port, "/metrics")[0] == 404
        assert http_get(broker.port, "/health")[0] == 200


def test_without_prometheus_client_metrics_answer_501(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    broker = BrokerProcess(tmp_path / "data")
    broker.env = {**os.environ,
                  "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    with broker:
        status, _, body = http_get(broker.port, "/metrics")
        assert status == 501 and "pip install 'rembus[metrics]'" in body


# -- the counters, without a broker ------------------------------------------------


@given(st.lists(st.text(min_size=1, max_size=5), max_size=60), st.integers(1, 10))
def test_topic_labels_are_bounded(topics: list[str], cap: int) -> None:
    stats = Stats(max_labels=cap)
    for topic in topics:
        stats.published(topic)
        stats.called(topic)
        stats.rpc_failed(topic)
    for table in (stats.publications, stats.calls, stats.rpc_errors):
        assert len(table) <= cap + 1
        assert sum(table.values()) == len(topics)
        assert all(key in topics or key == OTHER for key in table)
    distinct = list(dict.fromkeys(topics))
    for topic in distinct[:cap]:
        if topic != OTHER:  # a topic named "other" is counted with the overflow (documented)
            assert stats.publications[topic] == topics.count(topic)
    overflow = len(topics) - sum(topics.count(topic) for topic in distinct[:cap])
    assert stats.publications.get(OTHER, 0) == overflow + (
        topics.count(OTHER) if OTHER in distinct[:cap] else 0)


@given(st.lists(st.floats(0, 200, allow_nan=False)))
def test_histogram_buckets_are_cumulative(values: list[float]) -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for v in values:
        histogram.observe(v)
    pairs = histogram.cumulative()
    assert pairs[-1] == (float("inf"), len(values))
    for bound, count in pairs:
        assert count == sum(1 for v in values if v <= bound)


@pytest.mark.parametrize(("reason", "peer_fault", "kind"), [
    ("closed by the component (code 1000)", False, "component"),
    ("connection lost", False, "lost"),
    ("closed by the broker: slow consumer: too much data waiting to be sent (code 1008)", True,
     "slow_consumer"),
    ("closed by the broker: too many queued messages (code 1008)", False, "slow_consumer"),
    ("closed by the broker: no pong within 30 s (--keepalive)", True, "timeout"),
    ("closed by the broker: not authenticated within 3 seconds (code 1008)", False, "auth"),
    ("closed by the broker: overwritten (code 4000)", False, "overwritten"),
    ("closed by the broker: broker shutting down (code 1001)", False, "shutdown"),
    ("closed by the broker: unknown message type 99 (code 1002)", True, "protocol_error"),
    ("closed by the broker: something else (code 1011)", False, "other"),
])
def test_close_kinds(reason: str, peer_fault: bool, kind: str) -> None:
    assert close_kind(reason, peer_fault) == kind


def test_router_counts_resends_latency_timeouts_and_login_failures() -> None:
    net = Net(RouterConfig(ack_timeout=2.0, send_retries=1, call_timeout=10.0,
                           authenticated=False))
    stats = net.router.stats
    sub, pub, server = net.connect(), net.connect(), net.connect()
    sub.subscribe("t")
    pub.publish("t", 1, qos=1)
    pub.publish("t", 2, qos=2)
    net.advance(2.0)
    assert stats.resends == {"qos1": 1, "qos2": 1}
    server.expose("slow")
    call = pub.rpc("slow", 1)
    request = server.take()[-1]
    assert isinstance(request, rp.Rpc)
    net.advance(0.5)
    server.send(rp.Response(request.id, rp.Status.OK, rp.Payload.of(None)))
    assert pub.response(call).status == 0
    histogram = stats.latency["slow"]
    assert histogram.count == 1 and histogram.total == pytest.approx(0.5)
    pub.rpc("slow", 2)
    net.advance(10.0)
    assert stats.rpc_errors == {"timeout": 1}
    assert stats.calls == {"slow": 2}
    intruder = net.connect()
    intruder.send(rp.Attestation(intruder.new_id(), "nobody", b"x"))
    assert stats.refusals == {"bad_attestation": 1}
    assert stats.recent_refusals[-1].kind == "bad_attestation"


def test_admin_password_is_the_tenant_pin_under_the_lockout() -> None:
    security = MemorySecurity(tenants={".": "1234"}, admins={"boss"})
    router = Router(MemoryStore(), RouterConfig(pin_attempts=2, pin_lockout=60.0),
                    security=security)
    check = router.admin_password
    assert check("boss", "1234", 0.0) is None
    assert check("someone", "1234", 0.0) is not None  # not an admin
    assert check("boss", "0000", 0.0) == "wrong tenant/pin"
    assert check("boss", "0000", 0.0) == "wrong tenant/pin"
    assert "too many wrong PINs" in str(check("boss", "1234", 1.0))  # locked out
    assert check("boss", "1234", 61.0) is None
