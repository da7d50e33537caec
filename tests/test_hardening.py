"""Hostile or careless operators and peers against a real broker process.

Each test attacks a ``rembus broker`` subprocess on 127.0.0.1 and checks the
outcome: the attempt is refused, and the broker keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import select
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import rembus
import rembus.blocking
import rembus.sync
import rembus_proto as rp
from broker_process import WAIT, BrokerProcess, rembus_cli
from raw_peer import frame, raw_connect, until_closed, upgraded, vm_rss
from rembus.client.wire import Wire, WireClosed
from rembus.errors import ConnectionOverwritten
from rembus_proto.messages import Identity
from security_helpers import make_tls

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


def test_idle_connections_time_out_and_one_address_is_bounded(tmp_path: Path) -> None:
    """Item 5: upgrades that never speak, peers that never pong, too many from one address."""
    with BrokerProcess(tmp_path, "--identify-timeout", "0.5", "--keepalive", "0.5",
                       "--max-connections-per-address", "3") as broker:
        assert broker.process is not None
        idle = [upgraded(broker.port) for _ in range(3)]
        extra = raw_connect(broker.port)  # a fourth from 127.0.0.1: refused
        assert until_closed(extra) == b""
        broker.process.wait_for(r"refused: 3 connections open from 127\.0\.0\.1 "
                                r"\(--max-connections-per-address\)")
        for sock in idle:
            closing = until_closed(sock)
            assert closing.startswith(b"\x88"), closing  # a close frame, then the end
            assert b"--identify-timeout" in closing
            sock.close()
        extra.close()
        # Once identified, a peer that never answers the broker's pings is closed too.
        silent = upgraded(broker.port)
        silent.sendall(frame(0x2, Identity(bytes(16), "silent").encode()))
        closing = until_closed(silent)
        silent.close()
        assert b"--keepalive" in closing
        assert b"\x89" in closing  # it was pinged before
        broker.process.wait_for(r"'silent'.*no pong within 0\.5 s")
        assert _serves(broker)


BUDGET = 1024 * 1024
STALLED = 2.0
"""Seconds without the broker taking a byte after which it counts as not reading."""
MARGIN = 32 * 1024 * 1024


def _flood(sock: socket.socket, data: bytes, total: int) -> bool:
    """Send ``data`` repeatedly, ``total`` bytes at most; true once the broker stops taking
    it (it stopped reading this connection, or closed it)."""
    sock.setblocking(False)
    sent = 0
    pending = memoryview(b"")
    while sent < total:
        if not pending:
            pending = memoryview(data)
        _, writable, _ = select.select([], [sock], [], STALLED)
        if not writable:
            return True
        try:
            n = sock.send(pending)
        except (BrokenPipeError, ConnectionResetError):
            return True
        sent += n
        pending = pending[n:]
    return False


def test_ping_flood_stays_within_the_backlog_budget(tmp_path: Path) -> None:
    """Item 4: pings whose pongs are never read stop being read once the pongs fill the
    backlog budget; the broker's memory stays within it and others are served."""
    with BrokerProcess(tmp_path, "--max-backlog", str(BUDGET)) as broker:
        assert broker.process is not None
        assert _serves(broker)
        before = vm_rss(broker.process.proc.pid)
        attacker = upgraded(broker.port)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pings = frame(0x9, b"p" * 125) * 512
        assert _flood(attacker, pings, 128 * 1024 * 1024)
        assert vm_rss(broker.process.proc.pid) - before < BUDGET + MARGIN
        assert _serves(broker)
        attacker.close()


def test_a_closed_consumer_that_never_reads_is_released(tmp_path: Path) -> None:
    """Item 7: a connection closed with output still queued (it never reads) is aborted
    after the grace period instead of holding its buffer forever."""
    with BrokerProcess(tmp_path, "--max-backlog", str(BUDGET), "--identify-timeout", "1",
                       "--close-grace", "0.5") as broker:
        assert broker.process is not None
        attacker = upgraded(broker.port)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Pongs it never reads fill its queue; it never identifies, so the broker closes it.
        assert _flood(attacker, frame(0x9, b"p" * 125) * 512, 128 * 1024 * 1024)
        broker.process.wait_for(r"no message within 1 s")
        broker.process.wait_for(r"aborted, \d+ bytes still unread 0\.5 s after closing")
        attacker.setblocking(True)
        attacker.settimeout(WAIT)
        # What the broker still held (its close frame last) was thrown away, not sent.
        assert b"--identify-timeout" not in until_closed(attacker)
        attacker.close()
        assert _serves(broker)


