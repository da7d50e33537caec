"""Serve ``add`` and ``stats`` over RPC (sync API).

Run a broker first, then: python examples/rpc_server.py
"""

import statistics

import rembus.sync as rembus


def add(x: float, y: float) -> float:
    return x + y


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        raise ValueError("stats needs at least one value")
    return {"mean": statistics.fmean(values), "max": max(values)}


rb = rembus.component("calculator")
rb.expose(add)
rb.expose(stats)
print("serving add and stats", flush=True)
rb.forever()
