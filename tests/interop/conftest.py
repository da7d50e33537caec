"""Fixtures of the interop suite: upstream environments, brokers, peers and our client.

The upstream virtualenvs are built on first use and cached (see
``upstream.py``); everything else is per test and stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import upstream
from harness import CliBroker, LoopThread, OurBroker, OurClient, Peer, UpstreamBroker
from upstream import Release, UnsupportedPython, UpstreamUnavailable, Venv


def _venv(release: Release) -> Venv:
    try:
        return upstream.ensure(release)
    except UpstreamUnavailable as exc:
        problem = exc  # reported outside the handler, without the chained traceback
    if isinstance(problem, UnsupportedPython):
        pytest.skip(str(problem))
    pytest.fail(f"cannot prepare the upstream {release.name} environment: {problem}\n"
                "(the interop tests need PyPI once; deselect them with -m 'not interop')",
                pytrace=False)


@pytest.fixture(scope="session")
def venv_010() -> Venv:
    return _venv(upstream.RELEASE_010)


@pytest.fixture(scope="session")
def venv_0823() -> Venv:
    return _venv(upstream.RELEASE_0823)


@pytest.fixture
def venvs(request: pytest.FixtureRequest) -> Callable[[str], Venv]:
    """``venvs("0.1.0")`` / ``venvs("0.8.23")``: the environment of a release, by version."""

    def get(version: str) -> Venv:
        name = {"0.1.0": "venv_010", "0.8.23": "venv_0823"}[version]
        venv: Venv = request.getfixturevalue(name)
        return venv

    return get


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture
def broker(loop: LoopThread) -> Iterator[OurBroker]:
    """Our broker, in process."""
    running = OurBroker(loop)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def cli_broker(tmp_path: Path) -> Iterator[CliBroker]:
    """Our broker as a ``rembus broker`` process with its SQLite data dir."""
    with CliBroker(tmp_path / "rembus-broker") as running:
        yield running


@pytest.fixture
def upstream_broker(venv_0823: Venv, tmp_path: Path) -> Iterator[UpstreamBroker]:
    """The 0.8.23 broker, in a process of its own."""
    with UpstreamBroker(venv_0823, tmp_path / "upstream-broker") as running:
        yield running


@pytest.fixture
def spawn(venvs: Callable[[str], Venv], tmp_path: Path) -> Iterator[Callable[[str, str], Peer]]:
    """``spawn("0.1.0", "label")``: an upstream peer process, stopped after the test."""
    started: list[Peer] = []

    def start(version: str, label: str) -> Peer:
        peer = Peer(venvs(version), label, tmp_path / "peers")
        started.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in started:
            peer.finish()  # they all wind down at once
        for peer in reversed(started):
            peer.close()


@pytest.fixture
def ours(loop: LoopThread) -> Iterator[Callable[..., OurClient]]:
    """``ours(url, **options)``: our async client, closed after the test."""
    started: list[OurClient] = []

    def start(url: str, **options: Any) -> OurClient:
        client = OurClient(loop, url, **options)
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in reversed(started):
            client.close()
