"""Fixtures shared by the test modules."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from behaviour_drivers import BrokerProcess

if TYPE_CHECKING:
    from nats_cluster import NatsCluster

# Also registered by the package's pytest11 entry point once installed; by this
# name pytest loads it once either way.
pytest_plugins = ["rembus.testing.plugin"]

# No time limit per example: speed is measured in bench/, and a loaded machine
# (CI on two shared cores) must not turn a slow example into a failure.
settings.register_profile("rembus", deadline=None)
settings.load_profile("rembus")


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A ``rembus broker`` process on a free port (restartable, killable), stopped at the end."""
    broker = BrokerProcess(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


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


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsCluster]:
    """One NATS server with JetStream on 127.0.0.1, stopped after the test."""
    from nats_cluster import NatsCluster

    with NatsCluster(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def nats_trio(tmp_path: Path) -> Iterator[NatsCluster]:
    """A cluster of three NATS servers with JetStream on 127.0.0.1, stopped after the test."""
    from nats_cluster import NatsCluster

    with NatsCluster(tmp_path, size=3) as cluster:
        yield cluster
