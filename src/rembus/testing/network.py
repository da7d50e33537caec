"""A broker and components in one process, on virtual time, without sockets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

from rembus.client.aio import Component
from rembus.client.options import make_options
from rembus.client.url import parse
from rembus.testing.broker import MemoryBroker
from rembus.testing.clock import MAX_TIME, VirtualClockLoop
from rembus.testing.link import Link
from rembus_proto.broker import RouterConfig

T = TypeVar("T")

#: Components of one network.
MAX_COMPONENTS = 10_000


class Network:
    """An in-process broker (the real router, in-memory store) and its components.

    The network owns a :class:`~rembus.testing.clock.VirtualClockLoop`; run
    the test on it with :meth:`run` (the pytest fixture ``rembus_network``
    does it for ``async def`` tests)::

        net = Network()

        async def main() -> None:
            a = await net.component("a")
            ...

        net.run(main())

    Components are the async driver's :class:`~rembus.client.aio.Component`
    over in-memory links: the same API, timeouts, QoS resends and reconnects,
    with every delay on virtual time. ``seed`` makes the reconnect jitter
    reproducible; ``config`` configures the broker; a run that lets more than
    ``max_time`` virtual seconds pass raises :class:`~rembus.testing.Stalled`.
    """

    def __init__(self, *, config: RouterConfig | None = None, seed: int = 0,
                 start: float = 0.0, max_time: float = MAX_TIME) -> None:
        self.loop = VirtualClockLoop(start, max_time)
        self.broker = MemoryBroker(self.loop, config)
        self._random = random.Random(seed)
        self._links: dict[int, Link] = {}
        self._by_name: dict[str, Link] = {}
        self._components: list[Component] = []

    # -- running ------------------------------------------------------------------

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` on the network's loop and return its result."""
        return self.loop.run_until_complete(main)

    def time(self) -> float:
        """The virtual time, in seconds."""
        return self.loop.time()

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass: every timer due meanwhile fires, in order,
        at its time; returns once nothing is left to run at the new time."""
        if seconds < 0:
            raise ValueError(f"cannot go back in time ({seconds!r} s)")
        self._check_loop()
        await asyncio.sleep(seconds)
        await self.settle()

    async def settle(self) -> None:
        """Return once nothing is left to run at the current time (time does not move)."""
        self._check_loop()
        await self.loop.idle()

    # -- components -----------------------------------------------------------------

    async def component(self, name: str | None = None, **options: Any) -> Component:
        """Connect a component (named, or anonymous with ``None``) and return it.

        ``options`` are those of :func:`rembus.component` (``timeout=``, ...).
        """
        self._check_loop()
        if len(self._components) >= MAX_COMPONENTS:
            raise RuntimeError(f"more than {MAX_COMPONENTS} components in one network")
        link = Link(self.broker)
        comp = Component(parse(name), make_options(options), opener=link.open,
                         jitter=self._random.random)
        self._links[id(comp)] = link
        if name is not None:
            self._by_name[name] = link
        self._components.append(comp)
        await comp.start()
        return comp

    def link(self, component: Component | str) -> Link:
        """The link of a component (or of the last one made with that name)."""
        if isinstance(component, str):
            return self._by_name[component]
        return self._links[id(component)]

    # -- the broker ------------------------------------------------------------------

    def stop_broker(self) -> None:
        """Stop the broker (its store is kept); connections end, new ones are refused."""
        self.broker.stop()

    def start_broker(self) -> None:
        """Start the broker again on the same store."""
        self.broker.start()

    def restart_broker(self) -> None:
        """Stop and start the broker, keeping its store; components reconnect by themselves."""
        self.broker.stop()
        self.broker.start()

    # -- the end ----------------------------------------------------------------------

    async def close(self) -> None:
        """Close every component of the network."""
        components, self._components = self._components, []
        await asyncio.gather(*(c.close() for c in components), return_exceptions=True)

    def shutdown(self) -> None:
        """Close the components, stop the broker, cancel the tasks left and close the loop
        (the network ends)."""
        loop = self.loop
        if loop.is_closed():
            return
        try:
            loop.run_until_complete(self.close())
            self.broker.stop()
            left = asyncio.all_tasks(loop)  # tasks of the test itself, still waiting
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _check_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise RuntimeError("a Network is used on its own loop: run the test with "
                               "Network.run() or the rembus_network fixture")
