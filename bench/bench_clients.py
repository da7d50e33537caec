"""The public async and sync clients against the lean clients, through one broker.

Run: python bench/bench_clients.py [--quick] [--rounds 3] [--workloads W1,W4]

Same workloads as bench_broker.py (W1..W5), each run with three clients
against the same broker process: the lean clients (raw frames over the
sans-IO core, encoding each message in the timed loop and decoding each one
received), the public async API and the public sync API, one after the other
in each of ``--rounds`` rounds (the best run of each counts). The table shows
each API figure as a ratio to the lean one, and async / sync. ``--workloads
W1Q`` adds W1 at QoS1 through the public async API, with
``WINDOW`` publications in flight (``publish(..., qos=1, wait=False)``), as a
share of the same run at QoS0. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_broker as lean

import rembus
import rembus.sync
import rembus_proto as rp

ARGS = (21.6, "sensor_1")
WINDOW = 100  # QoS1 publications in flight in W1Q


# -- lean clients, encoding in the timed loop ---------------------------------


def use_args(frame: bytes) -> None:
    """What any subscriber does with a message: decode it and look at its arguments."""
    rp.decode(frame).data.args  # type: ignore[union-attr]  # noqa: B018


async def lean_pubsub(port: int, subscribers: int, count: int, blob: bytes | None) -> float:
    target = lean.Target("broker", port, True)
    subs = [await target.subscriber("sensor") for _ in range(subscribers)]
    pub = await target.link()
    state: dict[str, float] = {}
    counters = [asyncio.create_task(lean.count(s, count, state, use_args)) for s in subs]
    start = time.perf_counter()
    for first in range(0, count, 100):
        pub.send_all([rp.Pub("sensor", rp.Payload.of([blob] if blob else [i, *ARGS])).encode()
                      for i in range(first, min(first + 100, count))])
        await pub.drain()
    received = sum(await asyncio.gather(*counters))
    elapsed = state.get("last", time.perf_counter()) - start
    for link in [*subs, pub]:
        await link.close()
    return received / elapsed


async def lean_rpc(port: int, calls: int, in_flight: int) -> float:
    result = await lean.rpc_run(lean.Target("broker", port, True), calls, in_flight)
    return result["rate"]


# -- the public async API -------------------------------------------------------

async def async_pubsub(url: str, subscribers: int, count: int, blob: bytes | None,
                       qos: int = 0) -> float:
    done = asyncio.Event()
    received = 0
    expected = count * subscribers

    def sensor(*_: Any) -> None:
        nonlocal received
        received += 1
        if received >= expected:
            done.set()

    subs = [await rembus.component(url) for _ in range(subscribers)]
    for sub in subs:
        await sub.subscribe(sensor)
    pub = await rembus.component(url)
    start = time.perf_counter()
    if qos:
        await windowed(pub, count, qos)
    for i in range(count if not qos else 0):
        if blob is None:
            await pub.publish("sensor", i, *ARGS)
        else:
            await pub.publish("sensor", blob)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - start
    for comp in [*subs, pub]:
        await comp.close()
    return received / elapsed


async def windowed(pub: rembus.Component, count: int, qos: int, topic: str = "sensor",
                   window: int = WINDOW) -> None:
    """Publish ``count`` messages at ``qos`` with ``window`` of them waiting for their ACK."""
    pending: collections.deque[asyncio.Future[None]] = collections.deque()
    for i in range(count):
        future = await pub.publish(topic, i, *ARGS, qos=qos, wait=False)
        assert future is not None
        pending.append(future)
        if len(pending) >= window:
            await pending.popleft()
    for future in pending:
        await future


async def qos1_share(url: str, count: int) -> tuple[float, float]:
    """W1 through the async API at QoS0, then at QoS1 with a window: both rates."""
    return (await async_pubsub(url, 1, count, None),
            await async_pubsub(url, 1, count, None, qos=1))


async def async_rpc(url: str, calls: int, in_flight: int) -> float:
    server = await rembus.component(url)

    def add(x: int, y: int) -> int:
        return x + y

    await server.expose(add)
    caller = await rembus.component(url)

    async def worker(first: int) -> None:
        for i in range(first, calls, in_flight):
            await caller.rpc("add", i, 1)

    start = time.perf_counter()
    await asyncio.gather(*(worker(first) for first in range(in_flight)))
    elapsed = time.perf_counter() - start
    await caller.close()
    await server.close()
    return calls / elapsed


# -- the public sync API --------------------------------------------------------

def sync_pubsub(url: str, subscribers: int, count: int, blob: bytes | None) -> float:
    done = threading.Event()
    lock = threading.Lock()
    received = 0
    expected = count * subscribers

    def sensor(*_: Any) -> None:
        nonlocal received
        with lock:
            received += 1
            if received >= expected:
                done.set()

    subs = [rembus.sync.component(url) for _ in range(subscribers)]
    for sub in subs:
        sub.subscribe(sensor)
    pub = rembus.sync.component(url)
    start = time.perf_counter()
    for i in range(count):
        if blob is None:
            pub.publish("sensor", i, *ARGS)
        else:
            pub.publish("sensor", blob)
    done.wait(60)
    elapsed = time.perf_counter() - start
    for comp in [*subs, pub]:
        comp.close()
    return received / elapsed


def sync_rpc(url: str, calls: int, in_flight: int) -> float:
    server = rembus.sync.component(url)

    def add(x: int, y: int) -> int:
        return x + y

    server.expose(add)
    caller = rembus.sync.component(url)

    def worker(first: int) -> None:  # as async_rpc: in_flight callers, each in turn
        for i in range(first, calls, in_flight):
            caller.rpc("add", i, 1)

    # Plain threads, not a ThreadPoolExecutor: its per-task bookkeeping (a
    # semaphore a hundred workers contend for) would be most of what is measured.
    threads = [threading.Thread(target=worker, args=(first,)) for first in range(in_flight)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    caller.close()
    server.close()
    return calls / elapsed


Runner = Callable[[int, str], Coroutine[Any, Any, tuple[float, float, float]]]


def workloads(quick: bool) -> dict[str, tuple[str, str, Runner]]:
    scale = 10 if quick else 1
    blob = os.urandom(1 << 20)

    def pubsub(subs: int, count: int, big: bytes | None, unit: float) -> Runner:
        async def run(port: int, url: str) -> tuple[float, float, float]:
            a = await lean_pubsub(port, subs, count, big)
            b = await async_pubsub(url, subs, count, big)
            c = await asyncio.to_thread(sync_pubsub, url, subs, count, big)
            return a * unit, b * unit, c * unit
        return run

    def rpc(calls: int, in_flight: int) -> Runner:
        async def run(port: int, url: str) -> tuple[float, float, float]:
            a = await lean_rpc(port, calls, in_flight)
            b = await async_rpc(url, calls, in_flight)
            c = await asyncio.to_thread(sync_rpc, url, calls, in_flight)
            return a, b, c
        return run

    mib = (len(blob) + 20) / 1e6
    return {
        "W1": ("1 pub -> 1 sub, 100k msgs", "msgs/s", pubsub(1, 100_000 // scale, None, 1)),
        "W2": ("1 pub -> 10 subs, 20k msgs", "deliveries/s", pubsub(10, 20_000 // scale, None, 1)),
        "W3": ("5k sequential RPCs", "calls/s", rpc(5_000 // scale, 1)),
        "W4": ("20k RPCs, 100 in flight", "calls/s", rpc(20_000 // scale, 100)),
        "W5": ("200 x 1 MiB messages", "MB/s", pubsub(1, 200 // scale, blob, mib)),
    }


async def main() -> None:
    quick, names, rounds = lean.workload_args(__doc__)
    chosen = workloads(quick)
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        cmd = [sys.executable, "-m", "rembus", "broker", "--port", "0", "--data-dir", data_dir,
               "--log-level", "WARNING"]
        async with lean.server(cmd, r"ws://127\.0\.0\.1:(\d+)") as (port, _):
            url = f"ws://127.0.0.1:{port}"
            for name in names:
                if name == "W1Q":
                    continue
                title, unit, run = chosen[name]
                runs = [await run(port, url) for _ in range(rounds)]
                rows.append((name, title, unit, *(max(r[i] for r in runs) for i in range(3))))
            if "W1Q" in names:
                share = await qos1_share(url, (10_000 if quick else 100_000))
    print(f"best of {rounds} interleaved rounds (lean, async, sync, lean, ...); "
          f"async/sync = how many times faster the async API is")
    print(f"{'workload':<32}{'unit':<14}{'lean':>10}{'async':>10}{'sync':>10}"
          f"{'async/lean':>12}{'sync/lean':>11}{'async/sync':>12}")
    for name, title, unit, a, b, c in rows:
        print(f"{name + ' ' + title:<32}{unit:<14}{a:>10,.0f}{b:>10,.0f}{c:>10,.0f}"
              f"{b / a:>12.2f}{c / a:>11.2f}{b / c:>12.2f}")
    if "W1Q" in names:
        q0, q1 = share
        print(f"W1Q async W1 at QoS1, {WINDOW} in flight: {q1:,.0f} msgs/s = {q1 / q0:.0%} "
              f"of QoS0 ({q0:,.0f} msgs/s)")


if __name__ == "__main__":
    asyncio.run(main())
