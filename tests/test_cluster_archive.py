"""Stored messages and QoS across brokers: the archive stream and the twins bucket.

Real broker processes on a real 3-node NATS cluster. A QoS1/2 publication is
acknowledged once the archive stored it, so a test that publishes at QoS1/2
needs no probe before the subscriber comes back: what was acknowledged is kept.
"""

from __future__ import annotations

import asyncio
import math
import queue
import signal
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rembus.sync
from broker_process import WAIT, Process, until
from nats_cluster import NatsCluster
from rembus.errors import RembusTimeout
from rembus_proto.broker.state import Twin
from rembus_proto.store import TwinRecord
from test_cluster_broker import Inbox, cluster_brokers

pytest.importorskip("nats")

from nats.aio.msg import Msg
from nats.js import JetStreamContext

import rembus_proto
from nats_cluster import nats_client
from rembus.broker.cluster.archive import ClusterArchive
from rembus.broker.cluster.subjects import SubjectSpace
from rembus.broker.cluster.twins import (
    TwinStore,
    decode_twin,
    encode_twin,
    retro_topics,
)
from rembus_proto.broker import Router, RouterConfig
from rembus_proto.broker.actions import Forward, NeedReplay
from rembus_proto.store import MemoryStore
from router_harness import Net, Peer
from test_cluster_archive_router import cluster_net, login
from test_cluster_router import orders

topics = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1,
                 max_size=12)
windows = st.sampled_from([0.0, math.inf, 60.0, 1e-3])


@given(subs=st.dictionaries(topics, windows, max_size=5),
       exposed=st.lists(topics, max_size=3, unique=True),
       mark=st.integers(0, 2**53), done=st.sets(st.integers(1, 2**40), max_size=5),
       qos2=st.lists(st.binary(min_size=8, max_size=8), max_size=4, unique=True))
def test_a_twin_record_reads_back_as_written(subs: dict[str, float], exposed: list[str],
                                             mark: int, done: set[int],
                                             qos2: list[bytes]) -> None:
    since = dict.fromkeys(subs, mark)
    twin = Twin("ten.ant", True, TwinRecord("ten.ant", subs, exposed, mark, sorted(done),
                                            since))
    for msg_id in qos2:
        twin.qos2_seen[msg_id] = 0.0
    record, ids = decode_twin("ten.ant", encode_twin(twin))
    assert record == twin.record()
    assert ids == qos2
    assert retro_topics(record) == {t for t, w in subs.items() if w > 0}


def test_not_a_twin_record_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_twin("x", b"\xa1\x61a\x01")  # {"a": 1}
    with pytest.raises(ValueError):
        decode_twin("x", b"\xff")


def test_a_former_holder_cannot_overwrite_its_successors_twin(nats_node: NatsCluster) -> None:
    space = SubjectSpace("tests")

    def router_with(subs: dict[str, float]) -> Router:
        router = Router(MemoryStore())
        router.twins["keeper"] = Twin("keeper", True, TwinRecord("keeper", subs))
        return router

    async def scenario() -> None:
        async with nats_client(*nats_node.urls) as nc:
            js = nc.jetstream(timeout=5)
            old = await TwinStore.open(js, space, router_with({"a": math.inf}))
            assert await old.load("keeper") == (None, [])
            await old.save("keeper")
            new = await TwinStore.open(js, space, router_with({"b": 0.0}))
            record, _ = await new.load("keeper")  # the name moved to another broker
            assert record is not None and record.subscriptions == {"a": math.inf}
            await new.save("keeper")
            old.router.twins["keeper"].subs["c"] = 1.0
            await old.save("keeper")  # stale: refused, and never tried again
            assert old.lost == 1
            await old.save("keeper")
            assert old.lost == 1
            latest, _ = await TwinStore(new.bucket, new.router).load("keeper")
            assert latest is not None and latest.subscriptions == {"b": 0.0}
    asyncio.run(asyncio.wait_for(scenario(), WAIT))


def test_the_archive_stream_takes_the_brokers_retention(nats_node: NatsCluster) -> None:
    config = RouterConfig(retention_max_age=3600.0, retention_max_per_topic=50,
                          retention_max_total_bytes=10**8)

    async def scenario() -> None:
        async with nats_client(*nats_node.urls) as nc:
            js = nc.jetstream(timeout=5)
            archive = await ClusterArchive.open(js, SubjectSpace("tests"),
                                                Router(MemoryStore(), config), lambda: None)
            info = await js.stream_info(archive.stream)
            assert (info.config.max_age, info.config.max_msgs_per_subject,
                    info.config.max_bytes) == (3600.0, 50, 10**8)
            assert info.config.subjects == ["rembus.tests.pub.kept.>"]
            assert await archive.last_seq() == 0
    asyncio.run(asyncio.wait_for(scenario(), WAIT))


