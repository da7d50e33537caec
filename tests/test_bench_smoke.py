"""bench/bench_compare.py runs end to end on tiny sizes and stops the servers it started."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    pids = server_pids(done.stderr)
    assert len(pids) == len(LOOPS) + 1, done.stderr  # a broker per loop, and nats-server
    assert_stopped(pids)


def server_pids(stderr: str) -> list[int]:
    """The server processes a benchmark says it started."""
    match = re.search(r"server pids ([\d ]+)", stderr)
    assert match, stderr
    return [int(pid) for pid in match.group(1).split()]


def assert_stopped(pids: list[int]) -> None:
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
    assert_stopped(server_pids(done.stderr))


def test_bench_cluster_compares_one_broker_with_several_and_stops_its_servers() -> None:
    pytest.importorskip("nats")
    script = BENCH.parent / "bench_cluster.py"
    done = subprocess.run([sys.executable, str(script), "--divide", "100", "--count", "1000",
                           "--brokers", "1,3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("W1", "W2", "W4"):
        for where in ("one broker", "across brokers"):
            match = re.search(rf"^{name} .*, {where}: ([\d,]+) (?:msgs|deliveries|calls)/s "
                              r"\([\d,]+ in all\); CPU per (?:delivery|call): "
                              r"brokers [\d.]+ us, NATS [\d.]+ us, clients [\d.]+ us$", out, re.M)
            assert match and int(match[1].replace(",", "")) > 0, out
        assert re.search(rf"^{name} across / one broker: rate x[\d.]+, ", out, re.M), out
    fanout = re.findall(r"^fan-out over (\d) broker.*: ([\d,]+) deliveries/s; .*"
                        r"broker 0 [\d.]+ us", out, re.M)
    assert [n for n, _ in fanout] == ["1", "3"], out
    assert all(int(rate.replace(",", "")) > 0 for _, rate in fanout), out
    assert "LOST" not in out, out
    assert "2 cores" in out and "replay across brokers" in out, out
    pids = server_pids(done.stderr)
    assert len(pids) == 6, done.stderr  # three brokers, three NATS nodes
    assert_stopped(pids)
