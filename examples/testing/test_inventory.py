"""The inventory client's timeout, retry and reconnect logic, on virtual time.

Each test lets seconds of (virtual) time pass and checks to the millisecond
when things happened, yet runs in milliseconds: ``rembus_network`` is an
in-process broker, and time jumps whenever every task is waiting.
"""

from __future__ import annotations

import pytest
from inventory import InventoryClient, InventoryServer, InventoryUnavailable

from rembus.errors import RembusError
from rembus.testing import Network


async def start(net: Network, **options: float) -> tuple[InventoryServer, InventoryClient]:
    server = InventoryServer({"apple": 10})
    await server.serve(await net.component("inventory"))
    client = InventoryClient(await net.component("shop", **options))
    return server, client


async def test_a_slow_answer_is_retried(rembus_network: Network) -> None:
    net = rembus_network
    _, client = await start(net)
    net.link("inventory").delay(30, "down", count=1)  # the first answer comes too late
    start_time = net.time()
    assert await client.stock("apple") == 10
    # a 2 s timeout, a 1 s pause, then the answer
    assert net.time() - start_time == pytest.approx(3.0)


async def test_no_answer_gives_up_after_every_retry(rembus_network: Network) -> None:
    net = rembus_network
    _, client = await start(net)
    net.link("inventory").drop("down", count=None)  # the server hears nothing more
    start_time = net.time()
    with pytest.raises(InventoryUnavailable):
        await client.stock("apple")
    # three timeouts of 2 s with pauses of 1 s and 2 s between them
    assert net.time() - start_time == pytest.approx(9.0)


async def test_a_read_survives_a_lost_connection(rembus_network: Network) -> None:
    net = rembus_network
    _, client = await start(net)
    shop = net.link("shop")
    shop.refuse()
    shop.cut()
    net.loop.call_later(1.5, shop.refuse, False)  # the network comes back after 1.5 s
    assert await client.stock("apple") == 10
    assert shop.connections == 2


async def test_a_reservation_is_not_retried(rembus_network: Network) -> None:
    net = rembus_network
    server, client = await start(net)
    net.link("shop").drop("down", count=1)  # the answer to the reservation is lost
    with pytest.raises(RembusError):
        await client.reserve("apple", 3)
    assert server.counts["apple"] == 7  # done once, though the shop did not hear it
    with pytest.raises(RembusError, match="only 7 apple left"):
        await client.reserve("apple", 8)