def test_unfinished_messages_have_a_global_budget(tmp_path: Path) -> None:
    """Item 6: fragmented messages that never end cannot pile up past the budget."""
    part = 3 * 1024 * 1024
    with BrokerProcess(tmp_path, "--max-partial-bytes", str(8 * 1024 * 1024)) as broker:
        assert broker.process is not None
        before = vm_rss(broker.process.proc.pid)
        holders = [upgraded(broker.port) for _ in range(3)]
        for sock in holders[:2]:  # 6 MiB held: within the budget
            sock.sendall(frame(0x2, b"x" * part, fin=False))
        holders[2].sendall(frame(0x2, b"x" * part, fin=False))  # 9 MiB: over it
        closing = until_closed(holders[2])
        assert closing[:1] == b"\x88" and closing[2:4] == b"\x03\xf1", closing  # code 1009
        assert b"--max-partial-bytes" in closing
        assert vm_rss(broker.process.proc.pid) - before < 8 * 1024 * 1024 + MARGIN
        assert _serves(broker)
        # The others finish their messages: they were only held, not lost.
        for sock in holders[:2]:
            sock.sendall(frame(0x0, b"z", fin=True) + frame(0x8, b"\x03\xe8"))
            closing = until_closed(sock)
            assert closing.startswith(b"\x88"), closing
            assert b"--" not in closing
        for sock in holders:
            sock.close()


def test_unfinished_messages_time_out(tmp_path: Path) -> None:
    """Item 6: a message that never ends is not held past --fragment-timeout."""
    with BrokerProcess(tmp_path, "--fragment-timeout", "0.5") as broker:
        holder = upgraded(broker.port)
        holder.sendall(frame(0x2, b"x" * 1024 * 1024, fin=False))
        closing = until_closed(holder)
        holder.close()
        assert closing[:1] == b"\x88" and closing[2:4] == b"\x03\xf0", closing  # code 1008
        assert b"--fragment-timeout" in closing
        assert _serves(broker)


def _shared_reference_bomb(levels: int) -> bytes:
    """CBOR of ``levels + 1`` values, each an array holding the previous one twice by
    shared reference (tags 28/29): a few bytes per level, 2**levels values as JSON."""
    def head(major: int, n: int) -> bytes:
        return bytes([major << 5 | n]) if n < 24 else bytes([major << 5 | 24, n])
    items = [b"\xd8\x1c\x80"]
    for i in range(1, levels + 1):
        ref = b"\xd8\x1d" + head(0, i - 1)
        items.append(b"\xd8\x1c\x82" + ref + ref)
    return head(4, levels + 1) + b"".join(items)


def test_json_expansion_of_shared_references_is_bounded(tmp_path: Path) -> None:
    """Item 3: a tiny CBOR publication with shared references is not expanded 2**22 times
    for a JSON subscriber: it is dropped (and counted), later messages still arrive."""
    bomb = _shared_reference_bomb(22)
    assert len(bomb) < 256

    async def scenario(port: int) -> None:
        js = await Wire.open("127.0.0.1", port)
        publisher = await Wire.open("127.0.0.1", port)
        for command in ({"cmd": "subscribe"}, {"cmd": "reactive", "status": True}):
            topic = "t" if command["cmd"] == "subscribe" else "__config__"
            js.send(rp.encode(rp.Admin(bytes(8), topic, command)))
            assert rp.decode(await js.recv()) == rp.Response(bytes(8), 0)
        js.send_text('{"jsonrpc": "2.0", "method": "elsewhere", "params": []}')  # speaks JSON
        publisher.send(rp.encode(rp.Pub("t", rp.Payload(bomb))),
                       rp.encode(rp.Pub("t", rp.Payload.of([1]))))
        assert json.loads(await js.recv_text())["params"] == [1]
        await js.close()
        await publisher.close()

    with BrokerProcess(tmp_path) as broker:
        assert broker.process is not None
        asyncio.run(scenario(broker.port))
        broker.process.wait_for(r"cannot be sent as JSON, dropped: .*too large")
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.port}/health",
                                    timeout=WAIT) as answer:
            assert json.load(answer)["dropped_json"] == 1
        assert _serves(broker)


