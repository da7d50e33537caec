"""Every script in examples/ runs against a real broker process."""

from __future__ import annotations

import importlib.util
import os
import select
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import rembus.sync
from broker_process import WAIT, BrokerProcess, Process

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


@pytest.mark.parametrize("example", ["embed_selectors.py", "embed_trio.py"])
def test_embedded_component_serves_and_receives_next_to_its_own_timer(
        env: dict[str, str], example: str) -> None:
    heartbeats = threading.Event()
    cmd = [sys.executable, str(EXAMPLES / example), "3"]
    with Process(cmd, env) as embedded:
        embedded.wait_for("ready")
        probe = rembus.sync.component(f"{env['REMBUS_BASE_URL']}/embed_probe")
        try:
            probe.subscribe(lambda beat: heartbeats.set(), topic="heartbeat")
            assert probe.rpc("add", 1, 2) == 3
            assert heartbeats.wait(WAIT), "no heartbeat from the application's own timer"
            for value in (21.5, 21.7, 22.0):
                probe.publish("temperature", "kitchen", value, qos=1)
            assert embedded.wait_exit() == 0
        finally:
            probe.close()
    out = "".join(embedded.output) + embedded.rest()
    assert "kitchen: 21.5" in out and "kitchen: 22.0" in out
    assert "done after 3 messages" in out


@pytest.fixture
def display() -> Iterator[str]:
    """A virtual X display (``Xvfb`` on a free display number), stopped at the end."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed: the Tkinter example needs an X display")
    if importlib.util.find_spec("tkinter") is None:
        pytest.skip("tkinter is not installed")
    read_end, write_end = os.pipe()
    try:
        # -displayfd: Xvfb picks a free display number and writes it once it is ready.
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp"],
                                pass_fds=(write_end,), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], WAIT)
            number = os.read(read_end, 64).decode().strip() if ready else ""
            assert number.isdigit(), "Xvfb did not report its display number"
            yield f":{number}"
        finally:
            xvfb.terminate()
            xvfb.wait(WAIT)
    finally:
        os.close(read_end)


def test_embed_tkinter_handles_messages_and_rpcs_in_the_tk_loop(
        env: dict[str, str], display: str) -> None:
    cmd = [sys.executable, str(EXAMPLES / "embed_tkinter.py"), "2"]
    with Process(cmd, {**env, "DISPLAY": display}) as embedded:
        embedded.wait_for("ready")
        probe = rembus.sync.component(f"{env['REMBUS_BASE_URL']}/tk_probe")
        try:
            assert probe.rpc("add", 20, 22) == 42
            probe.publish("temperature", "hall", 19.5, qos=1)
            probe.publish("temperature", "attic", 25.0, qos=1)
            assert embedded.wait_exit() == 0
        finally:
            probe.close()
    out = "".join(embedded.output) + embedded.rest()
    assert "add(20, 22)" in out
    assert "hall: 19.5" in out and "attic: 25.0" in out
    assert "done after 2 messages" in out
