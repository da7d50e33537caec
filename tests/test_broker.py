"""The broker end to end, in process, through real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import rembus_proto as rp
from rembus.broker.server import Broker, BrokerConfig
from rembus.broker.sqlite_store import SQLiteStore
from rembus.client.wire import Wire, WireClosed
from rembus_proto.broker import RouterConfig

ID = bytes(range(1, 9))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an async scenario with a safety net against hangs."""
    asyncio.run(asyncio.wait_for(scenario(), 60))


@asynccontextmanager
async def broker(**options: Any) -> AsyncIterator[Broker]:
    config = BrokerConfig(host="127.0.0.1", port=0, **options)
    async with Broker(config) as running:
        yield running


async def wire(b: Broker) -> Wire:
    return await Wire.open("127.0.0.1", b.port)


async def request(w: Wire, message: rp.Message) -> rp.Response:
    w.send(rp.encode(message))
    while True:
        reply = rp.decode(await w.recv())
        if isinstance(reply, rp.Response):
            return reply


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_health_endpoint() -> None:
    async def scenario() -> None:
        async with broker() as b:
            w = await wire(b)
            status, body = await http_get(b.port, "/health")
            assert status == 200
            health = json.loads(body)
            assert health["status"] == "ok" and health["connections"] == 1
            assert "version" in health and health["uptime"] >= 0
            assert (await http_get(b.port, "/nothing"))[0] == 404
            await w.close()

    run(scenario)


def test_pub_sub_and_rpc_through_sockets() -> None:
    async def scenario() -> None:
        async with broker() as b:
            sub, pub, exposer = await wire(b), await wire(b), await wire(b)
            for m in (rp.Admin(ID, "t", {"cmd": "subscribe", "msg_from": 0.0}),
                      rp.Admin(ID, "__config__", {"cmd": "reactive", "status": True})):
                assert (await request(sub, m)).status == 0
            frame = rp.encode(rp.Pub("t", rp.Payload.of([1, "a"])))
            pub.send(frame)
            assert await sub.recv() == frame
            assert (await request(exposer, rp.Admin(ID, "add", {"cmd": "expose"}))).status == 0
            pub.send(rp.encode(rp.Rpc(ID, "add", rp.Payload.of([1, 2]))))
            call = rp.decode(await exposer.recv())
            assert isinstance(call, rp.Rpc) and call.data.args == (1, 2)
            exposer.send(rp.encode(rp.Response(call.id, 0, rp.Payload.of(3))))
            answer = rp.decode(await pub.recv())
            assert answer == rp.Response(ID, 0, rp.Payload.of(3))
            for w in (sub, pub, exposer):
                await w.close()

    run(scenario)


@pytest.mark.parametrize("bad_frame", [
    b"\x83\x01\x61",
    rp.Rpc(bytes(1 << 20), "t", rp.Payload.of(1)).encode(),  # ids are 8 or 16 bytes
], ids=["truncated", "megabyte-id"])
def test_malformed_frame_closes_only_that_connection(caplog: pytest.LogCaptureFixture,
                                                     bad_frame: bytes) -> None:
    async def scenario() -> None:
        async with broker() as b:
            sub, bad, pub = await wire(b), await wire(b), await wire(b)
            for m in (rp.Admin(ID, "t", {"cmd": "subscribe", "msg_from": 0.0}),
                      rp.Admin(ID, "__config__", {"cmd": "reactive", "status": True})):
                await request(sub, m)
            bad.send(bad_frame)
            with pytest.raises(WireClosed):
                await bad.recv()
            assert bad.closed is not None and bad.closed.code == 1002
            frame = rp.encode(rp.Pub("t", rp.Payload.of([1])))
            pub.send(frame)
            assert await sub.recv() == frame
            await sub.close()
            await pub.close()

    with caplog.at_level(logging.WARNING, logger="rembus.broker"):
        run(scenario)
    assert any("closed" in r.getMessage() and "127.0.0.1:" in r.getMessage()
               for r in caplog.records)


