"""The batched hand-offs of ``rembus.sync`` between caller threads, the I/O thread and handlers.

Publications, requests and deliveries cross threads in batches (see
docs/threading.md); these tests pin what batching must not change: order
across batch boundaries and a full buffer, ``close()`` sending what was
published before it, a raising handler not dropping the rest of its batch,
a full publish buffer blocking its caller until the I/O thread takes some,
and callers waiting for answers released when the component closes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import rembus.sync
from behaviour_drivers import WAIT, BrokerProcess, Collector
from rembus.client.threaded_publish import LARGE_PUBLICATION, BatchPublisher
from rembus.sync import RembusConnectionClosed
from rembus_proto import Payload

pytestmark = pytest.mark.timeout(120)

LIMIT = 10_000  # the sync API's publish buffer (BatchPublisher's default)


def test_order_is_kept_across_batches_the_full_buffer_and_a_later_call(
        broker_process: BrokerProcess) -> None:
    count = LIMIT + 2_000  # more than the buffer holds: the publisher waits for room
    sub = rembus.sync.component(broker_process.url + "/batch_sub", max_handler_tasks=16)
    got = Collector()
    sub.subscribe(got, topic="seq")
    pub = rembus.sync.component(broker_process.url)
    for i in range(count):
        pub.publish("seq", i)
    pub.publish("seq", -1, qos=1)  # not queued: it must still come after the QoS0 ones
    assert got.wait_for(count + 1) == [*range(count), -1]
    pub.close()
    sub.close()


def test_a_call_waits_for_the_publications_queued_while_the_socket_was_full(
        broker_process: BrokerProcess) -> None:
    count = 400
    blob = bytes(32 * 1024)  # 12 MiB in all: the I/O thread waits for the socket to drain
    sub = rembus.sync.component(broker_process.url + "/full_sub")
    got = Collector()
    sub.subscribe(lambda i, _: got(i), topic="big")
    pub = rembus.sync.component(broker_process.url)
    for i in range(count):
        pub.publish("big", i, blob)
    pub.publish("big", -1, b"", qos=1)
    assert got.wait_for(count + 1) == [*range(count), -1]
    pub.close()
    sub.close()


def test_large_publications_are_not_queued_and_keep_their_order(
        broker_process: BrokerProcess) -> None:
    """The publish buffer counts messages: one of LARGE_PUBLICATION bytes or more is
    written by its caller, who waits for the socket (the buffer would otherwise hold
    up to 10,000 of them), after the small ones queued before it."""
    sub = rembus.sync.component(broker_process.url + "/large_sub")
    got = Collector()
    sub.subscribe(lambda i, _: got(i), topic="mixed")
    pub = rembus.sync.component(broker_process.url)
    large = bytes(LARGE_PUBLICATION)
    most_queued = 0
    for i in range(60):
        pub.publish("mixed", i, large if i % 3 == 0 else b"")
        if i % 3 == 0:
            queued = list(pub._publisher._queue)  # a snapshot of what waits for the loop
            most_queued = max(most_queued, sum(len(data.raw) for _, data in queued))
    assert got.wait_for(60) == list(range(60))
    assert most_queued < LARGE_PUBLICATION
    pub.close()
    sub.close()


def test_close_sends_what_was_published_before_it(broker_process: BrokerProcess) -> None:
    sub = rembus.sync.component(broker_process.url + "/close_sub")
    got = Collector()
    sub.subscribe(got, topic="last")
    pub = rembus.sync.component(broker_process.url)
    for i in range(3_000):
        pub.publish("last", i)
    assert pub.close() == 0
    assert got.wait_for(3_000) == list(range(3_000))
    sub.close()


def test_a_raising_subscriber_does_not_drop_the_rest_of_its_batch(
        broker_process: BrokerProcess, caplog: pytest.LogCaptureFixture) -> None:
    sub = rembus.sync.component(broker_process.url + "/raise_sub")
    got = Collector()

    def flaky(i: int) -> None:
        got(i)
        if i % 3 == 0:
            raise ValueError(f"bad {i}")

    sub.subscribe(flaky, topic="flaky")
    pub = rembus.sync.component(broker_process.url)
    for i in range(600):
        pub.publish("flaky", i, qos=1 if i % 2 else 0)
    assert got.wait_for(600) == list(range(600))
    assert sum("bad " in r.getMessage() for r in caplog.records) == 200
    pub.close()
    sub.close()


class _Inner:
    """The part of the I/O thread's component a BatchPublisher uses, recording what it gets."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Payload]] = []
        self.url = "fake"

    def publish_all(self, batch: Any) -> None:
        self.published.extend(batch)

    async def drain(self) -> None:
        await asyncio.sleep(0)  # one loop turn, as a socket with room would


def test_a_full_publish_buffer_blocks_the_caller_until_the_loop_takes_some() -> None:
    loop = asyncio.new_event_loop()
    inner = _Inner()
    publisher = BatchPublisher(loop, inner, limit=3)  # type: ignore[arg-type]
    waiting = threading.Event()

    class Room(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.set()
            return super().wait(timeout)

    publisher._room = Room(threading.Lock())
    payloads = [Payload.of_args([i]) for i in range(4)]
    for data in payloads[:3]:
        publisher.post("t", data)  # the loop does not run yet: nothing is taken
    caller = threading.Thread(target=publisher.post, args=("t", payloads[3]), daemon=True)
    caller.start()
    assert waiting.wait(WAIT)
    assert caller.is_alive() and inner.published == []

    async def all_taken() -> None:
        while len(inner.published) < 4:
            await asyncio.sleep(0)  # loop turns: the writer task and the wake-ups run

    try:
        loop.run_until_complete(asyncio.wait_for(all_taken(), WAIT))
    finally:
        caller.join(WAIT)
        loop.close()
    assert not caller.is_alive()
    assert [data for _, data in inner.published] == payloads


def test_callers_waiting_for_answers_fail_when_the_component_closes(
        broker_process: BrokerProcess) -> None:
    server = rembus.sync.component(broker_process.url + "/slow_server", workers=4)
    entered = threading.Semaphore(0)
    release = threading.Event()

    def slow(x: int) -> int:
        entered.release()
        release.wait(WAIT)
        return x

    server.expose(slow)
    caller = rembus.sync.component(broker_process.url)
    outcomes: list[BaseException | Any] = []

    def call(i: int) -> None:
        try:
            outcomes.append(caller.rpc("slow", i))
        except BaseException as exc:  # recorded: the test looks at it below
            outcomes.append(exc)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert entered.acquire(timeout=WAIT)  # every request reached the exposer
    caller.close()
    for thread in threads:
        thread.join(WAIT)
    release.set()
    assert not [t for t in threads if t.is_alive()]
    assert len(outcomes) == 4
    assert all(isinstance(o, RembusConnectionClosed) for o in outcomes), outcomes
    server.close()