async def _aio_overwritten(url: str, transport: str) -> BaseException:
    holder = await rembus.component(f"{url}/twin", transport=transport)
    try:
        with rembus.sync.component(f"{url}/twin", reconnect=False) as taker:
            with pytest.raises(ConnectionOverwritten) as raised:
                await asyncio.wait_for(holder.forever(), WAIT)
            assert taker.rpc("version")
        return raised.value
    finally:
        await holder.close()


def _sync_overwritten(url: str) -> BaseException:
    with rembus.sync.component(f"{url}/twin") as holder, \
            rembus.sync.component(f"{url}/twin", reconnect=False) as taker:
        with pytest.raises(ConnectionOverwritten) as raised:
            holder.forever()
        assert taker.rpc("version")
    return raised.value


def _blocking_overwritten(url: str) -> BaseException:
    with rembus.blocking.component(f"{url}/twin") as holder, \
            rembus.sync.component(f"{url}/twin", reconnect=False) as taker:
        with pytest.raises(ConnectionOverwritten) as raised:
            holder.forever()
        assert taker.rpc("version")
    return raised.value


@pytest.mark.parametrize("driver", ["aio", "aio-httpx", "sync", "blocking"])
def test_an_overwritten_component_does_not_reconnect(tmp_path: Path, driver: str) -> None:
    """Item 15: with --overwrite-connection, the component whose name is taken reports why
    and stays down instead of taking the name back (and so on forever)."""
    with BrokerProcess(tmp_path, "--overwrite-connection") as broker:
        assert broker.process is not None
        if driver.startswith("aio"):
            transport = "httpx" if driver == "aio-httpx" else "native"
            error = asyncio.run(_aio_overwritten(broker.url, transport))
        elif driver == "sync":
            error = _sync_overwritten(broker.url)
        else:
            error = _blocking_overwritten(broker.url)
        assert "code 4000" in str(error) and "not reconnecting" in str(error)
        broker.process.wait_for(r"component 'twin' .*disconnected: .*code 4000")
        assert _serves(broker)


def test_tls_handshakes_in_progress_count_toward_the_connection_limit(tmp_path: Path) -> None:
    """Item 5: connections stuck before the end of their TLS handshake hold a slot each."""
    tls = make_tls(tmp_path)
    with BrokerProcess(tmp_path / "data", "--tls-cert", str(tls.cert), "--tls-key",
                       str(tls.key), "--max-connections", "2") as broker:
        assert broker.process is not None
        stalled = [raw_connect(broker.port) for _ in range(2)]  # no ClientHello, ever
        with tls.client_context().wrap_socket(raw_connect(broker.port),
                                              server_hostname="127.0.0.1") as third:
            assert until_closed(third) == b""
        broker.process.wait_for(r"refused: 2 connections open \(--max-connections\)")
        for sock in stalled:
            sock.close()
        # Their handshakes fail and stop counting (at the latest at the handshake timeout):
        # the broker serves again.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                with rembus.sync.component(broker.url, reconnect=False,
                                           ssl_context=tls.client_context()) as probe:
                    assert probe.rpc("version")
                    break
            except rembus.RembusConnectionClosed:
                continue
        else:
            raise AssertionError(f"still refused {WAIT} s after the stalled handshakes ended")


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


def _health(broker: BrokerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.port}/health",
                                timeout=WAIT) as answer:
        health: dict[str, Any] = json.load(answer)
    return health


async def _throwaway_names(broker: BrokerProcess, names: list[str]) -> None:
    """Each name connects, identifies and leaves (a few at a time)."""
    async def one(name: str) -> None:
        w = await _raw(broker)
        assert (await _request(w, Identity(_new_id(), name))).status == 0
        await w.close()

    for start in range(0, len(names), 50):
        await asyncio.gather(*(one(name) for name in names[start:start + 50]))