def _replay_once(urls: list[str], space: str, monkeypatch: pytest.MonkeyPatch,
                 first_pull: Callable[[], list[Msg]]) -> tuple[Net, Peer]:
    """A retroactive "keeper" and one kept publication on "t"; the archive answers the
    keeper's replay request, its first pull being ``first_pull()`` (then real ones)."""
    real_fetch = JetStreamContext.PullSubscription.fetch
    pulls = [first_pull]

    async def fetch(sub: JetStreamContext.PullSubscription, *args: Any,
                    **kwargs: Any) -> list[Msg]:
        if pulls:
            return pulls.pop()()
        return await real_fetch(sub, *args, **kwargs)
    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", fetch)
    net = cluster_net()
    keeper = login(net, "keeper")
    keeper.subscribe("t", msg_from=math.inf)
    (request,) = orders(net, NeedReplay)

    async def scenario() -> None:
        async with nats_client(*urls) as nc:
            archive = await ClusterArchive.open(nc.jetstream(timeout=5),
                                                SubjectSpace(space), net.router, net.pump)
            payload = rembus_proto.Payload.of([1]).raw
            await archive.keep(Forward(".", "t", payload, publisher="writer", kept=True))
            archive.replay(request)
            await asyncio.wait(set(archive.tasks))  # it ends once it delivered a batch
            await archive.close(request.twin)
    asyncio.run(asyncio.wait_for(scenario(), WAIT))
    assert pulls == []
    return net, keeper


