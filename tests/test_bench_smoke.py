"""bench/bench_compare.py runs end to end on tiny sizes and stops the servers it started."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_compare.py"
BASE = ("W1", "W2", "W3", "W4", "W5", "W1q", "W1q100", "W1s", "W2s", "W4s")
# one set of rows per broker event loop: asyncio, and uvloop when installed
LOOPS = ("", "/uv") if importlib.util.find_spec("uvloop") else ("",)
ROWS = tuple(name + loop for loop in LOOPS for name in BASE)
REMBUS_ONLY = ("W1q", "W1s", "W2s", "W4s")
ROW = re.compile(r"^(\S+) .*?(?:msgs|deliveries|calls|MB)/s\s+([\d,]+)\s+([\d,]+|-)\s+([\d.]+|-)")


def test_bench_compare_runs_and_stops_its_servers() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--divide", "100", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {m[1]: m.groups()[1:] for m in map(ROW.match, done.stdout.splitlines()) if m}
    assert sorted(rows) == sorted(ROWS), done.stdout
    for name, (ours, theirs, ratio) in rows.items():
        assert int(ours.replace(",", "")) > 0, done.stdout
        assert ((theirs, ratio) == ("-", "-") if name.startswith(REMBUS_ONLY)
                else float(ratio) > 0)
    assert "LOST" not in done.stdout, done.stdout
    match = re.search(r"server pids ([\d ]+)", done.stderr)
    assert match, done.stderr
    pids = [int(pid) for pid in match.group(1).split()]
    assert len(pids) == len(LOOPS) + 1, done.stderr  # a broker per loop, and nats-server
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"server process {pid} still running")


def test_bench_profile_reports_every_layer_share_and_stops_its_servers() -> None:
    script = BENCH.parent / "bench_profile.py"
    done = subprocess.run([sys.executable, str(script), "--divide", "100", "--workloads",
                           "W1,W3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    heads = re.findall(r"^(W\d) (rembus|nats) .*lost 0; per unit ([\d.]+) Python calls",
                       done.stdout, re.M)
    assert [(w, s) for w, s, _ in heads] == [("W1", "rembus"), ("W1", "nats"),
                                             ("W3", "rembus"), ("W3", "nats")], done.stdout
    assert all(float(calls) > 0 for *_, calls in heads)
    assert "protocol core" in done.stdout and "nats-py" in done.stdout
    match = re.search(r"server pids ([\d ]+)", done.stderr)
    assert match, done.stderr
    for pid in map(int, match.group(1).split()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"server process {pid} still running")
