"""Call ``async_add`` many times concurrently (async API).

Run a broker and examples/rpc_server_async.py first, then:
python examples/rpc_client_async.py
"""

import asyncio

import rembus


async def main() -> None:
    rb = await rembus.component()
    results = await asyncio.gather(*(rb.rpc("async_add", i, i) for i in range(100)))
    print("100 calls, sum of results =", sum(results))
    try:
        await rb.rpc("no_such_method")
    except rembus.MethodNotFound as exc:
        print("rpc failed:", exc.message)
    await rb.close()


rembus.run(main())
