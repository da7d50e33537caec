"""Brokers on a NATS cluster: publication latency and throughput, RPC round trip, across brokers.

Run: python bench/bench_cluster.py [--count N]

Starts three NATS nodes with JetStream on 127.0.0.1 and two ``rembus broker
--cluster`` processes (each through its own node) with the launchers of the
tests, then measures with async components: a publication from a component of
broker 0 to a subscriber of broker 1 (latency one at a time, median and p99;
then throughput, N published back to back), and an RPC round trip to an
exposer on the other broker, next to one on the same broker. Then the archive:
QoS1 throughput across brokers (pipelined, acknowledged once the archive
stored each publication), and the replay of a backlog of N QoS1 messages to
a named retroactive subscriber that moved to the other broker while away.
Prints figures only; asserts nothing.
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
    await measure_archive(urls, count)


async def measure_archive(urls: tuple[str, str], count: int) -> None:
    """QoS1 across brokers, and the replay of a backlog to a component that moved."""
    arrived: asyncio.Queue[int] = asyncio.Queue()
    sub = await aio.component(f"{urls[1]}/bench-qos-sub")
    await sub.subscribe(arrived.put_nowait, topic="bench_qos1")
    await sub.reactive()
    pub = await aio.component(f"{urls[0]}/bench-qos-pub")
    while True:  # until the subscriber's interest reached the publisher's node
        await pub.publish("bench_qos1", -1, qos=1)
        try:
            await asyncio.wait_for(arrived.get(), PROBE)
            break
        except asyncio.TimeoutError:
            continue
    while not arrived.empty():
        arrived.get_nowait()
    start = time.perf_counter()
    acks = [await pub.publish("bench_qos1", i, qos=1, wait=False) for i in range(count)]
    await asyncio.gather(*(ack for ack in acks if ack is not None))
    acked = time.perf_counter() - start
    for _ in range(count):
        await asyncio.wait_for(arrived.get(), 30)
    elapsed = time.perf_counter() - start
    print(f"QoS1 across brokers: {count / elapsed:,.0f} publications/s delivered, "
          f"{count / acked:,.0f}/s acknowledged (archived) ({count})")
    await sub.close()

    backlog: asyncio.Queue[int] = asyncio.Queue()
    mover = await aio.component(f"{urls[1]}/bench-mover")
    await mover.subscribe(backlog.put_nowait, True, topic="bench_backlog")
    await mover.close()
    acks = [await pub.publish("bench_backlog", i, qos=1, wait=False) for i in range(count)]
    await asyncio.gather(*(ack for ack in acks if ack is not None))
    start = time.perf_counter()
    mover = await aio.component(f"{urls[0]}/bench-mover")  # the other broker
    await mover.subscribe(backlog.put_nowait, True, topic="bench_backlog")
    for _ in range(count):
        await asyncio.wait_for(backlog.get(), 30)
    elapsed = time.perf_counter() - start
    print(f"replay across brokers: a backlog of {count} QoS1 messages in {elapsed:.2f} s "
          f"({count / elapsed:,.0f} messages/s, login included)")
    for component in (mover, pub):
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
