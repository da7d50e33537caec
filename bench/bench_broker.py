"""Broker throughput and latency against a relay that does no Rembus work.

Run: python bench/bench_broker.py [--quick] [--workloads W1,W3]

The broker (``python -m rembus broker``) and the relay (bench/relay.py) each
run in a process of their own; the lean clients below, written on the
sans-IO core, run in this process. Every workload runs against both, and the
table shows each broker figure as a ratio to the relay's. Prints figures
only; asserts nothing.

W1 one publisher -> one subscriber, 100 000 messages [i, 21.6, "sensor_1"]
W2 one publisher -> 10 subscribers, 20 000 messages
W3 5 000 sequential RPCs add(x, y)
W4 20 000 RPCs, 100 in flight
W5 200 messages of 1 MiB
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from benchlib import best, cpu_seconds, server

import rembus_proto as rp
from rembus.client.wire import Wire

HERE = Path(__file__).resolve().parent
QUIET = 3.0  # seconds without traffic after which missing messages count as lost


class Link(Protocol):
    def send_all(self, frames: list[bytes]) -> None: ...
    async def recv_many(self) -> list[bytes]: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...


class RelayLink:
    """The same frames, with a 4-byte length prefix instead of WebSocket framing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()

    @classmethod
    async def open(cls, port: int) -> RelayLink:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    def send_all(self, frames: list[bytes]) -> None:
        self.writer.write(b"".join(len(f).to_bytes(4, "big") + f for f in frames))

    async def recv_many(self) -> list[bytes]:
        out: list[bytes] = []
        while not out:
            data = await self.reader.read(1 << 20)
            if not data:
                raise ConnectionError("relay closed")
            buffer = self.buffer
            buffer += data
            pos = 0
            while len(buffer) - pos >= 4:
                size = int.from_bytes(buffer[pos : pos + 4], "big")
                if len(buffer) - pos - 4 < size:
                    break
                out.append(bytes(buffer[pos + 4 : pos + 4 + size]))
                pos += 4 + size
            del buffer[:pos]
        return out

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@dataclass
class Target:
    """A server to measure: how to connect, and whether it speaks Rembus admin."""

    name: str
    port: int
    rembus: bool

    async def link(self) -> Link:
        if self.rembus:
            return await Wire.open("127.0.0.1", self.port)
        return await RelayLink.open(self.port)

    async def admin(self, link: Link, topic: str, cmd: dict[str, Any]) -> None:
        if not self.rembus:
            return
        msg_id = os.urandom(8)
        link.send_all([rp.Admin(msg_id, topic, cmd).encode()])
        while True:
            for frame in await link.recv_many():
                reply = rp.decode(frame)
                if isinstance(reply, rp.Response) and reply.id == msg_id:
                    assert reply.status == 0, reply
                    return

    async def subscriber(self, topic: str) -> Link:
        link = await self.link()
        await self.admin(link, topic, {"cmd": "subscribe", "msg_from": 0.0})
        await self.admin(link, "__config__", {"cmd": "reactive", "status": True})
        return link

    async def exposer(self, topic: str) -> Link:
        link = await self.link()
        await self.admin(link, topic, {"cmd": "expose"})
        return link


async def count(link: Link, expected: int, state: dict[str, float],
                use: Callable[[bytes], object] | None = None) -> int:
    """Receive until ``expected`` frames arrived or the line went quiet."""
    got = 0
    while got < expected:
        try:
            frames = await asyncio.wait_for(link.recv_many(), QUIET)
        except asyncio.TimeoutError:
            break
        if use is not None:
            for frame in frames:
                use(frame)
        got += len(frames)
        state["last"] = time.perf_counter()
    return got


async def publish(link: Link, frames: list[bytes], batch: int = 100) -> None:
    for start in range(0, len(frames), batch):
        link.send_all(frames[start : start + batch])
        await link.drain()


def pub_frames(n: int) -> list[bytes]:
    return [rp.Pub("sensor", rp.Payload.of([i, 21.6, "sensor_1"])).encode() for i in range(n)]


async def pubsub(target: Target, subscribers: int, frames: list[bytes]) -> dict[str, float]:
    subs = [await target.subscriber("sensor") for _ in range(subscribers)]
    pub = await target.link()
    state: dict[str, float] = {}
    counters = [asyncio.create_task(count(s, len(frames), state)) for s in subs]
    start = time.perf_counter()
    await publish(pub, frames)
    received = sum(await asyncio.gather(*counters))
    elapsed = state.get("last", time.perf_counter()) - start
    for link in [*subs, pub]:
        await link.close()
    expected = len(frames) * subscribers
    return {"rate": received / elapsed, "loss": expected - received, "elapsed": elapsed,
            "messages": len(frames)}


