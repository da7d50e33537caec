"""Publish a few temperature readings (sync API).

Run a broker first (``rembus broker``), then: python examples/publish_sync.py
"""

import rembus.sync as rembus

rb = rembus.component()  # anonymous, at $REMBUS_BASE_URL or ws://127.0.0.1:8000
for reading in (21.5, 21.7, 22.0):
    rb.publish("temperature", "kitchen", reading)
rb.publish("temperature", "kitchen", 22.1, qos=1)  # waits until the broker has it
rb.close()
print("published 4 readings")
