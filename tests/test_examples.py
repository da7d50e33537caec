"""Every script in examples/ runs against a real broker process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess, Process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with BrokerProcess(tmp_path / "broker") as broker:
        yield {**os.environ, "REMBUS_BASE_URL": broker.url, "REMBUS_DIR": str(tmp_path / "rb")}


def run(name: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_publish_examples(env: dict[str, str]) -> None:
    assert "published 4 readings" in run("publish_sync.py", env)
    assert "published 4 readings" in run("publish_async.py", env)


def test_rpc_server_and_client_sync(env: dict[str, str]) -> None:
    with Process([sys.executable, str(EXAMPLES / "rpc_server.py")], env) as server:
        server.wait_for("serving")
        out = run("rpc_client.py", env)
    assert "add(1, 2) = 3" in out
    assert "'mean': 21.666" in out
    assert "direct add = 30" in out
    assert "stats([]) failed: stats needs at least one value" in out


def test_rpc_server_and_client_async(env: dict[str, str]) -> None:
    with Process([sys.executable, str(EXAMPLES / "rpc_server_async.py")], env) as server:
        server.wait_for("serving")
        out = run("rpc_client_async.py", env)
    assert "100 calls, sum of results = 9900" in out
    assert "rpc failed: no_such_method: method unknown" in out
    assert out.count("no_such_method") == 1


def test_live_subscriber(env: dict[str, str]) -> None:
    with Process([sys.executable, str(EXAMPLES / "subscribe_sync.py")], env) as sub:
        sub.wait_for("subscribed")
        run("publish_sync.py", env)
        for reading in ("21.5", "21.7", "22.0", "22.1"):
            assert reading in sub.wait_for(f"kitchen: {reading}")


def test_retroactive_subscriber_gets_what_it_missed(env: dict[str, str]) -> None:
    cmd = [sys.executable, str(EXAMPLES / "subscribe_retroactive.py"), "4"]
    with Process(cmd, env) as sub:
        sub.wait_for("subscribed")
        run("publish_sync.py", env)  # live: the first run prints them and exits
        assert sub.wait_exit() == 0
    run("publish_async.py", env)  # published while the subscriber is away
    out = run("subscribe_retroactive.py", env, "4")
    assert out.count("kitchen:") == 4 and "22.1" in out


def test_testing_examples_pass() -> None:
    """examples/testing is a test suite of its own, on rembus.testing's virtual clock."""
    src = str(EXAMPLES.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(EXAMPLES / "testing")], cwd=EXAMPLES.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout
