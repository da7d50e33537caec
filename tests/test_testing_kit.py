"""rembus.testing: the in-process network on virtual time, its faults, the plugin, strategies."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

import rembus_proto as rp
from rembus.errors import RembusTimeout
from rembus.testing import Network, Stalled, VirtualClockLoop
from rembus.testing import strategies as rst
from rembus.testing.link import HIGH_WATER
from rembus_proto.broker import RouterConfig
from rembus_proto.topics import check_name, check_topic, is_pattern

SRC = Path(__file__).resolve().parent.parent / "src"


class Inbox:
    """A subscriber that records what it gets."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def __call__(self, value: Any) -> None:
        self.got.append(value)


async def test_rpc_timeout_runs_on_virtual_time(rembus_network: Network) -> None:
    net = rembus_network
    caller = await net.component("caller")
    server = await net.component("server")

    async def slow() -> str:
        await asyncio.sleep(3600)
        return "late"

    await server.expose(slow)
    start = net.time()
    with pytest.raises(RembusTimeout):
        await caller.rpc("slow", timeout=10)
    assert net.time() - start == pytest.approx(10)


async def test_advance_fires_timers_at_their_time(rembus_network: Network) -> None:
    net = rembus_network
    fired: list[float] = []
    net.loop.call_later(5, lambda: fired.append(net.time()))
    await net.advance(4.999)
    assert fired == []
    await net.advance(0.001)
    assert fired == [pytest.approx(5)]


async def test_qos1_is_resent_after_a_dropped_ack(rembus_network: Network) -> None:
    net = rembus_network
    pub = await net.component("pub", ack_timeout=2.0)
    sub = await net.component("sub")
    inbox = Inbox()
    await sub.subscribe(inbox, topic="t")
    net.link(pub).drop("down", rp.Ack)
    start = net.time()
    await pub.publish("t", 1, qos=1)
    assert net.time() - start == pytest.approx(2.0)  # acknowledged only after one resend
    await net.settle()
    assert inbox.got == [1, 1]  # at least once: the resend is delivered again


async def test_reconnect_after_a_cut_follows_the_backoff(rembus_network: Network) -> None:
    net = rembus_network
    comp = await net.component("c", reconnect_initial=1.0)
    link = net.link(comp)
    link.cut()
    await net.settle()
    assert not comp.is_connected
    await net.advance(0.49)  # the first delay is in [0.5, 1.0) s
    assert link.connections == 1
    await net.advance(0.51)
    assert comp.is_connected
    assert link.connections == 2
    assert await comp.rpc("version") is not None


async def test_refused_reconnects_back_off_until_accepted(rembus_network: Network) -> None:
    net = rembus_network
    comp = await net.component("c", reconnect_initial=1.0, reconnect_max=4.0)
    link = net.link(comp)
    link.refuse()
    link.cut()
    await net.advance(60)
    assert not comp.is_connected
    link.refuse(False)
    await net.advance(4)  # at most reconnect_max between attempts
    assert comp.is_connected


async def test_retroactive_delivery_across_a_broker_restart(rembus_network: Network) -> None:
    net = rembus_network
    pub = await net.component("pub")
    sub = await net.component("sub")
    inbox = Inbox()
    await sub.subscribe(inbox, retroactive=True, topic="t")
    sub_link = net.link(sub)
    sub_link.refuse()
    sub_link.cut()
    await pub.publish("t", "while away", qos=1)
    net.restart_broker()
    await net.advance(30)
    assert pub.is_connected and not sub.is_connected
    await pub.publish("t", "after restart", qos=1)
    sub_link.refuse(False)
    await net.advance(10)
    assert sub.is_connected
    assert inbox.got == ["while away", "after restart"]


def test_retention_runs_on_virtual_time() -> None:
    net = Network(config=RouterConfig(retention_max_age=3600, prune_interval=60))

    async def main() -> list[Any]:
        pub = await net.component("pub")
        sub = await net.component("sub")
        inbox = Inbox()
        await sub.subscribe(inbox, retroactive=True, topic="t")
        link = net.link(sub)
        link.refuse()
        link.cut()
        await pub.publish("t", "old", qos=1)
        await net.advance(3000)
        await pub.publish("t", "recent", qos=1)
        await net.advance(700)  # "old" is now past 3600 s and a pruning pass ran
        link.refuse(False)
        await net.advance(10)
        assert sub.is_connected
        return inbox.got

    try:
        assert net.run(main()) == ["recent"]
    finally:
        net.shutdown()


async def test_duplicate_delay_drop_and_reorder(rembus_network: Network) -> None:
    net = rembus_network
    pub = await net.component("pub")
    sub = await net.component("sub")
    inbox = Inbox()
    await sub.subscribe(inbox, topic="t")
    sub_link, pub_link = net.link(sub), net.link(pub)

    sub_link.duplicate("down", rp.Pub)
    await pub.publish("t", "twice")
    await net.settle()
    assert inbox.got == ["twice", "twice"]

    pub_link.reorder("up", rp.Pub, count=2)
    await pub.publish("t", "first")
    await pub.publish("t", "second")
    await net.settle()
    assert inbox.got[2:] == ["second", "first"]

    pub_link.drop("up", lambda m: isinstance(m, rp.Pub) and m.data.args == ("lost",))
    await pub.publish("t", "lost")
    await pub.publish("t", "kept")
    await net.settle()
    assert inbox.got[4:] == ["kept"]

    sub_link.delay(5, "down", rp.Pub)
    await pub.publish("t", "late")
    await net.advance(4.9)
    assert inbox.got[5:] == []
    await net.advance(0.1)
    assert inbox.got[5:] == ["late"]


