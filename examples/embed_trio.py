"""A Rembus component in a trio program, next to trio tasks of its own.

``rembus.anyio`` runs on trio (or asyncio) through anyio. The component lives
inside ``async with``: its tasks run in a task group the block owns, so it is
closed when the block ends, like any trio resource.

Run a broker first, then: python examples/embed_trio.py [messages]
It serves ``add(x, y)``, prints every message on ``temperature``, publishes a
heartbeat every ``TICK`` seconds from a trio task of its own, and exits after
``messages`` messages (default: runs until Ctrl-C).
"""

from __future__ import annotations

import sys

import trio

import rembus.anyio

TICK = 0.2  # seconds between two heartbeats


async def heartbeat(rb: rembus.anyio.Component) -> None:
    beats = 0
    while True:
        beats += 1
        await rb.publish("heartbeat", beats)
        await trio.sleep(TICK)


async def main(limit: int | None) -> None:
    enough = trio.Event()
    received: list[float] = []

    def temperature(room: str, value: float) -> None:  # a plain function runs inline
        received.append(value)
        print(f"{room}: {value}", flush=True)
        if limit is not None and len(received) >= limit:
            enough.set()

    async def add(x: float, y: float) -> float:  # an async one runs as a task
        await trio.lowlevel.checkpoint()
        return x + y

    async with rembus.anyio.component("embed_trio") as rb, trio.open_nursery() as nursery:
        await rb.expose(add)
        await rb.subscribe(temperature)
        print("ready", flush=True)
        nursery.start_soon(heartbeat, rb)
        await enough.wait()
        nursery.cancel_scope.cancel()
    print(f"done after {len(received)} messages", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else None)
