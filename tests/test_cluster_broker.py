"""Brokers joined through a NATS cluster: real broker processes on a real 3-node NATS cluster.

Interest crosses the NATS cluster asynchronously (a subscription made through
one node reaches the others a moment later), so a test that needs it sends
probes until the first one gets through, with a bound, before it checks what it
is about: waits on conditions, never sleeps.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
from broker_process import WAIT, BrokerProcess, rembus_cli, until
from nats_cluster import NatsCluster, free_ports
from rembus.errors import (
    MethodNotFound,
    MethodUnavailable,
    RembusError,
    RembusTimeout,
    TargetDown,
    TargetNotFound,
)

pytest.importorskip("nats")

PROBE = 0.2  # seconds to wait for one probe before sending the next one


@contextmanager
def cluster_brokers(nats: NatsCluster, tmp_path: Path, count: int, *extra: str,
                    lease_ttl: int = 10) -> Iterator[list[BrokerProcess]]:
    """``count`` broker processes, each joined through its own NATS node; stopped at the end.

    ``lease_ttl``: short only where a test waits for a dead broker's names; a
    renewal late by more than a third of it closes the connection (a loaded
    machine must not do that to the other tests).
    """
    with ExitStack() as stack:
        brokers = []
        for i in range(count):
            broker = BrokerProcess(tmp_path / f"broker{i}", "--name", f"b{i}",
                                   "--cluster", nats.urls[i % len(nats.urls)],
                                   "--cluster-name", "test", "--cluster-replicas", "3",
                                   "--cluster-lease-ttl", str(lease_ttl), *extra)
            stack.enter_context(broker)
            brokers.append(broker)
        yield brokers


class Inbox:
    """What a subscriber's handler received, in order."""

    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()

    def __call__(self, *args: Any) -> None:
        self.items.put(list(args) if len(args) != 1 else args[0])

    def next(self, timeout: float = WAIT) -> Any:
        return self.items.get(timeout=timeout)

    def probe(self, publish: Callable[[], None], expected: Any) -> None:
        """Publish until ``expected`` arrives (the interest reached the publisher's node)."""
        def attempt() -> bool | None:
            publish()
            try:
                while True:
                    if self.next(PROBE) == expected:
                        return True
            except queue.Empty:
                return None
        until(attempt, f"{expected!r} delivered across brokers")
        while not self.items.empty():  # later copies of the probe
            self.items.get_nowait()


def test_pubsub_across_brokers_with_wildcards(nats_trio: NatsCluster, tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 3) as (b0, b1, b2):
        exact, star, anything = Inbox(), Inbox(), Inbox()
        sub1 = rembus.sync.component(f"{b1.url}/sub-exact")
        sub1.subscribe(exact, topic="room/kitchen/temp")
        sub1.reactive()
        sub2 = rembus.sync.component(f"{b2.url}/sub-wild")
        sub2.subscribe(star, topic="room/*/temp")
        sub2.subscribe(anything, topic="room/**")
        sub2.reactive()
        pub = rembus.sync.component(f"{b0.url}/pub")
        try:
            exact.probe(lambda: pub.publish("room/kitchen/temp", "probe"), "probe")
            star.probe(lambda: pub.publish("room/hall/temp", "probe"), ["room/hall/temp",
                                                                          "probe"])
            anything.probe(lambda: pub.publish("room/x", "probe"), ["room/x", "probe"])
            for value in range(5):
                pub.publish("room/kitchen/temp", value)
            pub.publish("room/kitchen/humidity", 99)
            assert [exact.next() for _ in range(5)] == list(range(5))
            assert [star.next() for _ in range(5)] == [["room/kitchen/temp", v]
                                                       for v in range(5)]
            got = [anything.next() for _ in range(6)]
            assert got == [*(["room/kitchen/temp", v] for v in range(5)),
                           ["room/kitchen/humidity", 99]]
            # one copy each, although sub-wild's broker has two matching NATS subscriptions
            pub.publish("room/end", "last")
            assert anything.next() == ["room/end", "last"]
            assert star.items.empty() and exact.items.empty()
        finally:
            for component in (pub, sub1, sub2):
                component.close()


def test_rpc_and_direct_across_brokers(nats_trio: NatsCluster, tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2) as (b0, b1):
        served: list[str] = []

        def double(x: int) -> int:
            served.append("server")
            return 2 * x

        def fail() -> None:
            raise ValueError("boom")

        server = rembus.sync.component(f"{b1.url}/server")
        server.expose(double)
        server.expose(fail)
        caller = rembus.sync.component(f"{b0.url}/caller")
        try:
            def call() -> int | None:
                try:
                    return int(caller.rpc("double", 21))
                except MethodNotFound:
                    return None  # the exposer's interest has not reached this node yet
            assert until(call, "a call served across brokers") == 42
            assert caller.rpc("double", 5) == 10
            with pytest.raises(RembusError, match="boom"):
                caller.rpc("fail")
            with pytest.raises(MethodNotFound):
                caller.rpc("nobody_serves_this")

            def direct() -> int | None:
                try:
                    return int(caller.direct("server", "double", 4))
                except TargetNotFound:
                    return None
            assert until(direct, "a direct call across brokers") == 8
            with pytest.raises(TargetNotFound):
                caller.direct("nobody", "double", 1)
            server.close()

            def gone() -> bool | None:
                try:
                    caller.direct("server", "double", 1)
                except (TargetNotFound, TargetDown):
                    return True
                except MethodUnavailable:
                    return None  # it reached the server as it disconnected (as on one broker)
                except RembusTimeout:
                    return None  # sent while NATS still routed the name to the server's broker
                return None
            assert until(gone, "the target gone from the cluster")
            assert caller.rpc("rid") == "b0"  # built-ins stay local
        finally:
            caller.close()
            server.close()


