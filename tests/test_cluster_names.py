"""Name leases and component locations in JetStream, against real NATS servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import nats.errors
import pytest
from nats.js import JetStreamContext

from broker_process import WAIT
from nats_cluster import POLL, NatsCluster, nats_client
from rembus.broker.cluster.kvstore import Bucket
from rembus.broker.cluster.locations import Locations
from rembus.broker.cluster.names import LeaseLimit, NameLeases
from rembus.broker.cluster.subjects import SubjectSpace, encode_segment

T = TypeVar("T")
SPACE = SubjectSpace("tests")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), WAIT))  # type: ignore[arg-type]


@asynccontextmanager
async def jetstream(*urls: str) -> AsyncIterator[JetStreamContext]:
    """JetStream through a client of the given nodes."""
    async with nats_client(*urls) as nc:
        yield nc.jetstream(timeout=5)


async def eventually(action: Callable[[], Awaitable[T]]) -> T:
    """The result of ``action`` once NATS answers it (while a new leader is elected, say)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        try:
            return await action()
        except nats.errors.Error:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(POLL)


async def until_true(action: Callable[[], Awaitable[bool]]) -> None:
    """Bounded polling until ``action`` succeeds: we wait for an outcome, not for a time."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await action():
        assert asyncio.get_running_loop().time() < deadline, "no success in time"
        await asyncio.sleep(POLL)


def test_one_name_has_one_owner(nats_node: NatsCluster) -> None:
    name = "sensor.kitchen/é 1"

    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            first = await NameLeases.open(js, SPACE)
            second = await NameLeases.open(js, SPACE)
            assert await first.acquire(name, "broker-a/1")
            assert not await second.acquire(name, "broker-b/7")
            assert await second.owner(name) == "broker-a/1"
            assert await first.acquire(name, "broker-a/1")  # the owner again: still its own
            assert not await first.acquire(name, "broker-a/2")  # another connection: refused
            assert await first.renew(name)  # and the first one keeps it
            assert not await second.renew(name)  # never held
            assert await first.release(name)
            assert await first.owner(name) is None
            assert not await first.renew(name)  # released
            assert await second.acquire(name, "broker-b/7")
            assert not await first.acquire(name, "broker-a/1")
            assert second.held == {name: "broker-b/7"} and first.held == {}

    run(scenario)


def test_a_broker_holds_a_bounded_number_of_leases(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            leases = await NameLeases.open(js, SPACE, max_held=2)
            assert await leases.acquire("a", "b1") and await leases.acquire("b", "b1")
            with pytest.raises(LeaseLimit):
                await leases.acquire("c", "b1")
            assert await leases.acquire("a", "b1")  # held already: no new lease
            await leases.release_all()
            assert leases.held == {} and await leases.owner("a") is None

    run(scenario)


def test_contenders_on_two_nodes_one_wins(nats_trio: NatsCluster) -> None:
    names = [f"comp{i}" for i in range(8)]

    async def scenario() -> None:
        first, second = (node.url for node in nats_trio.nodes[:2])
        async with jetstream(first) as js_a, jetstream(second) as js_b:
            a = await NameLeases.open(js_a, SPACE, replicas=3)
            b = await NameLeases.open(js_b, SPACE, replicas=3)
            for name in names:
                won = await asyncio.gather(a.acquire(name, "a"), b.acquire(name, "b"))
                assert sorted(won) == [False, True], name
                winner = "a" if won[0] else "b"
                assert await a.owner(name) == winner and await b.owner(name) == winner
            assert set(a.held) | set(b.held) == set(names)
            assert not set(a.held) & set(b.held)

    run(scenario)


def test_a_lease_expires_when_its_owner_stops_renewing(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            owner = await NameLeases.open(js, SPACE, ttl=1)
            other = await NameLeases.open(js, SPACE, ttl=1)
            assert await owner.acquire("n", "dies")
            assert await owner.renew("n")
            assert not await other.acquire("n", "takes over")
            await until_true(lambda: other.acquire("n", "takes over"))
            assert await owner.renew_all() == ["n"]
            assert await owner.owner("n") == "takes over"

    run(scenario)


def test_kept_leases_outlive_their_ttl_and_report_a_loss(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            leases = await NameLeases.open(js, SPACE, ttl=1)
            other = await NameLeases.open(js, SPACE, ttl=1)
            assert await leases.acquire("kept", "b1")
            first = await leases.bucket.get(encode_segment("kept"))
            assert first is not None
            lost: asyncio.Queue[str] = asyncio.Queue(maxsize=8)
            keeper = asyncio.create_task(leases.keep_renewed(lost.put_nowait))
            try:
                async def renewed_past_the_ttl() -> bool:
                    # a renewal every third of the TTL: the fourth is past the TTL
                    entry = await leases.bucket.get(encode_segment("kept"))
                    return entry is not None and entry.revision >= first.revision + 4

                await until_true(renewed_past_the_ttl)
                assert not await other.acquire("kept", "b2")
                assert lost.empty()
                # someone overwrites the lease (as after an expiry and a new owner)
                await leases.bucket.write(encode_segment("kept"), b"b2", None, 1)
                assert await lost.get() == "kept"
                assert leases.held == {}
            finally:
                keeper.cancel()

    run(scenario)


def test_a_lease_counts_as_lost_when_nats_is_gone(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            leases = await NameLeases.open(js, SPACE, ttl=1)
            assert await leases.acquire("cut off", "b1")
            deadline = leases.deadline("cut off")
            assert deadline is not None
            lost: asyncio.Queue[str] = asyncio.Queue(maxsize=8)
            nats_node.stop()
            keeper = asyncio.create_task(leases.keep_renewed(lost.put_nowait))
            try:
                assert await lost.get() == "cut off"
                assert asyncio.get_running_loop().time() >= deadline
                assert leases.held == {} and leases.deadline("cut off") is None
            finally:
                keeper.cancel()

    run(scenario)


def test_a_released_name_leaves_nothing_behind(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            leases = await NameLeases.open(js, SPACE, ttl=1)
            assert await leases.acquire("gone", "b1")
            assert await leases.release("gone")
            marker = await leases.bucket.get(encode_segment("gone"))
            assert marker is not None and marker.value is None

            async def no_key() -> bool:
                return await leases.bucket.get(encode_segment("gone")) is None

            await until_true(no_key)

    run(scenario)


def test_the_names_survive_losing_a_node(nats_trio: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_trio.urls) as js:
            holder = await NameLeases.open(js, SPACE, replicas=3)
            assert await holder.acquire("kept", "holder")
            info = await js.stream_info(holder.bucket.stream)
            assert info.cluster is not None and info.cluster.replicas is not None
            assert len(info.cluster.replicas) == 2
            leader = nats_trio.node(info.cluster.leader or "")
            leader.stop(signal.SIGKILL)
            survivors = nats_trio.urls
            assert len(survivors) == 2
            async with jetstream(*survivors) as js_other:
                other = NameLeases(Bucket(js_other, holder.bucket.name))
                assert not await eventually(lambda: other.acquire("kept", "other"))
                assert await eventually(lambda: other.acquire("new", "other"))
                assert await eventually(lambda: holder.renew("kept"))
                assert await eventually(lambda: other.owner("new")) == "other"

    run(scenario)


def test_locations_follow_a_component_between_brokers(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            where = await Locations.open(js, SPACE)
            assert await where.locate("comp.t") is None
            await where.place("comp.t", "b1")
            assert await where.locate("comp.t") == "b1"
            await where.place("comp.t", "b2")  # reconnected through b2 before b1 saw it go
            assert not await where.remove("comp.t", "b1")
            assert await where.locate("comp.t") == "b2"
            assert await where.remove("comp.t", "b2")
            assert await where.locate("comp.t") is None
            assert not await where.remove("comp.t", "b2")

    run(scenario)


def test_a_location_of_a_dead_broker_expires(nats_node: NatsCluster) -> None:
    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            where = await Locations.open(js, SPACE, ttl=1)
            await where.place("comp", "dead")
            assert await where.locate("comp") == "dead"

            async def gone() -> bool:
                return await where.locate("comp") is None

            await until_true(gone)

    run(scenario)