def test_oversize_message_is_refused_with_1009() -> None:
    async def scenario() -> None:
        async with broker(max_message_size=1000) as b:
            big, ok = await wire(b), await wire(b)
            big.send(rp.encode(rp.Pub("t", rp.Payload.of(b"x" * 2000))))
            with pytest.raises(WireClosed):
                await big.recv()
            assert big.closed is not None and big.closed.code == 1009
            reply = await request(ok, rp.Rpc(ID, "rid", rp.NO_ARGS))
            assert reply.data.value == "broker"
            await ok.close()

    run(scenario)


def test_the_message_size_option_keeps_the_other_decode_limits() -> None:
    limits = rp.DecodeLimits(max_depth=7, max_id_length=8)
    b = Broker(BrokerConfig(max_message_size=1000, router=RouterConfig(limits=limits)))
    assert b.router.config.limits == rp.DecodeLimits(1000, 7, 8)


def test_json_components_publish_and_receive() -> None:
    async def scenario() -> None:
        async with broker() as b:
            js, cb = await wire(b), await wire(b)
            for w in (js, cb):
                w.send(rp.encode(rp.Admin(ID, "t", {"cmd": "subscribe"})))
                assert rp.decode(await w.recv()) == rp.Response(ID, 0)
                w.send(rp.encode(rp.Admin(ID, "__config__", {"cmd": "reactive", "status": True})))
                assert rp.decode(await w.recv()) == rp.Response(ID, 0)
            js.send_text('{"jsonrpc": "2.0", "method": "t", "params": [1, "a"]}')
            assert rp.decode(await cb.recv()) == rp.Pub("t", rp.Payload.of([1, "a"]))
            cb.send(rp.encode(rp.Pub("t", rp.Payload.of([b"\x00\x01", 2.5]))))
            assert json.loads(await js.recv_text()) == {
                "jsonrpc": "2.0", "method": "t", "params": ["AAE=", 2.5], "data": ["AAE=", 2.5]}
            js.send(rp.encode(rp.Rpc(ID, "rid", rp.NO_ARGS)))  # binary again: answers in CBOR
            assert rp.decode(await js.recv()) == rp.Response(ID, 0, rp.Payload.of("broker"))

    run(scenario)


def test_json_rpc_reaches_a_cbor_exposer_and_back() -> None:
    async def scenario() -> None:
        async with broker() as b:
            caller, exposer = await wire(b), await wire(b)
            exposer.send(rp.encode(rp.Admin(ID, "add", {"cmd": "expose"})))
            assert rp.decode(await exposer.recv()) == rp.Response(ID, 0)
            caller.send_text('{"jsonrpc": "2.0", "id": 7, "method": "add", "params": [1, 2]}')
            call = rp.decode(await exposer.recv())
            assert isinstance(call, rp.Rpc) and call.data.args == (1, 2)
            exposer.send(rp.encode(rp.Response(call.id, 0, rp.Payload.of(3))))
            assert json.loads(await caller.recv_text()) == {
                "jsonrpc": "2.0", "id": 7, "result": {"type": 4, "sts": 0, "data": 3}}
            caller.send_text('{"jsonrpc": "2.0", "id": "8", "method": "nobody", "params": []}')
            assert json.loads(await caller.recv_text()) == {
                "jsonrpc": "2.0", "id": 8,
                "error": {"type": 4, "sts": 42, "data": "nobody: method unknown"}}

    run(scenario)


def test_bad_json_closes_only_that_connection() -> None:
    async def scenario() -> None:
        async with broker() as b:
            bad, ok = await wire(b), await wire(b)
            bad.send_text('{"jsonrpc": "2.0", "id": -1, "method": "t", "params": []}')
            with pytest.raises(WireClosed):
                await bad.recv()
            assert bad.closed is not None and bad.closed.code == 1002
            reply = await request(ok, rp.Rpc(ID, "rid", rp.NO_ARGS))
            assert reply.data.value == "broker"

    run(scenario)


