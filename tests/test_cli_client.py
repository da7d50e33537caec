"""``rembus pub``, ``rembus sub`` and ``rembus rpc`` against a broker process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess, Process
from rembus.cli.client import parse_value, show


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with BrokerProcess(tmp_path / "broker") as broker:
        yield {**os.environ, "REMBUS_BASE_URL": broker.url, "REMBUS_DIR": str(tmp_path / "rb")}


def rembus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rembus", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_arguments_are_json_or_text() -> None:
    assert [parse_value(a) for a in ("21.5", "[1, 2]", '{"a": 1}', "null", "kitchen")] == [
        21.5, [1, 2], {"a": 1}, None, "kitchen"]
    assert show({"a": [1, None]}) == '{"a": [1, null]}' and show(b"x") == "b'x'"


def test_pub_sub_and_rpc(env: dict[str, str]) -> None:
    sub_cmd = [sys.executable, "-m", "rembus", "sub", "temperature", "--count", "2"]
    with Process(sub_cmd, env) as sub:
        sub.wait_for("subscribed to temperature")
        assert rembus(env, "pub", "temperature", "kitchen", "21.5").returncode == 0
        assert '"kitchen" 21.5' in sub.wait_for("kitchen")
        assert rembus(env, "pub", "temperature", "hall", "19", "--qos", "1").returncode == 0
        assert '"hall" 19' in sub.wait_for("hall")
        assert sub.wait_exit() == 0
    version = rembus(env, "rpc", "version")
    assert version.returncode == 0 and version.stdout.startswith('"python_')
    missing = rembus(env, "rpc", "nosuch", "1")
    assert missing.returncode == 1 and "method unknown" in missing.stderr
    down = rembus(env, "rpc", "add", "1", "2", "--target", "nobody")
    assert down.returncode == 1 and "nobody" in down.stderr
