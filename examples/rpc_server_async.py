"""Serve ``add`` over RPC with an async handler (async API).

Run a broker first, then: python examples/rpc_server_async.py (Ctrl-C stops it)
"""

import asyncio

import rembus


async def add(x: float, y: float) -> float:
    await asyncio.sleep(0)  # an async handler may await anything
    return x + y


async def main() -> None:
    rb = await rembus.component("async_calculator")
    await rb.expose(add, topic="async_add")
    print("serving async_add", flush=True)
    await rb.forever()


rembus.run(main())