def race(urls: list[str], attempt: Callable[[str], object]) -> list[object]:
    """Run ``attempt(url)`` for every url at once, each in a thread started together;
    the outcomes in order: what each returned, or the RembusError it raised."""
    outcomes: list[object] = [None] * len(urls)
    start = threading.Barrier(len(urls), timeout=WAIT)

    def contend(index: int, url: str) -> None:
        start.wait()
        try:
            outcomes[index] = attempt(url)
        except RembusError as exc:
            outcomes[index] = exc
    threads = [threading.Thread(target=contend, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return outcomes


def test_one_name_cluster_wide(nats_trio: NatsCluster, tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2) as brokers:
        for round_ in range(3):
            name = f"unique-{round_}"
            outcomes = race([b.url for b in brokers], lambda url, name=name: (
                rembus.sync.component(f"{url}/{name}", reconnect=False)))
            winners = [o for o in outcomes if isinstance(o, rembus.sync.Component)]
            losers = [o for o in outcomes if isinstance(o, RembusError)]
            assert len(winners) == 1 and len(losers) == 1, outcomes
            winners[0].close()


def test_overwrite_connection_across_brokers(nats_trio: NatsCluster, tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2, "--overwrite-connection") as (b0, b1):
        first = rembus.sync.component(f"{b0.url}/dup")
        second = rembus.sync.component(f"{b1.url}/dup")  # takes the name over
        try:
            def first_closed() -> bool | None:
                try:
                    first.rpc("rid")
                except RembusError:
                    return True
                return None  # the close is on its way
            assert until(first_closed, "the first connection closed")
            assert second.rpc("rid") == "b1"
        finally:
            first.close()
            second.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_client_fails_over_to_the_next_broker(nats_trio: NatsCluster, tmp_path: Path,
                                              sig: signal.Signals) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2, lease_ttl=5) as (b0, b1):
        got = Inbox()
        listener = rembus.sync.component(f"{b1.url}/listener")
        listener.subscribe(got, topic="news")
        listener.reactive()
        moving = rembus.sync.component([f"{b0.url}/mover", f"{b1.url}/mover"])
        try:
            got.probe(lambda: moving.publish("news", "probe"), "probe")
            assert b0.process is not None
            b0.process.stop(sig)  # the mover's broker is gone: it must reconnect to b1
            b0.process = None  # killed: its lease on "mover" lives until its TTL ends

            def after_failover() -> bool | None:
                try:
                    moving.publish("news", "again", qos=1)
                except RembusError:
                    return None
                return True
            until(after_failover, "a publication through the next broker")
            assert got.next() == "again"
        finally:
            moving.close()
            listener.close()


def test_calls_spread_over_the_brokers_that_expose_a_method(nats_trio: NatsCluster,
                                                            tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 3) as (b0, b1, b2):
        servers = []
        for broker in (b1, b2):
            server = rembus.sync.component(f"{broker.url}/server-{broker.port}")

            def where(name: str = f"server-{broker.port}") -> str:
                return name
            server.expose(where)
            servers.append(server)
        caller = rembus.sync.component(f"{b0.url}/caller")
        seen: set[str] = set()
        try:
            def both() -> bool | None:
                with suppress(MethodNotFound):  # no exposer's interest reached the node yet
                    seen.add(str(caller.rpc("where")))
                return True if len(seen) == 2 else None
            until(both, "calls served by both brokers")
            assert seen == {f"server-{b1.port}", f"server-{b2.port}"}
        finally:
            caller.close()
            for server in servers:
                server.close()


def test_brokers_carry_on_when_their_nats_node_dies(nats_trio: NatsCluster,
                                                   tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2) as (b0, b1):
        got = Inbox()
        listener = rembus.sync.component(f"{b1.url}/listener")
        listener.subscribe(got, topic="news")
        listener.reactive()
        talker = rembus.sync.component(f"{b0.url}/talker")
        try:
            got.probe(lambda: talker.publish("news", "before"), "before")
            nats_trio.nodes[0].stop(signal.SIGKILL)  # b0's only configured NATS node
            got.probe(lambda: talker.publish("news", "after"), "after")  # through another
            # a name taken now is still one name cluster-wide (the buckets kept a quorum)
            def login() -> rembus.sync.Component | None:
                try:
                    return rembus.sync.component(f"{b0.url}/late", reconnect=False)
                except RembusError as exc:  # while JetStream elects new leaders
                    assert "try again later" in str(exc)
                    return None
            late = until(login, "a name taken after the loss of a node")
            with pytest.raises(RembusError, match="already connected"):
                rembus.sync.component(f"{b1.url}/late", reconnect=False)
            late.close()
        finally:
            talker.close()
            listener.close()


def test_a_broker_that_cannot_join_its_cluster_exits_1(tmp_path: Path) -> None:
    dead = f"nats://127.0.0.1:{free_ports(1)[0]}"
    done = rembus_cli("broker", "--port", "0", "--data-dir", str(tmp_path), "--cluster", dead)
    assert done.returncode == 1
    assert f"cannot join cluster 'rembus' at {dead}" in done.stderr
    assert "Traceback" not in done.stderr