def test_a_replay_goes_on_after_a_pull_that_ends_empty(nats_node: NatsCluster,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # nats-py's fetch answers [] when its pull request ends with a status (it expired
    # on the server before the client's timeout, frequent on a loaded machine)
    _, keeper = _replay_once(nats_node.urls, "emptypull", monkeypatch, list)
    assert keeper.pubs() == [("t", (1,))]


def test_a_replay_that_fails_unexpectedly_closes_its_component(
        nats_node: NatsCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # an error _replay does not expect would leave the twin waiting for ever: its
    # connection is closed instead (1011), and the component's reconnect starts afresh
    def unexpected() -> list[Msg]:
        raise RuntimeError("unexpected")
    net, keeper = _replay_once(nats_node.urls, "failedpull", monkeypatch, unexpected)
    assert [(c.conn, c.code) for c in net.closes] == [(keeper.conn, 1011)]


def test_a_following_replay_reads_on_through_the_same_consumer(nats_node: NatsCluster) -> None:
    net = cluster_net()
    keeper = login(net, "keeper")
    keeper.subscribe("t", msg_from=math.inf)
    twin = net.router.twins["keeper"]
    archives: list[ClusterArchive] = []

    def flush() -> None:  # as the broker does: the router's output, its replay requests
        net.pump()
        for request in orders(net, NeedReplay):
            archives[0].replay(request)

    async def scenario() -> list[str]:
        async with nats_client(*nats_node.urls) as nc:
            archive = await ClusterArchive.open(nc.jetstream(timeout=5), SubjectSpace("follow"),
                                                net.router, flush)
            archives.append(archive)
            flush()
            consumers = []
            try:
                for value in (1, 2):
                    payload = rembus_proto.Payload.of([value]).raw
                    await archive.keep(Forward(".", "t", payload, publisher="writer",
                                               kept=True))
                    # the request out ends once it delivered; the next one is then out
                    await asyncio.wait(set(archive.tasks))
                    consumers.append(archive.feeds[twin].name)
            finally:
                for task in archive.tasks:
                    task.cancel()
                await asyncio.gather(*archive.tasks, return_exceptions=True)
                await archive.close(twin)
            return consumers
    first, second = asyncio.run(asyncio.wait_for(scenario(), WAIT))
    assert keeper.pubs() == [("t", (1,)), ("t", (2,))]
    assert first == second


def _received(inbox: Inbox, count: int) -> list[object]:
    return [inbox.next() for _ in range(count)]


def test_a_retroactive_subscriber_gets_its_backlog_on_another_broker(
        nats_trio: NatsCluster, tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 3) as (b0, b1, b2):
        first = Inbox()
        keeper = rembus.sync.component(f"{b0.url}/keeper")
        keeper.subscribe(first, True, topic="log")
        keeper.subscribe(first, True, topic="metrics/*")
        keeper.close()  # its twin (subscriptions, mark) stays in the cluster
        publisher = rembus.sync.component(f"{b2.url}/writer")
        try:
            for i in range(30):
                publisher.publish("log", i, qos=1)
                publisher.publish("metrics/cpu", -i, qos=1)
            publisher.publish("other", "not subscribed", qos=1)
            again = Inbox()
            keeper = rembus.sync.component(f"{b1.url}/keeper")
            keeper.subscribe(again, True, topic="log")
            keeper.subscribe(again, True, topic="metrics/*")
            got = _received(again, 60)
            assert got == [item for i in range(30) for item in (i, ["metrics/cpu", -i])]
            publisher.publish("log", "live", qos=1)
            assert again.next() == "live"  # nothing owed twice in between
            keeper.close()
            # back on the first broker: nothing owed any more, then what came meanwhile
            publisher.publish("log", "while away", qos=1)
            last = Inbox()
            keeper = rembus.sync.component(f"{b0.url}/keeper")
            keeper.subscribe(last, True, topic="log")
            keeper.subscribe(last, True, topic="metrics/*")
            assert last.next() == "while away"
            publisher.publish("log", "end", qos=1)
            assert last.next() == "end"
            assert again.items.empty() and first.items.empty()
        finally:
            keeper.close()
            publisher.close()


def test_the_backlog_outlives_the_broker_the_subscriber_used(nats_trio: NatsCluster,
                                                             tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 3, lease_ttl=3) as (b0, b1, b2):
        keeper = rembus.sync.component([f"{b0.url}/keeper", f"{b1.url}/keeper"])
        keeper.subscribe(Inbox(), True, topic="log")
        publisher = rembus.sync.component(f"{b2.url}/writer")
        try:
            publisher.publish("log", "seen", qos=1)
            assert b0.process is not None
            b0.process.stop(signal.SIGKILL)  # the keeper's broker dies: keeper away
            b0.process = None
            keeper.close()
            for i in range(20):
                publisher.publish("log", i, qos=1)
            again = Inbox()
            keeper = rembus.sync.component(f"{b1.url}/keeper")
            keeper.subscribe(again, True, topic="log")
            first = again.next()
            if first == "seen":  # delivered before the kill, its mark not stored yet
                first = again.next()
            assert [first, *_received(again, 19)] == list(range(20))
            publisher.publish("log", "live", qos=1)
            assert again.next() == "live"
        finally:
            keeper.close()
            publisher.close()


def test_retroactive_interest_keeps_qos0_publications(nats_trio: NatsCluster,
                                                      tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2) as (b0, b1):
        publisher = rembus.sync.component(f"{b1.url}/feeder")
        rounds = iter(range(10**6))

        def away_and_back(first: object, *qos0: object) -> Inbox:
            """keeper0 leaves b0, ``qos0`` is published (then a QoS1 mark), keeper0 comes
            back on b1; its inbox, once ``first`` was the first thing it got."""
            keeper = rembus.sync.component(f"{b0.url}/keeper0")
            keeper.subscribe(Inbox(), True, topic="feed")
            keeper.close()
            for value in qos0:
                publisher.publish("feed", value)
            publisher.publish("feed", "sync", qos=1)  # stored after the QoS0 ones
            inbox = Inbox()
            keeper = rembus.sync.component(f"{b1.url}/keeper0")
            try:
                keeper.subscribe(inbox, True, topic="feed")
                assert inbox.next() == first
                if first != "sync":
                    assert inbox.next() == "sync"
            finally:
                keeper.close()
            return inbox

        def interest_known() -> bool | None:
            # b1 learns of the retroactive subscription through the twins bucket: until
            # then its QoS0 publications are not kept ("sync" comes first)
            probe = f"probe{next(rounds)}"
            try:
                away_and_back(probe, probe)
            except AssertionError:
                return None
            return True
        try:
            until(interest_known, "the retroactive interest known on the other broker")
            keeper = rembus.sync.component(f"{b0.url}/keeper0")
            got = Inbox()
            keeper.subscribe(got, True, topic="feed")
            keeper.close()
            for i in range(10):
                publisher.publish("feed", i)
            publisher.publish("feed", "sync", qos=1)
            keeper = rembus.sync.component(f"{b1.url}/keeper0")
            again = Inbox()
            keeper.subscribe(again, True, topic="feed")
            assert _received(again, 11) == [*range(10), "sync"]
            keeper.close()
        finally:
            publisher.close()


def _publish_through_a_kill(publisher: rembus.sync.Component, count: int, qos: int,
                            kill_at: int, kill: threading.Event,
                            errors: list[BaseException]) -> None:
    try:
        for i in range(count):
            if i == kill_at:
                kill.set()
            with suppress(RembusTimeout):  # stays queued in the client: sent again later
                publisher.publish("stream", i, qos=qos)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def _losses(seen: Counter[int], count: int, brokers: list[Process]) -> str:
    """What a receiver missed, its duplicates, and what the brokers printed."""
    missing = sorted(set(range(count)) - set(seen))
    twice = sorted(k for k, n in seen.items() if n > 1)
    logs = "\n".join(f"--- broker {i}:\n{p.printed()[-20_000:]}" for i, p in enumerate(brokers))
    return f"never received {missing}; received more than once {twice}\n{logs}"


def _receive(got: Inbox, seen: Counter[int], count: int, brokers: list[Process]) -> None:
    """Count what arrives until ``count`` different messages did (else fail with the losses)."""
    while len(seen) < count:
        try:
            seen[got.next()] += 1
        except queue.Empty:
            raise AssertionError(_losses(seen, count, brokers)) from None


def _no_more_than_once(got: Inbox, seen: Counter[int], count: int, qos: int,
                       killed: str) -> None:
    """Every message came (QoS2: once); print the duplicates (allowed at QoS1)."""
    with pytest.raises(queue.Empty):
        got.next(1.0)  # a late duplicate would be here
    duplicates = sum(seen.values()) - count
    print(f"kill -9 of {killed}, QoS{qos}: {count} messages, 0 lost, {duplicates} duplicates")
    assert sorted(seen) == list(range(count))
    if qos == 2:
        assert duplicates == 0


@pytest.mark.parametrize("qos", [1, 2])
def test_kill_9_of_the_publishers_broker_loses_nothing(nats_trio: NatsCluster, tmp_path: Path,
                                                       qos: int) -> None:
    count = 300
    with cluster_brokers(nats_trio, tmp_path, 3, lease_ttl=3) as (b0, b1, b2):
        got = Inbox()
        subscriber = rembus.sync.component(f"{b2.url}/reader")
        subscriber.subscribe(got, True, topic="stream")
        # resends for as long as it takes (a loaded machine may be slow to fail over)
        publisher = rembus.sync.component([f"{b0.url}/sender", f"{b1.url}/sender"],
                                          timeout=5, send_retries=10_000)
        kill = threading.Event()
        processes = [b.process for b in (b0, b1, b2) if b.process is not None]
        try:
            errors: list[BaseException] = []
            worker = threading.Thread(target=_publish_through_a_kill,
                                      args=(publisher, count, qos, count // 3, kill, errors))
            worker.start()
            assert kill.wait(WAIT)
            assert b0.process is not None
            b0.process.stop(signal.SIGKILL)
            b0.process = None
            worker.join(WAIT * 2)
            assert not worker.is_alive()
            assert errors == []
            seen: Counter[int] = Counter()
            _receive(got, seen, count, processes)
            _no_more_than_once(got, seen, count, qos, "the publisher's broker")
        finally:
            publisher.close()
            subscriber.close()


@pytest.mark.parametrize("qos", [1, 2])
def test_kill_9_of_the_subscribers_broker_loses_nothing(nats_trio: NatsCluster,
                                                        tmp_path: Path, qos: int) -> None:
    count = 300
    with cluster_brokers(nats_trio, tmp_path, 3, lease_ttl=3) as (b0, b1, b2):
        got = Inbox()
        subscriber = rembus.sync.component([f"{b0.url}/reader", f"{b1.url}/reader"])
        subscriber.subscribe(got, True, topic="stream")
        publisher = rembus.sync.component(f"{b2.url}/sender", timeout=5, send_retries=10_000)
        seen: Counter[int] = Counter()
        processes = [b.process for b in (b0, b1, b2) if b.process is not None]
        errors: list[BaseException] = []
        worker = threading.Thread(target=_publish_through_a_kill,
                                  args=(publisher, count, qos, count, threading.Event(), errors))
        try:
            worker.start()
            _receive(got, seen, count // 3, processes)  # flowing through b0
            assert b0.process is not None
            b0.process.stop(signal.SIGKILL)  # while it flows: the reader fails over to b1
            b0.process = None
            _receive(got, seen, count, processes)
            worker.join(WAIT)
            assert not worker.is_alive()
            assert errors == []
            _no_more_than_once(got, seen, count, qos, "the subscriber's broker")
        finally:
            publisher.close()
            subscriber.close()


def test_a_component_that_never_subscribed_retroactively_gets_no_backlog(
        nats_trio: NatsCluster, tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 2) as (b0, b1):
        got = Inbox()
        plain = rembus.sync.component(f"{b0.url}/plain")
        plain.subscribe(got, topic="news")
        plain.close()
        publisher = rembus.sync.component(f"{b1.url}/talker")
        try:
            publisher.publish("news", "while away", qos=1)
            plain = rembus.sync.component(f"{b1.url}/plain")
            again = Inbox()
            plain.subscribe(again, topic="news")
            publisher.publish("news", "now", qos=1)
            assert again.next() == "now"  # not "while away"
        finally:
            plain.close()
            publisher.close()
