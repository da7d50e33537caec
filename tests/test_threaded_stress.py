"""Many threads on one ``rembus.sync`` component while its handlers call back into it.

Sixteen threads call ``rpc`` and publish (QoS2) on the same component, while
another component's threads make that component's handlers run: an exposed
method and a subscriber that themselves call ``rpc`` (on another exposer) and
publish on it. The test asserts outcomes only: every reply right, every
publication received exactly once. pytest-timeout and the bounded joins turn
a deadlock into a failure.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rembus.sync
from behaviour_drivers import WAIT, BrokerProcess, Collector

pytestmark = pytest.mark.timeout(180)

THREADS = 16  # callers on the component under stress
DRIVERS = 4  # callers on the peer, which make its handlers run
ROUNDS = 25  # calls of each kind per thread


@pytest.fixture
def components(broker_process: BrokerProcess) -> Iterator[dict[str, rembus.sync.Component]]:
    made: dict[str, rembus.sync.Component] = {}
    try:
        for name in ("backend", "hub", "peer", "sink"):
            made[name] = rembus.sync.component(f"{broker_process.url}/stress_{name}")
        yield made
    finally:
        for comp in made.values():
            comp.close()


def run_threads(*groups: tuple[int, Callable[[int], None]]) -> None:
    """For each ``(count, work)`` run ``work(index)`` on ``count`` threads, all at once;
    fail on any error or on a thread that hangs."""
    errors: list[BaseException] = []

    def guarded(work: Callable[[int], None], index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(work, i), daemon=True)
               for count, work in groups for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not [t for t in threads if t.is_alive()], "a thread hung (deadlock?)"
    assert not errors, errors


def test_threads_and_reentrant_handlers_lose_nothing(
        components: dict[str, rembus.sync.Component]) -> None:
    backend, hub, peer, sink = (components[n] for n in ("backend", "hub", "peer", "sink"))
    news, relayed, pongs = Collector(), Collector(), Collector()
    sink.subscribe(news, topic="news")
    sink.subscribe(relayed, topic="relayed")
    sink.subscribe(pongs, topic="pong")
    backend.expose(lambda x: ["double", x * 2], topic="double")

    def relay(x: int) -> Any:  # runs on a worker of hub, calls back into hub
        answer = hub.rpc("double", x)
        hub.publish("relayed", x, qos=2)
        return ["relay", answer]

    def ping(x: int) -> None:  # runs on hub's subscriber thread, calls back into hub
        assert hub.rpc("double", x) == ["double", x * 2]
        hub.publish("pong", x, qos=2)

    hub.expose(relay, topic="relay")
    hub.subscribe(ping, topic="ping")

    def hub_caller(index: int) -> None:
        for i in range(ROUNDS):
            value = index * 1000 + i
            assert hub.rpc("double", value) == ["double", value * 2]
            hub.publish("news", value, qos=2)

    def peer_caller(index: int) -> None:
        for i in range(ROUNDS):
            value = index * 1000 + i
            assert peer.rpc("relay", value) == ["relay", ["double", value * 2]]
            peer.publish("ping", value, qos=2)

    run_threads((THREADS, hub_caller), (DRIVERS, peer_caller))

    def sent(threads: int) -> Counter[int]:
        return Counter(t * 1000 + i for t in range(threads) for i in range(ROUNDS))

    assert Counter(news.wait_for(THREADS * ROUNDS)) == sent(THREADS)
    assert Counter(relayed.wait_for(DRIVERS * ROUNDS)) == sent(DRIVERS)
    assert Counter(pongs.wait_for(DRIVERS * ROUNDS)) == sent(DRIVERS)
