"""Scripts end quietly: unclosed components are closed at exit, Ctrl-C ends rembus.run.

Each script runs in a child process against a broker process; stdout and
stderr are read together, so any traceback or warning fails the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess, Process

pytestmark = pytest.mark.timeout(120)

#: Makes Ctrl-C raise KeyboardInterrupt in the child even when this process was
#: started with SIGINT ignored (which a child would inherit).
DEFAULT_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with BrokerProcess(tmp_path / "broker") as broker:
        yield {**os.environ, "REMBUS_BASE_URL": broker.url, "REMBUS_DIR": str(tmp_path / "rb"),
               "PYTHONWARNINGS": "default"}


def run_script(source: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_sync_script_without_close_exits_quietly(env: dict[str, str]) -> None:
    done = run_script("""
        import rembus.sync as rembus
        client = rembus.component()
        client.publish("t", 1, qos=1)
        try:
            client.rpc("nobody_serves_this")
        except rembus.MethodNotFound:
            print("not found")
    """, env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "not found\n", "")


def test_blocking_script_without_close_exits_quietly(env: dict[str, str]) -> None:
    done = run_script("""
        import rembus.blocking as rembus
        comp = rembus.component("exit_blocking")
        comp.subscribe(print, topic="t")
        comp.publish("t", "sent", qos=1)
        print("done")
    """, env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")


def test_async_forever_ends_quietly_on_ctrl_c(env: dict[str, str]) -> None:
    source = DEFAULT_SIGINT + textwrap.dedent("""
        import rembus

        made = []

        async def main():
            rb = await rembus.component("forever_async")
            made.append(rb)
            await rb.expose(lambda x: x, topic="echo")
            print("ready", flush=True)
            await rb.forever()

        rembus.run(main())
        print("closed:", not made[0].is_connected)
    """)
    with Process([sys.executable, "-c", source], env) as script:
        script.wait_for("ready")
        assert script.stop(signal.SIGINT) == 0
        assert script.rest() == "closed: True\n"


def test_run_returns_the_result_and_closes_components(env: dict[str, str]) -> None:
    done = run_script("""
        import rembus

        made = []

        async def main():
            made.append(await rembus.component())
            return 42

        print(rembus.run(main()), made[0].is_connected)
    """, env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "42 False\n", "")
