"""Name leases in JetStream: how fast a broker can take, renew and give up names.

Run: python bench/bench_cluster_leases.py [--names N] [--concurrency C]

Starts NATS with JetStream on 127.0.0.1 (one node, then three nodes with a
bucket of three replicas) with the launcher of the tests, and measures with
one client: sequential acquire latency (median, p99), then acquire, renew and
release rates with C operations in flight. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nats_cluster import NatsCluster, nats_client
from rembus.broker.cluster.names import NameLeases
from rembus.broker.cluster.subjects import SubjectSpace


async def rate(names: list[str], concurrency: int,
               action: Callable[[str], Awaitable[bool]]) -> float:
    """Operations per second of ``action`` over ``names``, ``concurrency`` at a time."""
    queue = iter(names)

    async def worker() -> None:
        for name in queue:
            assert await action(name)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(names) / (time.perf_counter() - start)


async def measure(urls: list[str], replicas: int, count: int, concurrency: int) -> None:
    async with nats_client(*urls) as nc:
        leases = await NameLeases.open(nc.jetstream(timeout=10), SubjectSpace("bench"),
                                       replicas=replicas, max_held=2 * count)
        latencies = []
        for i in range(min(count, 1000)):
            start = time.perf_counter()
            assert await leases.acquire(f"seq{i}", "bench")
            latencies.append(time.perf_counter() - start)
        await leases.release_all()
        latencies.sort()
        names = [f"comp{i}" for i in range(count)]
        acquire = await rate(names, concurrency, lambda n: leases.acquire(n, "bench"))
        renew = await rate(names, concurrency, leases.renew)
        release = await rate(names, concurrency, leases.release)
        print(f"R{replicas}: acquire median {statistics.median(latencies) * 1e3:.2f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms; "
              f"with {concurrency} in flight: acquire {acquire:,.0f}/s, "
              f"renew {renew:,.0f}/s, release {release:,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    for size in (1, 3):
        with tempfile.TemporaryDirectory() as directory, \
                NatsCluster(Path(directory), size=size) as cluster:
            asyncio.run(measure(cluster.urls, size, args.names, args.concurrency))


if __name__ == "__main__":
    main()
