"""How components end with the program.

* ``rembus.sync`` and ``rembus.blocking`` components that the script did not
  close are closed when the interpreter exits (the broker sees a clean close,
  nothing is printed).
* :func:`run` runs the ``main()`` of an async script until it returns or
  Ctrl-C, then closes the components made on its loop and returns quietly.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from rembus import eventloop

log = logging.getLogger("rembus")

T = TypeVar("T")


class Closable(Protocol):
    """A component that closes without an event loop."""

    def close(self) -> object:
        """Close the connection for good (what it returns is not used)."""


_lock = threading.Lock()
_open: dict[int, Closable] = {}  # insertion-ordered, by id(): components need no hash
_hooked = False
_live: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def close_at_exit(component: Closable) -> None:
    """Close ``component`` when the interpreter exits, unless it was closed before."""
    global _hooked
    with _lock:
        _open[id(component)] = component
        if not _hooked:
            atexit.register(_close_open)
            _hooked = True


def forget_at_exit(component: Closable) -> None:
    """``component`` was closed: nothing to do for it at exit."""
    with _lock:
        _open.pop(id(component), None)


def _close_open() -> None:
    with _lock:
        components = list(_open.values())
        _open.clear()
    for component in reversed(components):
        try:
            component.close()
        except Exception as exc:  # exiting: a failed close must not stop the others
            log.debug("closing %r at exit failed: %s", component, exc)


def track(component: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Remember an async component and its loop so that :func:`run` can close it (weakly)."""
    _live[component] = loop


async def _close_components(loop: asyncio.AbstractEventLoop) -> None:
    mine = [c for c, its_loop in list(_live.items()) if its_loop is loop]
    await asyncio.gather(*(c.close() for c in mine), return_exceptions=True)


async def _closing(main: Coroutine[Any, Any, T]) -> T:
    try:
        return await main
    finally:
        await _close_components(asyncio.get_running_loop())


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T | None:
    """Run ``main`` like :func:`asyncio.run`, made for scripts that run until Ctrl-C.

    ``loop`` picks the event loop: ``"auto"`` (uvloop when installed, see the
    ``rembus[speed]`` extra), ``"uvloop"`` or ``"asyncio"``.

    Ctrl-C (SIGINT) cancels ``main``; whether ``main`` returned, raised or was
    interrupted, every component made on its event loop is then closed.
    Returns what ``main`` returned, or ``None`` after Ctrl-C (no traceback:
    the script goes on, and ends with status 0)::

        async def main() -> None:
            rb = await rembus.component("myname")
            await rb.expose(add)
            await rb.forever()

        rembus.run(main())
    """
    try:
        return eventloop.run(_closing(main), loop)
    except KeyboardInterrupt:
        return None
