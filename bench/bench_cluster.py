"""Brokers on a NATS cluster: the workloads of bench_compare across brokers, fan-out over brokers.

Run: python bench/bench_cluster.py [--count N] [--workloads W1,W2,W4,fanout,latency,archive]
     [--brokers 1,2,3] [--quick]

Starts three NATS nodes with JetStream on 127.0.0.1 and the ``rembus broker
--cluster`` processes (broker i through node i mod 3) with the launchers of
the tests, then measures with async components of this process:

W1, W2, W4  the workloads of bench_compare.py (W1 one publisher -> one
     subscriber, W2 one publisher -> 10 subscribers, W4 RPCs with 100 in
     flight), once with every component on broker 0 ("one broker") and once
     with the subscribers (the exposer) on broker 1 and the publisher (the
     caller) on broker 0 ("across brokers"): rates and their ratio, and the
     CPU time per delivery (per call) of the brokers (summed over every broker
     process), of the NATS servers (summed over the three nodes) and of this
     process (the clients), read from /proc/<pid>/stat.
fanout  aggregate throughput with 1, 2 and 3 brokers (``--brokers``) sharing
     fan-out work: one publisher per broker, 12 subscribers spread evenly
     over the brokers, every subscriber getting every publication; total
     deliveries/s and each broker's CPU time per delivery it made.
latency  a publication from a component of broker 0 to a subscriber of broker
     1 (latency one at a time, median and p99; then throughput, N published
     back to back), and an RPC round trip to an exposer on the other broker,
     next to one on the same broker (``--count``).
archive  QoS1 throughput across brokers (pipelined, acknowledged once the
     archive stored each publication), and the replay of a backlog of N QoS1
     messages to a named retroactive subscriber that moved to the other broker
     while away (``--count``).

Before a workload starts, each subscription (exposure) is probed from the
brokers of the publishers (callers) until it is reached from there, so that
nothing published is lost to interest still on its way; the probes are not
counted. Sizes are divided by 10 with ``--quick`` (``--divide`` for a smoke
test). Every process started is stopped at the end, also on an error or
Ctrl-C. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compare import ARGS, Handler, Rembus, Result, pubsub, workloads
from benchlib import cpu_seconds

from broker_process import BrokerProcess
from nats_cluster import NatsCluster
from rembus.client import aio
from rembus.errors import MethodNotFound

PROBE = 0.2  # seconds before a probe that did not arrive is sent again
REACH = 60.0  # seconds after which a subscription never reached is an error
PROBE_MARK = "bench-cluster-probe"
COMPARED = {"W1": 1, "W2": 10, "W4": 1}  # components of the far broker in each workload
FANOUT_SUBSCRIBERS = 12  # spread evenly over 1, 2 or 3 brokers
FANOUT_COUNT = 20_000  # publications in all, every subscriber gets each


def quantiles(samples: list[float]) -> str:
    samples = sorted(samples)
    return (f"median {statistics.median(samples) * 1e3:.2f} ms, "
            f"p99 {samples[int(len(samples) * 0.99)] * 1e3:.2f} ms")


@dataclass
class Placed(Rembus):
    """The brokers of the cluster as one side of bench_compare's workloads.

    The n-th component connected goes to ``places[n]`` (the last place for the
    rest); a subscription or an exposure returns once it is reached from every
    broker of ``sources`` (those of the publishers or callers).
    """

    places: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    connected: int = 0
    probes: dict[str, Any] = field(default_factory=dict)

    async def connect(self) -> Any:
        url = self.places[min(self.connected, len(self.places) - 1)]
        self.connected += 1
        return await aio.component(url)

    async def probe(self, url: str) -> Any:
        """The component that probes from the broker of ``url``."""
        if url not in self.probes:
            self.probes[url] = await aio.component(url)
        return self.probes[url]

    async def subscribe(self, client: Any, topic: str, handler: Handler) -> None:
        seen: set[str] = set()
        arrived = asyncio.Event()

        def deliver(*args: Any) -> None:
            if args and args[0] == PROBE_MARK:
                seen.add(args[1])
                arrived.set()
            else:
                handler(*args)

        await client.subscribe(deliver, topic=topic)
        for url in self.sources:
            probe = await self.probe(url)
            deadline = time.monotonic() + REACH
            while url not in seen:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{topic}: subscription never reached from {url}")
                arrived.clear()
                await probe.publish(topic, PROBE_MARK, url)
                try:
                    await asyncio.wait_for(arrived.wait(), PROBE)
                except asyncio.TimeoutError:
                    continue

    async def expose(self, client: Any, topic: str, fn: Callable[[int, int], int]) -> None:
        await client.expose(fn, topic=topic)
        for url in self.sources:
            probe = await self.probe(url)
            deadline = time.monotonic() + REACH
            while True:
                try:
                    await probe.rpc(topic, 0, 0)
                    break
                except MethodNotFound:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{topic}: exposer never reached from {url}") from None

    async def close_probes(self) -> None:
        for probe in self.probes.values():
            await probe.close()
        self.probes.clear()


@dataclass
class Cost:
    """CPU seconds used during a run: each broker, each NATS node, this process."""

    brokers: list[float]
    nats: list[float]
    clients: float


class Meter:
    """CPU time of the cluster's processes around a run."""

    def __init__(self, brokers: list[int], nats: list[int]) -> None:
        self.brokers = brokers
        self.nats = nats

    async def run(self, work: Awaitable[Result]) -> tuple[Result, Cost]:
        brokers = [cpu_seconds(pid) for pid in self.brokers]
        nats = [cpu_seconds(pid) for pid in self.nats]
        mine = time.process_time()
        result = await work
        return result, Cost(used(self.brokers, brokers), used(self.nats, nats),
                            time.process_time() - mine)


