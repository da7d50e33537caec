"""The pytest plugin of ``rembus[testing]`` (registered by the ``pytest11`` entry point).

Fixtures:

* ``rembus_network``: a :class:`~rembus.testing.Network` (in-process broker,
  virtual time), shut down at teardown. An ``async def`` test that asks for it
  runs on the network's loop, no other plugin needed.
* ``rembus_broker``: a real ``rembus broker`` process on 127.0.0.1 and an
  ephemeral port, with its own data directory; ``rembus_broker.url`` is its
  address. Stopped at teardown.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from rembus.testing.network import Network
from rembus.testing.process import BrokerProcess


@pytest.fixture
def rembus_network() -> Iterator[Network]:
    """An in-process Rembus network on virtual time; ``async def`` tests run on its loop."""
    net = Network()
    try:
        yield net
    finally:
        net.shutdown()


@pytest.fixture
def rembus_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A ``rembus broker`` process on 127.0.0.1 (ephemeral port), stopped at teardown."""
    with BrokerProcess(tmp_path / "rembus-broker") as broker:
        yield broker


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that uses ``rembus_network`` on the network's loop."""
    test = pyfuncitem.obj
    net = pyfuncitem.funcargs.get("rembus_network")
    if not inspect.iscoroutinefunction(test) or not isinstance(net, Network):
        return None
    funcargs = pyfuncitem.funcargs
    args = {name: funcargs[name] for name in inspect.signature(test).parameters
            if name in funcargs}
    net.run(test(**args))
    return True
