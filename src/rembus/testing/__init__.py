"""Test components that use Rembus, without sockets and without waiting.

* :class:`Network`: the real broker core and the async driver's components,
  in one process, connected by in-memory links, on a virtual clock.
* :class:`Link`: faults on one component's connection (drop, delay,
  duplicate, reorder, cut, refuse).
* :class:`BrokerProcess`: a real ``rembus broker`` process on 127.0.0.1.
* ``rembus.testing.plugin``: the pytest fixtures ``rembus_network`` and
  ``rembus_broker``; ``rembus.testing.strategies``: hypothesis strategies.
"""

from __future__ import annotations

from rembus.testing.clock import Stalled, VirtualClockLoop
from rembus.testing.link import Link
from rembus.testing.network import Network
from rembus.testing.process import BrokerProcess

__all__ = ["BrokerProcess", "Link", "Network", "Stalled", "VirtualClockLoop"]