def used(pids: list[int], before: list[float]) -> list[float]:
    """CPU seconds each process used since ``before``."""
    return [cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]


def per_unit(seconds: float, units: float) -> str:
    return f"{seconds / max(1.0, units) * 1e6:.1f} us"


async def compare(name: str, urls: list[str], meter: Meter, divide: int) -> None:
    """A workload of bench_compare on one broker, then across two brokers."""
    work = workloads(divide, False)[name]
    far = COMPARED[name]
    per = "call" if work.unit == "calls/s" else "delivery"
    rates = {}
    for where, places in (("one broker", [urls[0]]),
                          ("across brokers", [urls[1]] * far + [urls[0]])):
        side = Placed(urls[0], 0, places=places, sources=[urls[0]])
        try:
            result, cost = await meter.run(work.run(side))
        finally:
            await side.close_probes()
        units = result["units"]
        rates[where] = (result["rate"], sum(cost.brokers) / max(1.0, units))
        lost = f"; LOST {int(result['loss'])}" if result.get("loss") else ""
        print(f"{name} {work.title}, {where}: {result['rate']:,.0f} {work.unit} "
              f"({units:,.0f} in all); CPU per {per}: "
              f"brokers {per_unit(sum(cost.brokers), units)}, "
              f"NATS {per_unit(sum(cost.nats), units)}, "
              f"clients {per_unit(cost.clients, units)}{lost}")
    (one, one_cpu), (across, across_cpu) = rates["one broker"], rates["across brokers"]
    print(f"{name} across / one broker: rate x{across / one:.2f}, "
          f"brokers' CPU per {per} x{across_cpu / max(one_cpu, 1e-12):.2f}")


async def fanout(urls: list[str], meter: Meter, count: int) -> None:
    """One publisher per broker, the subscribers spread over the brokers."""
    brokers = len(urls)
    places = [urls[i % brokers] for i in range(FANOUT_SUBSCRIBERS)] + [urls[0]]
    side = Placed(urls[0], 0, places=places, sources=urls)
    others = [await aio.component(url) for url in urls[1:]]

    async def publish_all(pub: Any, names: list[str], count: int) -> None:
        async def publish(publisher: Any, first: int) -> None:
            for i in range(first, count, brokers):
                await publisher.publish(names[0], i, *ARGS)
            await publisher.drain()

        await asyncio.gather(*(publish(p, first) for first, p in enumerate([pub, *others])))

    try:
        result, cost = await meter.run(pubsub(side, FANOUT_SUBSCRIBERS, count, send=publish_all))
    finally:
        for component in others:
            await component.close()
        await side.close_probes()
    units = result["units"]
    each = units / brokers  # every broker delivers to its share of the subscribers
    lost = f"; LOST {int(result['loss'])}" if result.get("loss") else ""
    projected = sum(each / max(seconds, 1e-9) for seconds in cost.brokers[:brokers])
    print(f"fan-out over {brokers} broker(s), {brokers} publisher(s) -> {FANOUT_SUBSCRIBERS} "
          f"subscribers, {count:,} publications: {result['rate']:,.0f} deliveries/s; "
          "CPU per delivery: "
          + ", ".join(f"broker {i} {per_unit(seconds, each)}"
                      for i, seconds in enumerate(cost.brokers[:brokers]))
          + f", brokers in all {per_unit(sum(cost.brokers), units)}, "
          f"NATS {per_unit(sum(cost.nats), units)}, clients {per_unit(cost.clients, units)}; "
          f"a core per broker would bound it at {projected:,.0f} deliveries/s" + lost)