def test_throwaway_names_are_forgotten_a_bounded_number_per_tick(tmp_path: Path) -> None:
    """Item 9: many names that came once are forgotten once away longer than
    ``--twin-retention``, at most SWEEP_LIMIT per timer tick; one owed stored
    messages is kept, also across a restart."""
    from rembus_proto.broker.sessions import SWEEP_LIMIT

    count = SWEEP_LIMIT + SWEEP_LIMIT // 2
    names = [f"throwaway{n}" for n in range(count)]
    broker = BrokerProcess(tmp_path, "--twin-retention", "3600")
    with broker:
        asyncio.run(asyncio.wait_for(_throwaway_names(broker, names), WAIT))
        with rembus.sync.component(f"{broker.url}/owed", reconnect=False) as owed:
            owed.subscribe(lambda *_: None, topic="news", retroactive=True)
            owed.reactive()
        with rembus.sync.component(broker.url, reconnect=False) as publisher:
            publisher.publish("news", 1, qos=1)
        assert _health(broker)["twins"] == count + 1
    # Loaded twins start their away clock together: all are due at the same tick.
    broker = BrokerProcess(tmp_path, "--twin-retention", "0.5")
    with broker:
        assert broker.process is not None
        forgotten: list[int] = []
        while sum(forgotten) < count:
            line = broker.process.wait_for(r"forgot \d+ named components away longer than "
                                           r"--twin-retention 0\.5 s")
            forgotten.append(int(line.split("forgot ")[1].split()[0]))
            assert _serves(broker)
        assert sum(forgotten) == count and max(forgotten) <= SWEEP_LIMIT, forgotten
        assert len(forgotten) >= 2
        health = _health(broker)
        assert health["twins"] == 1 and health["forgotten"] == count
    with BrokerProcess(tmp_path, "--twin-retention", "3600") as broker:
        assert _health(broker)["twins"] == 1  # the forgotten ones are gone from the store
        got: list[Any] = []
        with rembus.sync.component(f"{broker.url}/owed", reconnect=False) as owed:
            done = threading.Event()

            def news(value: Any) -> None:
                got.append(value)
                done.set()

            owed.subscribe(news, topic="news", retroactive=True)
            owed.reactive()
            assert done.wait(WAIT)
        assert got == [1]


def _peak_rss(pid: int) -> int:
    """The resident high-water mark of ``pid`` in bytes since the last reset (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def _reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_stored_messages_have_a_byte_budget_and_replay_streams(tmp_path: Path) -> None:
    """Item 13: an away subscriber and large publications: the oldest beyond
    ``--retention-max-bytes`` are dropped, and the replay reads a batch only when the
    subscriber's socket has room, so the broker holds a few messages, not the archive."""
    size, count = 4 * 1024 * 1024, 20
    budget = 12 * size
    with BrokerProcess(tmp_path, "--retention-max-bytes", str(budget), "--max-backlog",
                       str(4 * size), "--keep-freed-mib", "0") as broker:
        assert broker.process is not None
        pid = broker.process.proc.pid
        with rembus.sync.component(f"{broker.url}/sub", reconnect=False) as sub:
            sub.subscribe(lambda *_: None, topic="big", retroactive=True)
        with rembus.sync.component(broker.url, reconnect=False) as publisher:
            for n in range(count):
                publisher.publish("big", n, bytes(size), qos=1)
        broker.process.wait_for(r"retention: dropped \d+ stored messages of topic 'big' "
                                r"\(beyond --retention-max-bytes")
        _reset_peak_rss(pid)
        before = vm_rss(pid)
        got: list[int] = []
        first, last = threading.Event(), threading.Event()

        def big(n: int, data: bytes) -> None:
            assert len(data) == size
            got.append(n)
            first.set()
            if n == count - 1:
                last.set()

        with rembus.sync.component(f"{broker.url}/sub", reconnect=False) as sub:
            sub.subscribe(big, topic="big", retroactive=True)
            assert first.wait(WAIT)
            assert _serves(broker)  # while the replay goes on
            assert last.wait(WAIT)
        peak = _peak_rss(pid) - before
        print(f"replay of {len(got)} x {size >> 20} MiB: peak RSS {peak >> 20} MiB above")
        kept = budget // size + budget // size // 4  # a quarter more between two prunes
        assert got == list(range(count - len(got), count)) and 0 < len(got) <= kept, got
        assert peak < 8 * size, f"the replay took {peak >> 20} MiB more"
        assert _serves(broker)


