"""Fixtures shared by the test modules."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt during the test, as Ctrl-C in a terminal does.

    A process started in the background by a non-interactive shell inherits
    SIGINT ignored, and Python then leaves it ignored: without this, a test of
    Ctrl-C would wait forever there.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
