"""Both transports refuse a message above Options.max_message_size the same way; the
native one's socket layer (rembus.writes) writes large messages in slices."""

from __future__ import annotations

import asyncio

import pytest

import rembus
import rembus_proto as rp
from rembus.broker.server import Broker, BrokerConfig
from rembus.client.wire import Wire
from rembus.writes import SLICE

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("transport", ["native", "httpx"])
def test_message_above_the_limit_ends_the_connection(transport: str) -> None:
    async def scenario() -> None:
        async with Broker(BrokerConfig(host="127.0.0.1", port=0)) as broker:
            sub = await rembus.component(f"{broker.url}/small_sub", transport=transport,
                                         max_message_size=10_000, reconnect=False)
            got: list[bytes] = []
            small = asyncio.Event()

            def receive(data: bytes) -> None:
                got.append(data)
                small.set()

            await sub.subscribe(receive, topic="t")
            pub = await rembus.component(broker.url)
            await pub.publish("t", b"x" * 100)
            await small.wait()
            await pub.publish("t", b"x" * 20_000)
            await sub.forever()  # returns: the connection ended and is not reopened
            assert got == [b"x" * 100]
            assert not sub.is_connected
            await pub.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_httpx_reports_an_unreachable_broker() -> None:
    async def scenario() -> None:
        with pytest.raises(rembus.RembusConnectionClosed, match="cannot connect"):
            await rembus.component("ws://127.0.0.1:1/x", transport="httpx")

    asyncio.run(scenario())


def test_messages_larger_than_a_write_chunk_arrive_whole_and_in_order_before_the_close() -> None:
    async def scenario() -> None:
        async with Broker(BrokerConfig(host="127.0.0.1", port=0)) as broker:
            sub = await Wire.open("127.0.0.1", broker.port)
            sub_id = bytes(range(8))
            sub.send(rp.Admin(sub_id, "t", {"cmd": "subscribe", "msg_from": 0.0}).encode(),
                     rp.Admin(sub_id, "__config__", {"cmd": "reactive", "status": True})
                     .encode())
            await sub.recv()
            await sub.recv()
            pub = await Wire.open("127.0.0.1", broker.port)
            sizes = [3 * SLICE + 5, 10, SLICE, 7 * SLICE // 2]
            frames = [rp.Pub("t", rp.Payload.of([bytes([i]) * n])).encode()
                      for i, n in enumerate(sizes)]
            for frame in frames:
                pub.send(frame)  # no drain: slices queue behind each other
            await pub.close()  # the queued slices go out before the close frame
            assert [await sub.recv() for _ in frames] == frames
            await sub.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