async def _subscribe_many(w: Wire, topics: list[str]) -> None:
    """Subscribe to every topic at once, then read every answer."""
    ids = [_new_id() for _ in topics]
    w.send_all(rp.encode(rp.Admin(msg_id, topic, {"cmd": "subscribe"}))
               for msg_id, topic in zip(ids, topics, strict=True))
    waiting = set(ids)
    while waiting:
        reply = rp.decode(await w.recv())
        if isinstance(reply, rp.Response) and reply.id in waiting:
            assert reply.status == 0, reply
            waiting.discard(reply.id)


def test_a_change_to_a_large_twin_writes_only_that_change(tmp_path: Path) -> None:
    """Item 10: one more subscription of a component with many costs the store the
    same few rows as one more of a component with few (rows written, not time)."""
    cost: dict[int, int] = {}

    async def scenario(broker: BrokerProcess) -> None:
        for count in (10, 3_000):
            w = await _raw(broker)
            assert (await _request(w, Identity(_new_id(), f"holds{count}"))).status == 0
            await _subscribe_many(w, [f"topic/{n}" for n in range(count)])
            before = _health(broker)["store_rows_written"]  # committed before the answers
            await _subscribe_many(w, ["one/more"])
            cost[count] = _health(broker)["store_rows_written"] - before
            await w.close()

    with BrokerProcess(tmp_path) as broker:
        asyncio.run(asyncio.wait_for(scenario(broker), WAIT))
        assert _serves(broker)
    # progress, subscription and its start: 3 rows (a timed prune may add one)
    assert cost[10] <= 4 and cost[3_000] <= 4, cost


KEPT = r"no message yet, but it answers pings: kept \(--identify-timeout\)"


def _kept_then(broker: BrokerProcess, check: Callable[[], Any]) -> None:
    """Wait (bounded) until the broker kept a silent connection past the identify timeout,
    then ``check`` the component still works on it."""
    assert broker.process is not None
    broker.process.wait_for(KEPT)
    assert check()


async def _aio_silent(broker: BrokerProcess, transport: str) -> None:
    component = await rembus.component(broker.url, transport=transport, reconnect=False)
    try:
        await asyncio.to_thread(broker.process.wait_for, KEPT)  # type: ignore[union-attr]
        assert await component.rpc("version")
    finally:
        await component.close()


def _blocking_silent(broker: BrokerProcess) -> None:
    assert broker.process is not None
    seen = threading.Event()

    def watch() -> None:
        broker.process.wait_for(KEPT)  # type: ignore[union-attr]
        seen.set()

    watcher = threading.Thread(target=watch, daemon=True)
    with rembus.blocking.component(broker.url, reconnect=False) as component:
        watcher.start()
        deadline = time.monotonic() + WAIT
        while not seen.is_set() and time.monotonic() < deadline:
            component.process(0.05)  # a threadless component answers pings as it runs
        assert seen.is_set()
        assert component.rpc("version")
    watcher.join(WAIT)


@pytest.mark.parametrize("driver", ["aio", "aio-httpx", "sync", "blocking"])
def test_a_silent_anonymous_component_stays_connected(tmp_path: Path, driver: str) -> None:
    """An anonymous component with nothing to say answers the broker's ping and is not
    closed by the identify timeout (a raw upgrade that never reads still is: see
    test_idle_connections_time_out_and_one_address_is_bounded)."""
    with BrokerProcess(tmp_path, "--identify-timeout", "0.3", "--log-level", "DEBUG") as broker:
        assert broker.process is not None
        if driver.startswith("aio"):
            transport = "httpx" if driver == "aio-httpx" else "native"
            asyncio.run(asyncio.wait_for(_aio_silent(broker, transport), WAIT))
        elif driver == "sync":
            with rembus.sync.component(broker.url, reconnect=False) as component:
                _kept_then(broker, lambda: component.rpc("version"))
        else:
            _blocking_silent(broker)
        closed_by_timeout = [line for line in broker.process.output
                             if "no message within" in line]
        assert closed_by_timeout == []
        assert _serves(broker)
