"""A plain ``pip install .`` runs the broker, the command line and the examples.

They run here with every installed third-party package that is not in
``[project].dependencies`` (or required by one) made unimportable, see
``core_only.py``: the DataFrame libraries, httpx and the test tools stay
optional extras.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker_process import WAIT, BrokerProcess, Process

ROOT = Path(__file__).resolve().parent.parent
CORE_ONLY = str(ROOT / "tests" / "core_only.py")
EXAMPLES = ROOT / "examples"


def core_dependencies() -> str:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ",".join(project["dependencies"])


def test_core_only_hides_the_optional_packages() -> None:
    """The check below can fail: a package outside the core is not importable."""
    probe = ("import importlib.util, sys; from core_only import CoreOnly, importable; "
             "deps = sys.argv[1].split(','); finder = CoreOnly(importable(deps)); "
             "print(all(finder.find_spec(m, None) is None for m in ('cbor2', 'h11', 'ssl')));"
             "\ntry:\n    finder.find_spec('pytest', None)\nexcept ModuleNotFoundError:\n"
             "    print('pytest hidden')")
    done = subprocess.run([sys.executable, "-c", probe, core_dependencies()],
                          cwd=ROOT / "tests", capture_output=True, text=True, timeout=WAIT)
    assert done.stdout.split("\n")[:2] == ["True", "pytest hidden"], done.stderr


def test_quick_start_core_dependencies_run_the_broker_and_examples(tmp_path: Path) -> None:
    core = (CORE_ONLY, core_dependencies())
    with BrokerProcess(tmp_path / "data", launcher=core) as broker:
        env = {**os.environ, "REMBUS_BASE_URL": broker.url, "REMBUS_DIR": str(tmp_path / "rb")}

        def run(*args: str) -> str:
            done = subprocess.run([sys.executable, *core, *args], env=env,
                                  capture_output=True, text=True, timeout=WAIT)
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert "published 4 readings" in run(str(EXAMPLES / "publish_sync.py"))
        assert "published 4 readings" in run(str(EXAMPLES / "publish_async.py"))
        with Process([sys.executable, *core, str(EXAMPLES / "rpc_server.py")], env) as server:
            server.wait_for("serving")
            assert "add(1, 2) = 3" in run(str(EXAMPLES / "rpc_client.py"))
        assert run("-m", "rembus", "rpc", "rid") == '"broker"\n'
