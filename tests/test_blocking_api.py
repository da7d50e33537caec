"""What only the blocking driver has: process(), the selector hooks, pipelining."""

from __future__ import annotations

import selectors
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rembus.blocking
import rembus.sync
from behaviour_drivers import WAIT, Collector, in_process_broker
from rembus.blocking import RembusConnectionClosed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url() -> Iterator[str]:
    with in_process_broker() as broker_url:
        yield broker_url


def test_process_runs_handlers_and_counts_events(url: str) -> None:
    with rembus.blocking.component(url + "/pumped") as comp, \
            rembus.sync.component(url) as pub:
        got: list[Any] = []
        comp.subscribe(lambda x: got.append(x), topic="t")
        pub.publish("t", 1, qos=1)  # the broker took it, so it is on its way to us
        handled = 0
        while not got:
            handled += comp.process(WAIT)
        assert got == [1] and handled >= 1
        assert comp.process(0) == 0


def test_selector_loop_with_the_hooks(url: str) -> None:
    comp = rembus.blocking.component(url + "/selected")
    pub = rembus.sync.component(url)
    try:
        got = Collector()
        comp.subscribe(got, topic="big")
        payload = b"x" * (3 << 20)
        pub.publish("big", payload)
        with selectors.DefaultSelector() as selector:
            selector.register(comp, selectors.EVENT_READ)
            while not got.items:
                deadline = comp.next_deadline()
                timeout = WAIT if deadline is None else max(0.0, deadline - time.monotonic())
                selector.select(timeout)
                comp.process(0)
        assert got.items == [payload]
        assert comp.fileno() >= 0 and not comp.want_write()
    finally:
        comp.close()
        pub.close()
    assert comp.fileno() == -1


def test_pipelined_rpcs_and_want_write(url: str) -> None:
    with rembus.sync.component(url + "/pipe_server", workers=4) as server, \
            rembus.blocking.component(url) as client:
        server.expose(lambda x: x, topic="echo")
        big = b"y" * (8 << 20)
        replies = [client.rpc_nowait("echo", i) for i in range(100)]
        replies.append(client.rpc_nowait("echo", big))
        assert [r.result() for r in replies[:100]] == list(range(100))
        assert replies[-1].done() or replies[-1].result() == big
        assert replies[-1].result() == big


def test_async_handlers_are_refused(url: str) -> None:
    with rembus.blocking.component(url) as comp:
        async def handler() -> None:
            pass

        with pytest.raises(TypeError, match="plain function"):
            comp.subscribe(handler)
        with pytest.raises(TypeError, match="plain function"):
            comp.expose(handler)


@pytest.mark.usefixtures("ctrl_c")
def test_forever_returns_on_ctrl_c(url: str) -> None:
    comp = rembus.blocking.component(url + "/blocking_forever")
    entered = threading.Event()
    process = comp.process

    def marked(timeout: float | None = 0.0) -> int:
        entered.set()
        return process(timeout)

    comp.process = marked  # type: ignore[method-assign]

    def interrupt() -> None:
        entered.wait(WAIT)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    comp.forever()
    with pytest.raises(RembusConnectionClosed):
        comp.publish("t", 1)


def test_forever_ends_when_a_handler_closes(url: str) -> None:
    comp = rembus.blocking.component(url + "/closes_itself")
    with rembus.sync.component(url) as other:
        comp.subscribe(lambda: comp.close(), topic="stop")
        other.publish("stop")
        comp.forever()
    assert not comp.is_connected


def test_close_reads_until_the_brokers_close_frame(url: str) -> None:
    """Close waits for the broker's close frame: what the broker sent before it is handled,
    not answered with a reset (which fails the broker's writes)."""
    comp = rembus.blocking.component(url + "/closing")
    got: list[Any] = []
    comp.subscribe(lambda x: got.append(x), topic="t")
    with rembus.sync.component(url) as pub:
        pub.publish("t", 1, qos=1)  # the broker took it, so it is on its way to us
    comp.close()  # without a process() call before
    assert got == [1]
