"""Broker CPU with idle connections (prints figures, asserts nothing; Linux: reads /proc).

Run: python bench/bench_idle.py [--connections 0,1000] [--seconds 10]

A ``rembus broker`` subprocess gets N WebSocket connections that send nothing
after their handshake; its CPU time (user + system) is read from
``/proc/<pid>/stat`` over ``--seconds`` of that idleness and printed as a
percentage of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time

from rembus.client.wire import Wire

WAIT = 60.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(connections: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "rembus", "broker", "--host",
                                 "127.0.0.1", "--port", "0", "--data-dir", tmp,
                                 "--max-connections", str(connections + 10)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            port = 0
            for line in proc.stdout:
                match = re.search(r"serving ws://127\.0\.0\.1:(\d+)", line)
                if match:
                    port = int(match.group(1))
                    break
            assert port, "the broker did not start"
            wires = [await Wire.open("127.0.0.1", port, timeout=WAIT)
                     for _ in range(connections)]
            await asyncio.sleep(1.0)  # let the broker settle after the handshakes
            start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(seconds)
            used = cpu_seconds(proc.pid) - start_cpu
            elapsed = time.monotonic() - start
            for wire in wires:
                await wire.close()
            return 100.0 * used / elapsed
        finally:
            proc.terminate()
            proc.wait(WAIT)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="0,1000", help="default 0,1000")
    parser.add_argument("--seconds", type=float, default=10.0, help="default 10")
    args = parser.parse_args()
    for count in (int(c) for c in args.connections.split(",")):
        percent = await idle_cpu(count, args.seconds)
        print(f"{count:>6} idle connections: broker CPU {percent:5.2f} % of a core", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
