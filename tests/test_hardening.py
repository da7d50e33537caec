"""Hostile or careless operators and peers against a real broker process.

Each test attacks a ``rembus broker`` subprocess on 127.0.0.1 and checks the
outcome: the attempt is refused, and the broker keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
import rembus_proto as rp
from broker_process import WAIT, BrokerProcess, rembus_cli
from rembus.client.wire import Wire, WireClosed

_ids = itertools.count(1)


def _new_id() -> bytes:
    return next(_ids).to_bytes(8, "little")


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), WAIT))


async def _raw(broker: BrokerProcess) -> Wire:
    """A raw WebSocket to the broker: it sends what our client would refuse to."""
    return await Wire.open("127.0.0.1", broker.port)


async def _request(w: Wire, message: Any) -> rp.Response:
    w.send(message if isinstance(message, bytes) else rp.encode(message))
    msg_id = rp.decode(message).id if isinstance(message, bytes) else message.id
    while True:
        reply = rp.decode(await w.recv())
        if isinstance(reply, rp.Response) and reply.id == msg_id:
            return reply


async def _close_code(w: Wire) -> int:
    """Read until the broker closes the connection; its close code."""
    with pytest.raises(WireClosed):
        while True:
            await w.recv()
    assert w.closed is not None
    return w.closed.code


def _serves(broker: BrokerProcess) -> bool:
    with rembus.sync.component(broker.url, reconnect=False) as probe:
        return bool(probe.rpc("version"))


def test_two_brokers_cannot_share_a_data_dir(tmp_path: Path) -> None:
    """A second broker on a data dir in use exits 1 with a clear message."""
    data = tmp_path / "data"
    with BrokerProcess(data) as first:
        second = rembus_cli("broker", "--host", "127.0.0.1", "--port", "0",
                            "--data-dir", str(data))
        assert second.returncode == 1
        assert f"data dir {data} is in use by another broker" in second.stderr
        assert "Traceback" not in second.stderr
        assert _serves(first)


def test_a_killed_broker_leaves_no_stale_data_dir_lock(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    assert broker.process is not None
    broker.process.stop(signal.SIGKILL)
    broker.process = None
    with BrokerProcess(tmp_path / "data") as again:
        assert _serves(again)


def test_admin_grant_needs_a_registered_name_or_force(tmp_path: Path) -> None:
    """Granting admin to a free name would let whoever registers it first be admin."""
    data = str(tmp_path)
    refused = rembus_cli("broker", "admin", "add", "boss", "--data-dir", data)
    assert refused.returncode == 1
    assert "boss is not registered" in refused.stderr and "--force" in refused.stderr
    assert rembus_cli("broker", "admin", "list", "--data-dir", data).stdout == ""
    forced = rembus_cli("broker", "admin", "add", "boss", "--force", "--data-dir", data)
    assert forced.returncode == 0
    assert rembus_cli("broker", "admin", "list", "--data-dir", data).stdout == "boss\n"


def test_subscribe_with_a_huge_msg_from_is_answered(tmp_path: Path) -> None:
    """``msg_from: 10**400`` does not fit a float: it is a window older than anything."""
    with BrokerProcess(tmp_path / "data") as broker:
        async def attack() -> None:
            w = await _raw(broker)
            reply = await _request(w, rp.Admin(_new_id(), "t",
                                               {"cmd": "subscribe", "msg_from": 10**400}))
            assert reply.status == rp.Status.OK
            await w.close()
        _run(attack)
        assert _serves(broker)
        assert broker.process is not None
        assert "Traceback" not in "".join(broker.process.output)


def test_wildcard_matching_is_not_exponential(tmp_path: Path) -> None:
    """A pattern that makes a backtracking matcher run for ages is matched in linear time,
    and a pattern over the length limit is refused with a status."""
    with BrokerProcess(tmp_path / "data") as broker:
        async def attack() -> None:
            w = await _raw(broker)
            pattern = "**a" * 8 + "**b"
            reply = await _request(w, rp.Admin(_new_id(), pattern, {"cmd": "subscribe"}))
            assert reply.status == rp.Status.OK
            reactive = rp.Admin(_new_id(), "__config__", {"cmd": "reactive", "status": True})
            assert (await _request(w, reactive)).status == rp.Status.OK
            publisher = await _raw(broker)  # a publisher gets no copy of its own messages
            publisher.send(rp.Pub("a" * 48, rp.Payload.of([1])).encode(),
                           rp.Pub("a" * 47 + "b", rp.Payload.of([2])).encode())
            delivered = rp.decode(await w.recv())  # only the topic that matches
            assert isinstance(delivered, rp.Pub)
            assert delivered.data.value == ["a" * 47 + "b", 2]
            huge = "*" + "x" * (8 << 20)
            refused = await _request(w, rp.Admin(_new_id(), huge, {"cmd": "subscribe"}))
            assert refused.status == rp.Status.GENERIC_ERROR
            assert "the limit is 1024" in str(refused.data.value)
            await publisher.close()
            await w.close()
        _run(attack)
        assert _serves(broker)


def test_look_alike_names_and_topics_are_refused(tmp_path: Path) -> None:
    """Control and format characters (bidi overrides, zero-width spaces) make one name
    look like another: refused in names, subscriptions and calls; a publication on such
    a topic closes its connection."""
    with BrokerProcess(tmp_path / "data") as broker:
        async def attack() -> None:
            w = await _raw(broker)
            named = await _request(w, rp.Identity(_new_id(), "adm\u202ein"))
            assert named.status == rp.Status.GENERIC_ERROR
            assert "U+202E" in str(named.data.value)
            for topic in ("news\u200b", "bell\x07"):
                subscribed = await _request(w, rp.Admin(_new_id(), topic, {"cmd": "subscribe"}))
                assert subscribed.status == rp.Status.GENERIC_ERROR
                called = await _request(w, rp.Rpc(_new_id(), topic, rp.Payload.of([])))
                assert called.status == rp.Status.GENERIC_ERROR
            w.send(rp.Pub("news\u200b", rp.Payload.of([1])).encode())
            assert await _close_code(w) == 1002
        _run(attack)
        assert _serves(broker)


def test_unbounded_identifiers_are_refused(tmp_path: Path) -> None:
    """Names, topics and patterns over their limits are refused with a status; a message
    id over its limit is malformed and closes its connection (1002)."""
    with BrokerProcess(tmp_path / "data") as broker:
        async def attack() -> None:
            w = await _raw(broker)
            named = await _request(w, rp.Identity(_new_id(), "n" * 257))
            assert named.status == rp.Status.GENERIC_ERROR
            assert "the limit is 256" in str(named.data.value)
            called = await _request(w, rp.Rpc(_new_id(), "f" * 1025, rp.Payload.of([])))
            assert "the limit is 1024" in str(called.data.value)
            exposed = await _request(w, rp.Admin(_new_id(), "f" * 1025, {"cmd": "expose"}))
            assert exposed.status == rp.Status.GENERIC_ERROR
            deep = "/".join(["*"] * 33)
            subscribed = await _request(w, rp.Admin(_new_id(), deep, {"cmd": "subscribe"}))
            assert "33 segments" in str(subscribed.data.value)
            setup = await _request(w, rp.Admin(_new_id(), "__config__", {
                "cmd": "setup", "exposers": ["ok", "f" * 1025], "subscribers": []}))
            assert setup.status == rp.Status.GENERIC_ERROR
            w.send(rp.Rpc(b"\x01" * 1000, "version", rp.Payload.of([])).encode())
            assert await _close_code(w) == 1002
        _run(attack)
        assert _serves(broker)


def test_setup_listing_many_methods_is_answered(tmp_path: Path) -> None:
    """One ``setup`` with 100,000 methods costs linear time (it was quadratic): it is
    answered, the last method is reachable, and others are served meanwhile."""
    methods = [f"m{n}" for n in range(100_000)]
    with BrokerProcess(tmp_path / "data") as broker:
        async def attack() -> None:
            w = await _raw(broker)
            assert (await _request(w, rp.Identity(_new_id(), "many"))).status == rp.Status.OK
            reply = await _request(w, rp.Admin(_new_id(), "__config__", {
                "cmd": "setup", "exposers": methods, "subscribers": []}))
            assert reply.status == rp.Status.OK
            caller = await _raw(broker)
            caller.send(rp.Rpc(_new_id(), methods[-1], rp.Payload.of([])).encode())
            forwarded = rp.decode(await w.recv())
            assert isinstance(forwarded, rp.Rpc) and forwarded.topic == methods[-1]
            await caller.close()
            await w.close()
        _run(attack)
        assert _serves(broker)


def _pub_of_size(topic: str, size: int) -> bytes:
    """A QoS0 publication on ``topic`` of exactly ``size`` encoded bytes."""
    filler = size
    while True:
        frame = rp.Pub(topic, rp.Payload.of(["x" * filler])).encode()
        if len(frame) == size:
            return frame
        filler -= len(frame) - size


def test_a_pattern_delivery_over_the_size_limit_is_skipped(tmp_path: Path) -> None:
    """A publication at the size limit grows by the topic a pattern delivery adds: the
    wildcard subscriber is not sent it (it would drop it, or its connection), it is
    logged and counted, and the subscriber keeps its connection and later messages."""
    limit = 4096
    with BrokerProcess(tmp_path / "data", "--max-message-size", str(limit)) as broker:
        async def attack() -> None:
            sub = await _raw(broker)
            assert (await _request(sub, rp.Admin(_new_id(), "**", {"cmd": "subscribe"}))
                    ).status == rp.Status.OK
            reactive = rp.Admin(_new_id(), "__config__", {"cmd": "reactive", "status": True})
            assert (await _request(sub, reactive)).status == rp.Status.OK
            publisher = await _raw(broker)
            publisher.send(_pub_of_size("big", limit), rp.Pub("small", rp.Payload.of([1])).encode())
            delivered = rp.decode(await sub.recv())
            assert isinstance(delivered, rp.Pub) and delivered.data.value == ["small", 1]
            await publisher.close()
            await sub.close()
        _run(attack)
        assert broker.process is not None
        broker.process.wait_for(rf"not sent: over the limit of {limit} bytes")
        assert _serves(broker)


def test_pending_calls_are_capped_broker_wide(tmp_path: Path) -> None:
    """Calls to an exposer that never answers fill the broker-wide budget of pending
    calls: further calls are refused with a status, and the broker serves others."""
    cap = 200
    with BrokerProcess(tmp_path / "data", "--max-pending-calls-total", str(cap)) as broker:
        async def attack() -> None:
            sink = await _raw(broker)
            assert (await _request(sink, rp.Admin(_new_id(), "sink", {"cmd": "expose"}))
                    ).status == rp.Status.OK
            attackers = [await _raw(broker) for _ in range(4)]
            for n in range(cap):
                attackers[n % 4].send(rp.Rpc(_new_id(), "sink", rp.Payload.of([n])).encode())
            for _ in range(cap):  # every call reached the sink, which never answers
                assert isinstance(rp.decode(await sink.recv()), rp.Rpc)
            refused = await _request(attackers[0], rp.Rpc(_new_id(), "sink", rp.Payload.of([])))
            assert refused.status == rp.Status.GENERIC_ERROR
            assert "too many requests in flight in the broker" in str(refused.data.value)
            for w in [*attackers, sink]:
                await w.close()
        _run(attack)
        assert _serves(broker)
