"""Delivery across broker crashes: SIGKILL the broker at seeded random points of a stream.

A publisher streams numbered QoS1/QoS2 messages on several topics (a window
of them in flight at once) to a named subscriber with a retroactive
subscription on each topic; the broker process is killed with SIGKILL
whenever the number of acknowledged messages reaches one of a few seeded
random points, and restarted on the same port and data directory. The
subscriber is either connected throughout (``live``, it reconnects after
each kill) or away during the stream (``offline``, it comes back after it).

Asserted: every acknowledged message reaches the subscriber (no loss), and
the first copies arrive in publish order on each topic. Copies of a message
delivered again after a kill are allowed (QoS1 is at least once; exactly
once for QoS2 across a broker crash needs the broker to keep what it
acknowledged, which this test does not assert). Waits end on events.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

import rembus
from behaviour_drivers import WAIT, BrokerProcess

pytestmark = pytest.mark.timeout(60)

TOPICS = ("crash_a", "crash_b", "crash_c")
MESSAGES = 600
KILLS = 4
WINDOW = 8  # QoS publications in flight at once
FAST = {"reconnect_initial": 0.05, "reconnect_max": 0.2, "timeout": WAIT}



class Deliveries:
    """What the subscriber's handlers got, per topic; ``complete`` once every number came."""

    def __init__(self) -> None:
        self.got: dict[str, list[int]] = {topic: [] for topic in TOPICS}
        self.expected = {topic: {n for n in range(MESSAGES) if TOPICS[n % len(TOPICS)] == topic}
                         for topic in TOPICS}
        self._missing = MESSAGES
        self._seen: set[int] = set()
        self.complete = asyncio.Event()

    def handler(self, topic: str) -> Callable[[int], None]:
        def got(n: int) -> None:
            self.got[topic].append(n)
            if n not in self._seen:
                self._seen.add(n)
                self._missing -= 1
                if not self._missing:
                    self.complete.set()
        return got


async def _subscriber(url: str, deliveries: Deliveries) -> rembus.Component:
    comp = await rembus.component(f"{url}/crash_sub", **FAST)
    for topic in TOPICS:
        await comp.subscribe(deliveries.handler(topic), True, topic=topic)
    return comp


class Stream:
    """The publisher: ``MESSAGES`` numbers, ``WINDOW`` in flight, acknowledged ones counted."""

    def __init__(self, qos: int) -> None:
        self.qos = qos
        self.acked = 0
        self.progress = asyncio.Condition()

    async def run(self, pub: rembus.Component) -> None:
        window = asyncio.Semaphore(WINDOW)

        async def one(n: int) -> None:
            try:
                await pub.publish(TOPICS[n % len(TOPICS)], n, qos=self.qos)
            finally:
                window.release()
            async with self.progress:
                self.acked += 1
                self.progress.notify_all()

        tasks = []
        for n in range(MESSAGES):
            await window.acquire()
            tasks.append(asyncio.ensure_future(one(n)))
        await asyncio.gather(*tasks)


async def _killer(broker: BrokerProcess, stream: Stream, points: list[int]) -> int:
    """SIGKILL and restart the broker as the stream reaches each point; return the kills."""
    kills = 0
    for point in points:
        async with stream.progress:
            await stream.progress.wait_for(lambda point=point: stream.acked >= point)
        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(broker.start)
        kills += 1
    return kills


async def _scenario(broker: BrokerProcess, qos: int, live: bool, seed: int) -> Deliveries:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, MESSAGES - WINDOW), KILLS))
    deliveries = Deliveries()
    sub = await _subscriber(broker.url, deliveries)
    if not live:
        await sub.close()
    pub = await rembus.component(f"{broker.url}/crash_pub", **FAST)
    try:
        stream = Stream(qos)
        kills, _ = await asyncio.gather(_killer(broker, stream, points), stream.run(pub))
        assert kills == KILLS
        if not live:
            sub = await _subscriber(broker.url, deliveries)
        await asyncio.wait_for(deliveries.complete.wait(), WAIT)
    finally:
        await pub.close()
        await sub.close()
    return deliveries


@pytest.mark.parametrize("live", [True, False], ids=["live", "offline"])
@pytest.mark.parametrize("qos", [1, 2])
def test_no_loss_and_publish_order_across_broker_kills(
        broker_process: BrokerProcess, qos: int, live: bool) -> None:
    deliveries = asyncio.run(_scenario(broker_process, qos, live, seed=qos * 10 + live))
    for topic, got in deliveries.got.items():
        first_copies = list(dict.fromkeys(got))
        assert first_copies == sorted(deliveries.expected[topic]), topic
