"""What only the thread driver (rembus.sync) has: forever(), its threads, its pool."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import rembus.sync
from behaviour_drivers import WAIT, Collector, in_process_broker
from rembus.sync import RembusConnectionClosed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url() -> Iterator[str]:
    with in_process_broker() as broker_url:
        yield broker_url


def entered_forever(comp: rembus.sync.Component) -> threading.Event:
    """An Event set once ``comp.forever()`` runs on the I/O thread."""
    entered = threading.Event()
    inner = comp._inner
    original = inner.forever

    async def forever() -> None:
        entered.set()
        await original()

    inner.forever = forever  # type: ignore[method-assign]
    return entered


@pytest.mark.usefixtures("ctrl_c")
def test_forever_returns_on_ctrl_c(url: str) -> None:
    comp = rembus.sync.component(url + "/forever_sigint")
    entered = entered_forever(comp)

    def interrupt() -> None:
        entered.wait(WAIT)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    comp.forever()  # returns: Ctrl-C closes the component
    with pytest.raises(RembusConnectionClosed):
        comp.publish("t", 1)


def test_forever_returns_when_closed_from_another_thread(url: str) -> None:
    comp = rembus.sync.component(url + "/forever_close")
    entered = entered_forever(comp)

    def close() -> None:
        entered.wait(WAIT)
        comp.close()

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    comp.forever()
    closer.join(WAIT)
    assert not comp.is_connected


def test_handlers_use_their_own_component(url: str) -> None:
    with rembus.sync.component(url + "/own_backend") as backend, \
            rembus.sync.component(url + "/own_front", workers=1) as front, \
            rembus.sync.component(url) as client:
        echoed = Collector()
        backend.expose(lambda x: x + 1, topic="inc")
        backend.subscribe(echoed, topic="echoed")

        def work(x: int) -> list[Any]:
            by_rpc = front.rpc("inc", x)
            by_direct = front.direct("own_backend", "inc", x)
            front.publish("echoed", x, qos=1)
            return [by_rpc, by_direct]

        front.expose(work)
        assert client.rpc("work", 1) == [2, 2]
        assert echoed.wait_for(1) == [1]


def test_blocking_call_from_the_io_thread_is_refused(url: str) -> None:
    with rembus.sync.component(url + "/io_thread") as comp, rembus.sync.component(url) as pub:
        outcome = Collector()

        async def on_message(x: int) -> None:  # runs on the I/O thread
            try:
                comp.publish("elsewhere", x)
            except RuntimeError as exc:
                outcome(str(exc))

        comp.subscribe(on_message, topic="t")
        pub.publish("t", 1)
        [message] = outcome.wait_for(1)
        assert "I/O thread" in message


def test_handler_errors_reach_the_caller(url: str) -> None:
    with rembus.sync.component(url + "/raiser", workers=3) as server, \
            rembus.sync.component(url) as client:
        def boom(text: str) -> None:
            raise KeyError(text)

        server.expose(boom)
        with pytest.raises(rembus.sync.MethodException, match="nope"):
            client.rpc("boom", "nope")


def test_handlers_that_exit_keep_their_threads(url: str) -> None:
    """``sys.exit()`` in a handler fails that call only: the threads serve the next ones."""
    got = Collector()

    def note(value: str) -> None:
        if value == "exit":
            raise SystemExit(1)
        got(value)

    def leave(value: str) -> str:
        if value == "exit":
            raise SystemExit(1)
        return value

    with rembus.sync.component(url + "/exiting", workers=1) as server, \
            rembus.sync.component(url) as client:
        server.subscribe(note, topic="note")
        server.expose(leave)
        with pytest.raises(rembus.sync.MethodException, match="SystemExit"):
            client.rpc("leave", "exit")
        assert client.rpc("leave", "stay") == "stay"
        client.publish("note", "exit", qos=1)
        client.publish("note", "after", qos=1)
        assert got.wait_for(1) == ["after"]


def test_close_is_idempotent_and_ends_the_threads(url: str) -> None:
    comp = rembus.sync.component(url + "/threads", workers=4)
    comp.expose(lambda: 1, topic="one")
    comp.close()
    comp.close()
    assert not comp._io._thread.is_alive()
    with pytest.raises(RembusConnectionClosed):
        comp.rpc("one")


def test_connect_failure_leaves_no_thread(url: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(RembusConnectionClosed):
        rembus.sync.component("ws://127.0.0.1:1/nobody")
    assert {t.ident for t in threading.enumerate()} <= before | {None}



def test_subscribers_run_in_arrival_order_while_methods_run_concurrently(url: str) -> None:
    sub = rembus.sync.component(url + "/ordered_sub")
    got = Collector()
    sub.subscribe(got, topic="seq")
    release = threading.Event()
    running = threading.Semaphore(0)

    def slow(x: int) -> int:
        running.release()
        release.wait(WAIT)
        return x

    sub.expose(slow)
    pub = rembus.sync.component(url)
    calls = [threading.Thread(target=pub.rpc, args=("slow", i)) for i in range(2)]
    for call in calls:
        call.start()
    for _ in calls:  # both method calls run at once, on two workers
        assert running.acquire(timeout=WAIT)
    release.set()
    for call in calls:
        call.join(WAIT)
    for i in range(300):
        pub.publish("seq", i)
    assert got.wait_for(300) == list(range(300))
    pub.close()
    sub.close()


def test_queued_publish_reports_encoding_errors_to_the_caller(url: str) -> None:
    pub = rembus.sync.component(url)
    with pytest.raises(TypeError, match="cannot encode"):
        pub.publish("t", object())
    with pytest.raises(TypeError, match="topic must be a str"):
        pub.publish({"name": 1})  # type: ignore[arg-type]
    pub.close()
    with pytest.raises(RembusConnectionClosed):
        pub.publish("t", 1)


def test_a_slow_subscriber_holds_messages_back_in_order(url: str) -> None:
    sub = rembus.sync.component(url + "/slow_sub", max_handler_tasks=4)
    release = threading.Event()
    got = Collector()

    def slow(i: int) -> None:
        if i == 0:
            release.wait(WAIT)  # everything behind it must wait, in order
        got(i)

    sub.subscribe(slow, topic="seq")
    pub = rembus.sync.component(url)
    for i in range(60):
        pub.publish("seq", i)
    assert isinstance(sub.rpc("rid"), str)  # the component still answers calls
    release.set()
    assert got.wait_for(60) == list(range(60))
    pub.close()
    sub.close()
