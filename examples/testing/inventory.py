"""A small inventory service and its client, written against the async API.

The server keeps stock counts and serves ``stock``, ``reserve`` and ``release``
over RPC. :class:`InventoryClient` is what an application uses: reads retry
with a pause that doubles after every timeout or lost connection (the component
reconnects by itself meanwhile); a reservation is tried once, since a retry
after a lost answer could reserve twice.

Run a broker, then ``python examples/testing/inventory.py`` to serve it; the
tests next to this file run it on ``rembus.testing``'s virtual clock instead.
"""

from __future__ import annotations

import asyncio

import rembus
from rembus.client.aio import Component
from rembus.errors import RembusConnectionClosed, RembusTimeout


class OutOfStock(Exception):
    """Fewer items are left than asked for."""


class InventoryUnavailable(Exception):
    """No answer from the inventory server after every retry."""


class InventoryServer:
    """The stock counts, served over RPC."""

    def __init__(self, stock: dict[str, int]) -> None:
        self.counts = dict(stock)

    async def serve(self, rb: Component) -> None:
        await rb.expose(self.stock)
        await rb.expose(self.reserve)
        await rb.expose(self.release)

    def stock(self, item: str) -> int:
        return self.counts.get(item, 0)

    def reserve(self, item: str, n: int) -> int:
        left = self.counts.get(item, 0)
        if n > left:
            raise OutOfStock(f"only {left} {item} left")
        self.counts[item] = left - n
        return left - n

    def release(self, item: str, n: int) -> int:
        self.counts[item] = self.counts.get(item, 0) + n
        return self.counts[item]


class InventoryClient:
    """Calls the inventory server with a timeout, and retries reads."""

    def __init__(self, rb: Component, *, timeout: float = 2.0, retries: int = 3,
                 pause: float = 1.0) -> None:
        self.rb = rb
        self.timeout = timeout
        self.retries = retries
        self.pause = pause

    async def stock(self, item: str) -> int:
        pause = self.pause
        for attempt in range(self.retries):
            try:
                result: int = await self.rb.rpc("stock", item, timeout=self.timeout)
                return result
            except (RembusTimeout, RembusConnectionClosed):
                if attempt + 1 == self.retries:
                    break
                await asyncio.sleep(pause)
                pause *= 2
        raise InventoryUnavailable(f"no stock answer for {item} after {self.retries} tries")

    async def reserve(self, item: str, n: int) -> int:
        left: int = await self.rb.rpc("reserve", item, n, timeout=self.timeout)
        return left

    async def release(self, item: str, n: int) -> int:
        total: int = await self.rb.rpc("release", item, n, timeout=self.timeout)
        return total


async def main() -> None:
    rb = await rembus.component("inventory")
    await InventoryServer({"apple": 10, "pear": 5}).serve(rb)
    print("serving the inventory", flush=True)
    await rb.forever()


if __name__ == "__main__":
    rembus.run(main())
