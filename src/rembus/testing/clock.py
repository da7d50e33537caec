"""An asyncio event loop whose clock is virtual.

:class:`VirtualClockLoop` is an ordinary selector loop except for
``time()``: it starts at ``start`` and moves only when the loop has nothing
left to run now, straight to the next timer (``call_later``, ``sleep``,
``wait_for``). Timers fire in order, at their exact virtual time, without
real waiting: a 10 s timeout ends as soon as everything else is waiting.

Code that waits for a thread (``run_in_executor``, ``to_thread``) sees time
jump if a timer is pending meanwhile; real I/O still works (it is polled
before each jump).
"""

from __future__ import annotations

import asyncio
import selectors
from collections import deque
from typing import Any

#: Real seconds the loop may wait for a thread when nothing at all is scheduled;
#: beyond it the loop is stuck, and running it raises :class:`Stalled`.
STALL_LIMIT = 60.0
#: Virtual seconds a loop may run by default: time that runs on and on means the test
#: waits for something that never comes (periodic timers would otherwise spin forever).
MAX_TIME = 86_400.0
#: Waiters of :meth:`VirtualClockLoop.idle` at once.
MAX_IDLE_WAITERS = 10_000


class Stalled(RuntimeError):
    """Nothing is scheduled and nothing happened for :data:`STALL_LIMIT` real seconds, or
    virtual time went past the loop's ``max_time``."""


class _JumpingSelector(selectors.BaseSelector):
    """A real selector that, instead of blocking, moves the loop's virtual clock."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None
               ) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        # Nothing can run now: the loop is idle at this instant.
        if self._loop.wake_idle():
            return []
        if timeout is None:
            ready = self._real.select(STALL_LIMIT)
            if not ready:
                raise Stalled(f"nothing is scheduled and nothing happened in {STALL_LIMIT:g} s: "
                              "every task waits for something that cannot come")
            return ready
        self._loop.jump(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time (see the module docstring)."""

    def __init__(self, start: float = 0.0, max_time: float = MAX_TIME) -> None:
        """Virtual time starts at ``start``; running the loop raises :class:`Stalled` once
        it would pass ``start + max_time``."""
        self._virtual_now = float(start)
        self._end = float(start) + max_time
        self._idle_waiters: deque[asyncio.Future[None]] = deque()
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        """The virtual time, in seconds."""
        return self._virtual_now

    def idle(self) -> asyncio.Future[None]:
        """A future that ends when the loop has nothing left to run at the current time."""
        if len(self._idle_waiters) >= MAX_IDLE_WAITERS:
            raise RuntimeError(f"more than {MAX_IDLE_WAITERS} waiters of idle()")
        future: asyncio.Future[None] = self.create_future()
        self._idle_waiters.append(future)
        return future

    def wake_idle(self) -> bool:
        """Wake what waits for the loop to be idle; true if something was woken."""
        woke = False
        while self._idle_waiters:
            future = self._idle_waiters.popleft()
            if not future.done():
                future.set_result(None)
                woke = True
        return woke

    def jump(self, seconds: float) -> None:
        """Move the virtual clock ``seconds`` ahead."""
        now = self._virtual_now + seconds
        if now > self._end:
            raise Stalled(f"virtual time would pass {self._end:g} s (max_time): the test waits "
                          "for something that does not come")
        self._virtual_now = now
