"""Both transports refuse a message above Options.max_message_size the same way."""

from __future__ import annotations

import asyncio

import pytest

import rembus
from rembus.broker.server import Broker, BrokerConfig

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
