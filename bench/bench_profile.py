"""Where the clients' time goes: one workload of bench_compare.py under cProfile, per layer.

Run: python bench/bench_profile.py [--workloads W1,W3,W5] [--divide 1] [--top 12] [--cpu]

For each workload and each side (our broker with our asyncio client, then
nats-server with nats-py) it starts the server, runs the workload once to warm
up, then once more with this process (the clients: publisher and subscribers,
or callers and exposer) under cProfile. It prints, per unit of the workload
(delivered message or call): Python function calls, the profiled CPU time of
this process, and that time split by layer (the time spent in the functions of
each layer itself, not in what they call; wall time by default, which on a
busy machine includes the time other processes ran during a call, the broker
woken by a send for one; ``--cpu`` counts this process's CPU time instead, at
the price of a system call per event that inflates every small function):

* ``protocol core``: rembus_proto (messages, WebSocket frames, the client machine);
* ``driver``: rembus (the asyncio component, its stream and writer, handler calls);
* ``nats-py``: the nats package;
* ``cbor2``: encoding and decoding of the arguments (both sides use cbor2);
* ``event loop``: asyncio and selectors;
* ``socket calls``: send and recv;
* ``workload``: this benchmark's own loops and handlers;
* ``other``.

cProfile adds a cost per Python call (the CPU per unit is several times that
of bench_compare.py, whose "clients' CPU" is the figure without it), and a
layer made of many small calls looks heavier than it is; the call counts are
exact. The top functions by their own time follow. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_compare as compare
from benchlib import server

from rembus.broker.memory import keep_freed_memory
from rembus_proto.wsmask import use_numpy

LAYERS = ("protocol core", "driver", "nats-py", "cbor2", "event loop", "socket calls",
          "workload", "other")


def layer(file: str, name: str) -> str:
    """The layer of a function, from where it is defined."""
    path = file.replace("\\", "/")
    if "/rembus_proto/" in path:
        return "protocol core"
    if "/rembus/" in path:
        return "driver"
    if "/nats/" in path:
        return "nats-py"
    if "cbor2" in name or "/cbor2/" in path:
        return "cbor2"
    if "/asyncio/" in path or "selectors" in path or "epoll" in name:
        return "event loop"
    if "'send" in name or "'recv" in name or "sendmsg" in name:
        return "socket calls"
    if "/bench/" in path:
        return "workload"
    return "other"


async def profile_one(side: compare.Side, work: compare.Workload,
                      cpu: bool) -> tuple[dict[str, Any], pstats.Stats]:
    """Warm up, then run ``work`` once under cProfile; the result and the stats."""
    await compare.measure(side, work)
    profiler = cProfile.Profile(time.process_time) if cpu else cProfile.Profile()
    mine = time.process_time()
    profiler.enable()
    result = await work.run(side)
    profiler.disable()
    result["client_us"] = (time.process_time() - mine) / max(1.0, result["units"]) * 1e6
    return result, pstats.Stats(profiler)


def report(label: str, result: dict[str, Any], stats: pstats.Stats, top: int) -> None:
    units = max(1.0, result["units"])
    entries = stats.stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in entries.values())
    total = sum(entry[2] for entry in entries.values())
    by_layer = dict.fromkeys(LAYERS, 0.0)
    for (file, _line, name), entry in entries.items():
        by_layer[layer(file, name)] += entry[2]
    print(f"\n{label}: {result['units']:,} units, lost {result.get('loss', 0)}; per unit "
          f"{calls / units:.1f} Python calls, {result['client_us']:.1f} us CPU under the "
          f"profiler")
    print("  " + "  ".join(f"{name} {by_layer[name] / total:.0%}" for name in LAYERS
                           if by_layer[name]))
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    for (file, line, name), entry in ranked:
        where = f"{Path(file).name}:{line}({name})" if line else name
        print(f"  {entry[2] / units * 1e6:7.2f} us {entry[1] / units:6.2f} calls  {where}")


async def main(opts: argparse.Namespace) -> None:
    use_numpy(True)
    keep_freed_memory(64 << 20)
    chosen = compare.workloads(opts.divide, False)
    async with contextlib.AsyncExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        conf = Path(data_dir, "nats.conf")
        conf.write_text("max_payload: 8MB\nmax_pending: 1GB\nwrite_deadline: \"60s\"\n")
        broker_cmd = [sys.executable, "-m", "rembus", "broker", "--port", "0",
                      "--data-dir", str(Path(data_dir, "broker")), "--log-level", "WARNING",
                      "--loop", "asyncio", "--max-connections-per-address", "5000",
                      "--max-backlog", str(1 << 30)]
        port, pid = await stack.enter_async_context(
            server(broker_cmd, r"ws://127\.0\.0\.1:(\d+)"))
        nats_cmd = [compare.nats_server_path(), "-a", "127.0.0.1", "-p", "-1", "-c", str(conf)]
        nport, npid = await stack.enter_async_context(
            server(nats_cmd, r"client connections on 127\.0\.0\.1:(\d+)"))
        print(f"server pids {pid} {npid}", file=sys.stderr, flush=True)
        sides: list[compare.Side] = [compare.Rembus(f"ws://127.0.0.1:{port}", pid),
                                     compare.Nats(f"nats://127.0.0.1:{nport}", npid)]
        for name in (w.strip() for w in opts.workloads.split(",")):
            work = chosen[name]
            for side in sides:
                if side.name == "nats" and not work.nats:
                    continue
                result, stats = await profile_one(side, work, opts.cpu)
                report(f"{name} {side.name} ({work.title})", result, stats, opts.top)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W3,W5",
                        help="comma-separated workloads of bench_compare.py")
    parser.add_argument("--divide", type=int, default=1, help="divide every size by this")
    parser.add_argument("--top", type=int, default=12, help="functions listed per run")
    parser.add_argument("--cpu", action="store_true",
                        help="time functions by this process's CPU time, not wall time")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
