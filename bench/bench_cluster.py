"""Brokers on a NATS cluster: publication latency and throughput, RPC round trip, across brokers.

Run: python bench/bench_cluster.py [--count N]

Starts three NATS nodes with JetStream on 127.0.0.1 and two ``rembus broker
--cluster`` processes (each through its own node) with the launchers of the
tests, then measures with async components: a publication from a component of
broker 0 to a subscriber of broker 1 (latency one at a time, median and p99;
then throughput, N published back to back), and an RPC round trip to an
exposer on the other broker, next to one on the same broker. Prints figures
only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from broker_process import BrokerProcess
from nats_cluster import NatsCluster
from rembus.client import aio
from rembus.errors import MethodNotFound

PROBE = 0.2


def quantiles(samples: list[float]) -> str:
    samples = sorted(samples)
    return (f"median {statistics.median(samples) * 1e3:.2f} ms, "
            f"p99 {samples[int(len(samples) * 0.99)] * 1e3:.2f} ms")


async def measure(urls: tuple[str, str], count: int) -> None:
    arrived: asyncio.Queue[int] = asyncio.Queue()
    sub = await aio.component(f"{urls[1]}/bench-sub")
    await sub.subscribe(arrived.put_nowait, topic="bench")
    await sub.reactive()
    pub = await aio.component(f"{urls[0]}/bench-pub")
    while True:  # until the subscriber's interest reached the publisher's node
        await pub.publish("bench", -1)
        try:
            await asyncio.wait_for(arrived.get(), PROBE)
            break
        except asyncio.TimeoutError:
            continue
    while not arrived.empty():
        arrived.get_nowait()
    latencies = []
    for i in range(min(count, 2000)):
        start = time.perf_counter()
        await pub.publish("bench", i)
        while await arrived.get() != i:
            pass
        latencies.append(time.perf_counter() - start)
    print(f"publication across brokers: {quantiles(latencies)}")
    start = time.perf_counter()
    for i in range(count):
        await pub.publish("bench", i)
    received = 0
    while received < count:
        await asyncio.wait_for(arrived.get(), 30)
        received += 1
    elapsed = time.perf_counter() - start
    print(f"throughput across brokers: {count / elapsed:,.0f} publications/s ({count})")

    def echo(x: int) -> int:
        return x
    local = await aio.component(f"{urls[0]}/bench-local")
    await local.expose(echo, topic="echo_local")
    await sub.expose(echo, topic="echo_far")
    while True:
        try:
            await pub.rpc("echo_far", 0)
            break
        except MethodNotFound:
            continue
    for method, where in (("echo_local", "same broker"), ("echo_far", "other broker")):
        times = []
        for i in range(min(count, 2000)):
            start = time.perf_counter()
            await pub.rpc(method, i)
            times.append(time.perf_counter() - start)
        print(f"RPC round trip, exposer on the {where}: {quantiles(times)}")
    for component in (pub, sub, local):
        await component.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, NatsCluster(Path(tmp) / "nats", 3) as nats, \
            ExitStack() as stack:
        brokers = [stack.enter_context(BrokerProcess(
            Path(tmp) / f"b{i}", "--name", f"b{i}", "--cluster", nats.urls[i],
            "--cluster-replicas", "3", "--log-level", "WARNING")) for i in range(2)]
        asyncio.run(measure((brokers[0].url, brokers[1].url), args.count))


if __name__ == "__main__":
    main()