async def until_heard(pub: aio.Component, topic: str, arrived: asyncio.Queue[int],
                      qos: int = 0) -> None:
    """Publish -1 until it arrives (the subscriber's interest reached the publisher's
    node), then empty ``arrived``."""
    while True:
        await pub.publish(topic, -1, qos=qos)
        try:
            await asyncio.wait_for(arrived.get(), PROBE)
            break
        except asyncio.TimeoutError:
            continue
    while not arrived.empty():
        arrived.get_nowait()


async def measure_latency(urls: tuple[str, str], count: int) -> None:
    """Publication latency and throughput, RPC round trips, across brokers."""
    arrived: asyncio.Queue[int] = asyncio.Queue()
    sub = await aio.component(f"{urls[1]}/bench-sub")
    await sub.subscribe(arrived.put_nowait, topic="bench")
    await sub.reactive()
    pub = await aio.component(f"{urls[0]}/bench-pub")
    await until_heard(pub, "bench", arrived)
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


async def measure_archive(urls: tuple[str, str], count: int) -> None:
    """QoS1 across brokers, and the replay of a backlog to a component that moved."""
    arrived: asyncio.Queue[int] = asyncio.Queue()
    sub = await aio.component(f"{urls[1]}/bench-qos-sub")
    await sub.subscribe(arrived.put_nowait, topic="bench_qos1")
    await sub.reactive()
    pub = await aio.component(f"{urls[0]}/bench-qos-pub")
    await until_heard(pub, "bench_qos1", arrived, qos=1)
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
    parser.add_argument("--count", type=int, default=5000,
                        help="messages of the latency and archive workloads")
    parser.add_argument("--workloads", default="W1,W2,W4,fanout,latency,archive",
                        help="comma-separated: W1, W2, W4, fanout, latency, archive")
    parser.add_argument("--brokers", default="1,2,3",
                        help="comma-separated broker counts of the fan-out workload")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--divide", type=int, default=1,
                        help="divide every size by this (a smoke test's 100)")
    args = parser.parse_args()
    divide = args.divide * (10 if args.quick else 1)
    count = max(1, args.count // divide)
    chosen = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = set(chosen) - {*COMPARED, "fanout", "latency", "archive"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    counts = [int(n) for n in args.brokers.split(",")] if "fanout" in chosen else []
    if any(not 1 <= n <= 3 for n in counts):
        parser.error("--brokers: between 1 and 3")
    started = max([*counts, 2 if set(chosen) - {"fanout"} else 1])
    with tempfile.TemporaryDirectory() as tmp, NatsCluster(Path(tmp) / "nats", 3) as nats, \
            ExitStack() as stack:
        brokers = [stack.enter_context(BrokerProcess(
            Path(tmp) / f"b{i}", "--name", f"b{i}", "--cluster", nats.urls[i % 3],
            "--cluster-replicas", "3", "--log-level", "WARNING",
            "--max-connections-per-address", "5000", "--max-backlog", str(1 << 30)))
            for i in range(started)]
        broker_pids = [b.process.proc.pid for b in brokers if b.process is not None]
        nats_pids = [n.process.proc.pid for n in nats.nodes if n.process is not None]
        print(f"server pids {' '.join(map(str, broker_pids + nats_pids))}", file=sys.stderr,
              flush=True)
        meter = Meter(broker_pids, nats_pids)
        urls = [b.url for b in brokers]
        asyncio.run(run(chosen, urls, meter, counts, divide, count))


async def run(chosen: list[str], urls: list[str], meter: Meter, counts: list[int],
              divide: int, count: int) -> None:
    print("CPU per message: this process's time and the servers' (/proc/<pid>/stat) divided "
          "by the deliveries (calls); 2 cores shared by every process here, so with more "
          "processes than cores the rates do not scale: project them from the CPU per message")
    for name in chosen:
        if name in COMPARED:
            await compare(name, urls, meter, divide)
        elif name == "fanout":
            for brokers in counts:
                await fanout(urls[:brokers], meter, max(brokers, FANOUT_COUNT // divide))
        elif name == "latency":
            await measure_latency((urls[0], urls[1]), count)
        else:
            await measure_archive((urls[0], urls[1]), count)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers were stopped on the way out
        sys.exit(130)
