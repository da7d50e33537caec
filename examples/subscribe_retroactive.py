"""A named subscriber that also gets what was published while it was away.

Run a broker first, then: python examples/subscribe_retroactive.py [COUNT]
Stop it, run examples/publish_sync.py, start it again: the readings published
meanwhile arrive as soon as it is back. It exits after COUNT messages
(default: runs until Ctrl-C).
"""

import asyncio
import sys

import rembus


async def main(count: int | None) -> None:
    rb = await rembus.component("thermometer_log")
    done = asyncio.Event()
    seen = 0

    def temperature(room: str, value: float) -> None:
        nonlocal seen
        seen += 1
        print(f"{room}: {value}", flush=True)
        if count is not None and seen >= count:
            done.set()

    await rb.subscribe(temperature, retroactive=True)
    print("subscribed", flush=True)
    if count is None:
        await rb.forever()
    else:
        await done.wait()
        await rb.close()


rembus.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else None))
