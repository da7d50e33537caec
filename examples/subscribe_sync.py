"""Print temperature readings as they are published (sync API).

Run a broker first, then: python examples/subscribe_sync.py
"""

import rembus.sync as rembus


def temperature(room: str, value: float) -> None:
    print(f"{room}: {value}", flush=True)


rb = rembus.component("thermometer_display")
rb.subscribe(temperature)  # live messages only
print("subscribed", flush=True)
rb.forever()  # until Ctrl-C
