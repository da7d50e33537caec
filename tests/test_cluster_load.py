"""``less_busy`` across brokers: real broker processes on a real 3-node NATS cluster.

"Busy" is made deterministic: an exposer that holds its calls until the test
releases it. Load reports travel every second; the test waits until the
caller's broker shows them in its ``/status.json`` (a condition, never a sleep),
then checks where the calls go.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
from broker_process import WAIT, BrokerProcess, until
from nats_cluster import NatsCluster
from test_cluster_broker import cluster_brokers

pytest.importorskip("nats")


def cluster_status(broker: BrokerProcess) -> dict[str, Any]:
    """The ``cluster`` part of a broker's ``/status.json``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.port}/status.json",
                                timeout=WAIT) as answer:
        status: dict[str, Any] = json.load(answer)["cluster"]
    return status


def test_less_busy_sends_calls_to_the_idle_broker(nats_trio: NatsCluster,
                                                  tmp_path: Path) -> None:
    with cluster_brokers(nats_trio, tmp_path, 3, "--policy", "less_busy") as (a, b, c):
        release = threading.Event()
        answered: list[str] = []

        def held() -> str:
            release.wait(WAIT)
            answered.append("a")
            return "a"

        def idle() -> str:
            answered.append("b")
            return "b"
        busy = rembus.sync.component(f"{a.url}/busy")
        busy.expose(held, topic="work")
        free = rembus.sync.component(f"{b.url}/free")
        free.expose(idle, topic="work")
        locals_ = [rembus.sync.component(f"{a.url}/local-{i}") for i in range(2)]
        caller = rembus.sync.component(f"{c.url}/caller")
        # a's exposer serves a's own callers (no hop) and holds both calls: 2 in flight,
        # more than b can have while it answers the caller's calls one at a time
        holding = [threading.Thread(target=lambda comp=comp: answered.append(
            str(comp.rpc("work")))) for comp in locals_]
        try:
            for thread in holding:
                thread.start()
            id_a, id_b = cluster_status(a)["broker_id"], cluster_status(b)["broker_id"]
            wanted = {(id_a, 2), (id_b, 0)}

            def reports_seen() -> bool | None:
                assert caller.rpc("rid") == "b2"  # one round trip per look
                loads = {(row["broker"], row["in_flight"]) for row in cluster_status(c)["loads"]
                         if row["method"] == "work"}
                return True if wanted <= loads else None
            until(reports_seen, "both brokers' loads known to the caller's broker")
            assert [caller.rpc("work") for _ in range(5)] == ["b"] * 5
            assert answered == ["b"] * 5  # a's exposer has not been called again
        finally:
            release.set()
            for thread in holding:
                thread.join(WAIT)
            for component in (caller, *locals_, free, busy):
                component.close()
        assert answered[5:] == ["a"] * 4  # the held calls, answered once released