async def test_heal_removes_persistent_faults(rembus_network: Network) -> None:
    net = rembus_network
    pub = await net.component("pub")
    sub = await net.component("sub")
    inbox = Inbox()
    await sub.subscribe(inbox, topic="t")
    net.link(sub).drop("down", rp.Pub, count=None)
    for i in range(3):
        await pub.publish("t", i)
    await net.settle()
    assert inbox.got == []
    net.link("sub").heal()
    await pub.publish("t", "healed")
    await net.settle()
    assert inbox.got == ["healed"]


async def test_a_publisher_that_never_yields_is_held_back(rembus_network: Network) -> None:
    net = rembus_network
    pub = await net.component("pub")
    sub = await net.component("sub")
    inbox = Inbox()
    await sub.subscribe(inbox, topic="t")
    backlog = 0
    for i in range(3 * HIGH_WATER):
        await pub.publish("t", i)
        backlog = max(backlog, net.broker.backlog())
    await net.settle()
    assert backlog <= HIGH_WATER
    assert inbox.got == list(range(3 * HIGH_WATER))


def test_shutdown_cancels_the_tasks_left() -> None:
    net = Network()
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> asyncio.Task[None]:
        await net.component("c")
        task = asyncio.ensure_future(forever())
        await net.settle()
        return task

    task = net.run(main())
    net.shutdown()
    assert task.cancelled() and cancelled == [True]
    assert net.loop.is_closed()


def test_a_network_runs_only_on_its_loop() -> None:
    net = Network()
    try:
        with pytest.raises(RuntimeError, match="its own loop"):
            asyncio.run(net.component("x"))
    finally:
        net.shutdown()


def test_a_loop_where_nothing_can_happen_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rembus.testing.clock.STALL_LIMIT", 0.01)
    loop = VirtualClockLoop()
    try:
        with pytest.raises(Stalled, match="nothing is scheduled"):
            loop.run_until_complete(loop.create_future())
    finally:
        loop.close()


def test_a_wait_for_what_never_comes_ends_at_max_time() -> None:
    net = Network(max_time=3600)
    try:
        with pytest.raises(Stalled, match="max_time"):
            net.run(net.loop.create_future())  # the broker's periodic timers keep time going
        assert net.time() <= 3600
    finally:
        net.shutdown()


@given(rst.names(), rst.topics(), rst.patterns())
def test_strategies_draw_what_a_broker_accepts(name: str, topic: str, pattern: str) -> None:
    assert check_name(name) is None
    assert check_topic(topic) is None and not is_pattern(topic)
    assert check_topic(pattern) is None and is_pattern(pattern)


@given(rst.messages())
def test_strategy_messages_round_trip(message: rp.Message) -> None:
    assert rp.decode(rp.encode(message)) == message


@given(rst.dataframes())
@settings(max_examples=20, deadline=None)
def test_dataframes_cross_the_network(table: Any) -> None:
    net = Network()

    async def main() -> Any:
        pub = await net.component("pub")
        sub = await net.component("sub")
        inbox = Inbox()
        await sub.subscribe(inbox, topic="frames")
        await pub.publish("frames", table)
        await net.settle()
        return inbox.got

    try:
        got = net.run(main())
    finally:
        net.shutdown()
    assert len(got) == 1 and got[0].equals(table)


PLUGIN_USER = '''
import subprocess

import rembus.blocking
from rembus.errors import RembusTimeout

started = []


async def test_timeout_in_virtual_time(rembus_network):
    a = await rembus_network.component("a")
    b = await rembus_network.component("b")

    async def never():
        await rembus_network.advance(3600)

    await b.expose(never)
    try:
        await a.rpc("never", timeout=10)
    except RembusTimeout:
        print("TIMED OUT AT", rembus_network.time())


def test_real_broker(rembus_broker):
    started.append(rembus_broker.process.proc)
    rb = rembus.blocking.component(rembus_broker.url)
    try:
        print("VERSION", rb.rpc("version"))
    finally:
        rb.close()


def test_the_broker_was_stopped():
    assert started[0].poll() is not None
'''


def test_plugin_fixtures_in_a_pytest_run(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(PLUGIN_USER))
    env = {**os.environ, "PYTHONPATH": str(SRC), "REMBUS_DIR": str(tmp_path / "rb")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "rembus.testing.plugin", "-p", "no:cacheprovider",
         "-q", "-s", "-o", "addopts=", str(tmp_path / "test_user.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert "TIMED OUT AT 10.0" in done.stdout
    assert "VERSION" in done.stdout
