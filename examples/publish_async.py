"""Publish a few temperature readings (async API).

Run a broker first (``rembus broker``), then: python examples/publish_async.py
"""

import rembus


async def main() -> None:
    rb = await rembus.component()
    for reading in (21.5, 21.7, 22.0):
        await rb.publish("temperature", "kitchen", reading)
    await rb.publish("temperature", "kitchen", 22.1, qos=1)
    await rb.close()
    print("published 4 readings")


rembus.run(main())