def test_slow_handshake_is_cut() -> None:
    async def scenario() -> None:
        async with broker(handshake_timeout=0.2) as b:
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
            assert await reader.read() == b""  # the broker hung up
            writer.close()

    run(scenario)


def test_connection_limit() -> None:
    async def scenario() -> None:
        async with broker(max_connections=2) as b:
            first, second = await wire(b), await wire(b)
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            assert await reader.read() == b""
            writer.close()
            reply = await request(first, rp.Rpc(ID, "rid", rp.NO_ARGS))
            assert reply.status == 0
            await first.close()
            await second.close()

    run(scenario)


def test_stop_closes_clients_with_going_away() -> None:
    async def scenario() -> None:
        b = Broker(BrokerConfig(port=0, router=RouterConfig(name="x")))
        await b.start()
        w = await wire(b)
        await b.stop()
        with pytest.raises(WireClosed):
            await w.recv()
        assert w.closed is not None and w.closed.code == 1001

    run(scenario)


def test_client_close_waits_for_the_brokers_close_frame() -> None:
    """Closing reads until the broker's close frame: what the broker wrote before it is
    received, not answered with a reset, and the connection ends cleanly."""

    async def scenario() -> None:
        async with broker() as b:
            sub, pub = await wire(b), await wire(b)
            for m in (rp.Admin(ID, "t", {"cmd": "subscribe", "msg_from": 0.0}),
                      rp.Admin(ID, "__config__", {"cmd": "reactive", "status": True})):
                assert (await request(sub, m)).status == 0
            frame = rp.encode(rp.Pub("t", rp.Payload.of([1])))
            pub.send(frame)
            # answered after the broker handled the publication: it was written to sub
            assert (await request(pub, rp.Admin(ID, "u", {"cmd": "expose"}))).status == 0
            await sub.close()
            assert sub.closed is not None and (sub.closed.code, sub.closed.clean) == (1000, True)
            assert await sub.recv() == frame
            await pub.close()

    run(scenario)


def test_retention_logs_each_prune_and_counts_it_in_health(tmp_path: Path) -> None:
    class Recorder(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []
            self.seen = asyncio.Event()

        def emit(self, record: logging.LogRecord) -> None:
            if "retention" in record.getMessage():
                self.lines.append(record.getMessage())
                self.seen.set()

    async def scenario() -> None:
        config = BrokerConfig(host="127.0.0.1", port=0, router=RouterConfig(
            prune_interval=0.0, retention_max_per_topic=2))
        recorder = Recorder()
        logger = logging.getLogger("rembus.broker")
        logger.addHandler(recorder)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            with SQLiteStore(tmp_path / "store.db") as store:
                async with Broker(config, store=store) as b:
                    away = await wire(b)
                    assert (await request(away, rp.Identity(ID, "keeper"))).status == 0
                    subscribe = {"cmd": "subscribe", "msg_from": math.inf}
                    assert (await request(away, rp.Admin(ID, "kept", subscribe))).status == 0
                    await away.close()  # away: what is published is stored for it
                    pub = await wire(b)
                    for n in range(5):
                        msg_id = n.to_bytes(8, "big")
                        pub.send(rp.Pub("kept", rp.Payload.of([n]), msg_id, rp.QOS1).encode())
                        assert rp.decode(await pub.recv()) == rp.Ack(msg_id)
                    while b.pruned["count"] < 3:
                        await asyncio.wait_for(recorder.seen.wait(), 60)
                        recorder.seen.clear()
                    _, body = await http_get(b.port, "/health")
                    assert json.loads(body)["pruned"] == {"age": 0, "count": 3, "bytes": 0,
                                                          "total": 0}
                    await pub.close()
        finally:
            logger.removeHandler(recorder)
            logger.setLevel(level)
        assert recorder.lines and all(
            "'kept'" in line and "--retention-max-messages 2" in line for line in recorder.lines)

    run(scenario)
