"""Delivery guarantees of the drivers against a real broker process (every driver).

A named component that comes back gets what it missed on every retroactive
topic, whatever the order in which its handlers are registered; a message is
acknowledged only once a handler got it. Waits end on events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import rembus
from behaviour_drivers import DRIVERS, WAIT, AioFace, BrokerProcess, Collector, Face, Session
from rembus.client.held import HeldMessages
from rembus.errors import RembusConnectionClosed, RembusError
from rembus_proto import Payload
from rembus_proto.client_events import PublicationReceived

pytestmark = pytest.mark.timeout(120)

FAST = {"reconnect_initial": 0.05, "reconnect_max": 0.2}

Batch = Callable[[rembus.Component, str, range, threading.Event], Coroutine[Any, Any, None]]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)



def test_restart_gets_the_backlog_of_every_retroactive_topic(
        driver: str, broker_process: BrokerProcess) -> None:
    """The first subscribe turns delivery on and the broker replays every topic at once:
    the messages of topics whose handler comes later are kept, then delivered in order."""
    qos_of = {f"backlog_{i}": i % 3 for i in range(4)}
    session = Session(driver, broker_process.url)
    try:
        first = session.component("backlog_sub")
        for topic in qos_of:
            first.subscribe(Collector(), True, topic=topic)
        first.close()
        pub = session.component("backlog_pub")
        for topic, qos in qos_of.items():
            for i in range(20):
                pub.publish(topic, i, qos=qos)
        pub.publish("backlog_mark", "stored", qos=1)  # acknowledged: the broker has them all
        again = session.component("backlog_sub")
        got = {topic: Collector() for topic in qos_of}
        for topic in qos_of:
            again.subscribe(got[topic], True, topic=topic)
        for topic, qos in qos_of.items():
            pub.publish(topic, "fence", qos=qos)
        for topic, qos in qos_of.items():
            items = got[topic].wait_until("fence")
            if qos == 1:  # at least once: a replay that starts over may send some again
                items = list(dict.fromkeys(items))
            assert items == [*range(20), "fence"], topic
        assert again.dropped_messages == 0
    finally:
        session.close()


def _event(topic: str, n: int, msg_id: bytes | None = None) -> PublicationReceived:
    return PublicationReceived(topic, Payload.of_args([n]), 0 if msg_id is None else 1, msg_id)


def test_held_messages_keep_order_per_topic_within_the_budget() -> None:
    held = HeldMessages(3)
    assert held.hold(_event("a", 1, b"1" * 8))
    assert held.hold(_event("b", 2))
    assert held.hold(_event("a", 1, b"1" * 8))  # a resent copy is not kept twice
    assert held.hold(_event("a", 3))
    assert not held.hold(_event("b", 4))  # the budget is reached
    assert [e.data.args for e in held.take("a")] == [(1,), (3,)]
    assert held.take("a") == []
    assert held.hold(_event("c", 5, b"1" * 8))  # its id left with the taken copy
    assert [e.topic for e in held.take_all()] == ["b", "c"]
    assert len(held) == 0


async def _publish_batch(comp: rembus.Component, topic: str, numbers: range,
                         queued: threading.Event) -> None:
    """Publish ``numbers`` at QoS1 concurrently; ``queued`` is set once each call is made."""
    tasks = [asyncio.ensure_future(comp.publish(topic, n, qos=1)) for n in numbers]
    asyncio.get_running_loop().call_soon(queued.set)  # runs after the first step of each task
    await asyncio.gather(*tasks)


async def _publish_pipelined(comp: rembus.Component, topic: str, numbers: range,
                             queued: threading.Event) -> None:
    """Publish ``numbers`` at QoS1 without waiting for each ACK (``wait=False``)."""
    futures = [await comp.publish(topic, n, qos=1, wait=False) for n in numbers]
    queued.set()
    assert all(future is not None for future in futures)
    await asyncio.gather(*[future for future in futures if future is not None])


async def _wait_for_loss(comp: rembus.Component) -> None:
    """Return once ``comp`` knows its connection is gone (a request made now fails then)."""
    with pytest.raises(RembusConnectionClosed):
        await comp.rpc("nobody_answers")


@pytest.mark.parametrize("batch", [_publish_batch, _publish_pipelined],
                         ids=["concurrent", "pipelined"])
def test_publish_order_holds_when_sent_and_queued_publications_meet_a_reconnect(
        broker_process: BrokerProcess, batch: Batch) -> None:
    """Publications sent but not acknowledged when the broker dies go again before the
    ones queued during the outage: the subscriber gets them in publish order."""
    session = Session("async", broker_process.url)
    try:
        sub = session.component("order_sub", **FAST)
        got = Collector()
        sub.subscribe(got, True, topic="order")
        face = session.component("order_pub", **FAST)
        assert isinstance(face, AioFace)
        pub, loop = face.comp, face.loop
        broker_process.pause()  # nothing is acknowledged from now on
        sent = threading.Event()
        first = loop.submit(batch(pub, "order", range(0, 50), sent))
        assert sent.wait(WAIT)
        broker_process.kill()
        loop.run(_wait_for_loss(pub))
        assert (pub.conn.unacked_count, pub.conn.outbox_len) == (50, 0)  # all sent, none acked
        queued = threading.Event()
        second = loop.submit(batch(pub, "order", range(50, 100), queued))
        assert queued.wait(WAIT)
        assert pub.conn.outbox_len == 50
        broker_process.start()
        first.result(WAIT)
        second.result(WAIT)
        items = got.wait_until(99)
        assert list(dict.fromkeys(items)) == list(range(100))  # QoS1: copies may come again
    finally:
        session.close()


def _lose(broker: BrokerProcess, *faces: Face) -> None:
    """Kill the broker; return once each of ``faces`` knows its connection is gone."""
    broker.kill()
    for face in faces:
        with pytest.raises(RembusConnectionClosed):
            face.rpc("nobody_answers")  # fails at once, or when the loss is seen


def test_close_with_timeout_flushes_the_outbox(driver: str, broker_process: BrokerProcess
                                               ) -> None:
    session = Session(driver, broker_process.url)
    try:
        sub = session.component("flush_sub", **FAST)
        got = Collector()
        sub.subscribe(got, True, topic="flush")
        pub = session.component("flush_pub", **FAST)
        _lose(broker_process, pub)
        for i in range(10):
            pub.publish("flush", i)  # QoS0, to the outbox
        broker_process.start()
        assert pub.close(timeout=WAIT) == 0
        assert got.wait_for(10) == list(range(10))
    finally:
        session.close()


def test_close_while_disconnected_reports_what_it_drops(
        driver: str, broker_process: BrokerProcess, caplog: pytest.LogCaptureFixture) -> None:
    session = Session(driver, broker_process.url)
    try:
        pub = session.component("drop_pub", **FAST)
        _lose(broker_process, pub)
        for i in range(3):
            pub.publish("dropped", i)
        assert pub.close() == 3
        assert "closed with 3 publication(s) not delivered" in caplog.text
    finally:
        session.close()


def test_too_many_pending_qos_publications_is_a_rembus_error(
        broker_process: BrokerProcess) -> None:
    session = Session("async", broker_process.url)
    try:
        face = session.component("pending_pub", **FAST)
        assert isinstance(face, AioFace)
        _lose(broker_process, face)
        pub = face.comp

        async def flood() -> list[BaseException | None]:
            limit = pub.conn.config.max_unacked_publishes
            tasks = [asyncio.ensure_future(pub.publish("flood", i, qos=1))
                     for i in range(limit + 1)]
            outcomes = await asyncio.wait_for(
                asyncio.gather(tasks[-1], return_exceptions=True), WAIT)
            for task in tasks:
                task.cancel()
            return outcomes

        [outcome] = face.loop.run(flood())
        assert isinstance(outcome, RembusError) and "max_unacked_publishes" in str(outcome)
    finally:
        session.close()


def test_messages_beyond_the_held_budget_and_at_close_are_logged_and_counted(
        driver: str, broker_process: BrokerProcess, caplog: pytest.LogCaptureFixture) -> None:
    session = Session(driver, broker_process.url)
    try:
        first = session.component("budget_sub")
        for topic in ("budget_a", "budget_b"):
            first.subscribe(Collector(), True, topic=topic)
        first.close()
        pub = session.component("budget_pub")
        for i in range(20):
            pub.publish("budget_b", i)
        pub.publish("budget_a", "stored", qos=1)
        again = session.component("budget_sub", max_held_messages=5)
        got = Collector()
        again.subscribe(got, True, topic="budget_a")  # the replay brings budget_b's first
        assert got.wait_for(1) == ["stored"]
        assert again.dropped_messages == 15
        assert "more than Options.max_held_messages wait for a handler" in caplog.text
        again.close()
        assert again.dropped_messages == 20
        assert "(the component closed): budget_b" in caplog.text
    finally:
        session.close()