async def serve_add(link: Link, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            frames = await link.recv_many()
        except ConnectionError:
            return
        replies = []
        for frame in frames:
            call = rp.decode(frame)
            if isinstance(call, rp.Rpc):
                x, y = call.data.args
                replies.append(rp.Response(call.id, 0, rp.Payload.of(x + y)).encode())
        link.send_all(replies)


async def rpc_run(target: Target, calls: int, in_flight: int) -> dict[str, float]:
    exposer = await target.exposer("add")
    caller = await target.link()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_add(exposer, stop))
    latencies: list[float] = []
    sent: dict[bytes, float] = {}
    next_call = 0

    def send_more() -> None:
        nonlocal next_call
        frames = []
        while len(sent) < in_flight and next_call < calls:
            msg_id = next_call.to_bytes(8, "little")
            frames.append(rp.Rpc(msg_id, "add", rp.Payload.of([next_call, 1])).encode())
            sent[msg_id] = time.perf_counter()
            next_call += 1
        if frames:
            caller.send_all(frames)

    start = time.perf_counter()
    send_more()
    done = 0
    while done < calls:
        for frame in await caller.recv_many():
            reply = rp.decode(frame)
            if isinstance(reply, rp.Response):
                latencies.append(time.perf_counter() - sent.pop(reply.id))
                done += 1
        send_more()
    elapsed = time.perf_counter() - start
    stop.set()
    await caller.close()
    await exposer.close()
    server.cancel()
    latencies.sort()
    return {"rate": calls / elapsed, "messages": calls, "p50": statistics.median(latencies) * 1e3,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1e3, "elapsed": elapsed}


async def big(target: Target, n: int) -> dict[str, float]:
    blob = os.urandom(1 << 20)
    frames = [rp.Pub("sensor", rp.Payload.of([blob])).encode() for _ in range(n)]
    result = await pubsub(target, 1, frames)
    result["rate"] = result["rate"] * len(frames[0]) / 1e6
    return result


Workload = Callable[[Target], Coroutine[Any, Any, dict[str, float]]]


def workloads(quick: bool) -> dict[str, tuple[str, str, Workload]]:
    scale = 10 if quick else 1
    return {
        "W1": ("1 pub -> 1 sub, 100k msgs", "msgs/s",
               lambda t: pubsub(t, 1, pub_frames(100_000 // scale))),
        "W2": ("1 pub -> 10 subs, 20k msgs", "deliveries/s",
               lambda t: pubsub(t, 10, pub_frames(20_000 // scale))),
        "W3": ("5k sequential RPCs", "calls/s", lambda t: rpc_run(t, 5_000 // scale, 1)),
        "W4": ("20k RPCs, 100 in flight", "calls/s", lambda t: rpc_run(t, 20_000 // scale, 100)),
        "W5": ("200 x 1 MiB messages", "MB/s", lambda t: big(t, 200 // scale)),
    }


def workload_args(doc: str | None) -> tuple[bool, list[str], int]:
    """``--quick``, the chosen workload names and ``--rounds``, from the command line."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of every workload")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved runs of each workload; the best one counts")
    opts = parser.parse_args()
    return opts.quick, [w.strip() for w in opts.workloads.split(",")], opts.rounds


async def main() -> None:
    quick, names, rounds = workload_args(__doc__)
    chosen = workloads(quick)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        # The QoS0 publisher has no end-to-end flow control: with the default
        # 64 MiB backlog, W5's subscriber (in this process, read no faster than the
        # publisher writes) is cut off as a slow consumer. As in bench_compare.py.
        broker_cmd = [sys.executable, "-m", "rembus", "broker", "--port", "0",
                      "--data-dir", data_dir, "--log-level", "WARNING",
                      "--max-backlog", str(1 << 30)]
        relay_cmd = [sys.executable, str(HERE / "relay.py"), "--port", "0"]
        async with server(relay_cmd, r"listening on (\d+)") as (relay_port, relay_pid), \
                server(broker_cmd, r"ws://127\.0\.0\.1:(\d+)") as (broker_port, broker_pid):
            targets = ((Target("relay", relay_port, False), relay_pid),
                       (Target("broker", broker_port, True), broker_pid))
            for name in names:
                title, _, run = chosen[name]
                runs: dict[str, list[dict[str, float]]] = {"relay": [], "broker": []}
                for _ in range(rounds):  # interleaved: both see the same machine
                    for target, pid in targets:
                        before = cpu_seconds(pid)
                        result = await run(target)
                        result["cpu_us"] = (cpu_seconds(pid) - before) / result["messages"] * 1e6
                        runs[target.name].append(result)
                results[name] = {label: best(r) for label, r in runs.items()}
    print(f"{'workload':<32}{'unit':<14}{'relay':>12}{'broker':>12}{'ratio':>8}  notes")
    for name in names:
        title, unit, _ = chosen[name]
        relay, broker = results[name]["relay"], results[name]["broker"]
        notes = []
        notes.append(f"server CPU per message {broker['cpu_us']:.1f} us "
                     f"(relay {relay['cpu_us']:.1f})")
        if "loss" in broker:
            notes.append(f"loss {int(broker['loss'])}")
        if "p50" in broker:
            notes.append(f"p50 {broker['p50']:.3f} ms (relay {relay['p50']:.3f}), "
                         f"p99 {broker['p99']:.3f} ms (relay {relay['p99']:.3f}), "
                         f"p50 ratio {broker['p50'] / relay['p50']:.2f}")
        print(f"{name + ' ' + title:<32}{unit:<14}{relay['rate']:>12,.0f}"
              f"{broker['rate']:>12,.0f}{broker['rate'] / relay['rate']:>8.2f}  "
              + "; ".join(notes))


if __name__ == "__main__":
    asyncio.run(main())
