"""Processes for tests; the code lives in :mod:`rembus.testing.process`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from rembus.testing.process import WAIT, BrokerProcess, Process, rembus_cli

__all__ = ["WAIT", "BrokerProcess", "Process", "rembus_cli", "until"]

T = TypeVar("T")


def until(attempt: Callable[[], T | None], what: str) -> T:
    """Call ``attempt`` until it returns something other than ``None`` (bounded by WAIT);
    ``attempt`` itself waits for something (an answer, a message), so this never spins."""
    deadline = time.monotonic() + WAIT
    while True:
        result = attempt()
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"never: {what}"
