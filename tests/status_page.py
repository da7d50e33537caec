"""The status page in headless Chromium, and some traffic for it to show.

Used by ``test_status.py`` and by ``status_screenshot.py`` (which makes the
README's screenshot, ``docs/status-page.png``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import rembus.sync

WAIT = 120.0
"""Upper bound (seconds) of one Chromium run."""

COMPONENT = "thermostat"
TOPIC = "kitchen/temperature"
METHOD = "setpoint"


def chromium_path() -> str | None:
    """The Chromium executable, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with a fresh profile; ``args``: what to make
    (``--dump-dom``, ``--screenshot=...``)."""
    executable = chromium_path()
    assert executable is not None, "chromium is not installed"
    cmd = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
           *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT, check=False)


@contextmanager
def traffic(broker_url: str) -> Iterator[None]:
    """A named component that subscribes to :data:`TOPIC` and exposes :data:`METHOD`,
    and an anonymous one that publishes and calls it; both connected until the end."""
    with ExitStack() as stack:
        server = stack.enter_context(rembus.sync.component(f"{broker_url}/{COMPONENT}"))
        server.subscribe(lambda *_: None, True, topic=TOPIC)
        server.expose(lambda celsius: celsius, topic=METHOD)
        server.reactive()
        client = stack.enter_context(rembus.sync.component(broker_url))
        for celsius in (20.5, 21.0, 21.5):
            client.publish(TOPIC, celsius)
        assert client.rpc(METHOD, 21.0) == 21.0  # the publications before it are routed
        yield
