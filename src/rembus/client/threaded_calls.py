"""Requests of the sync API (``rpc``, ``direct``) handed to the I/O thread in batches.

A caller thread appends its request to a queue and sleeps on a lock of its
own; the first request of a batch wakes the I/O loop once, which hands every
queued request to the protocol core (after the QoS0 publications queued
before them, so the order of calls is the order on the wire) and writes them
together. Each answer releases its caller's lock from the loop: no future
shared between threads, no condition variable, no wake-up of the loop per
call. Requests many threads make at once thus cost one hand-off per batch.
"""

from __future__ import annotations

import _thread
import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from rembus.client.threaded_lane import LaneComponent
from rembus.errors import RembusConnectionClosed

#: A request: method, arguments, target (``None``: any exposer), timeout, its waiter.
_Request = tuple[str, tuple[Any, ...], "str | None", "float | None", "_Waiter"]


def _closed() -> RembusConnectionClosed:
    return RembusConnectionClosed("the component is closed")


class _Waiter:
    """The outcome of one request, and the lock its caller sleeps on until it is there."""

    __slots__ = ("error", "lock", "settled", "value")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.value: Any = None
        self.error: BaseException | None = None
        self.settled = False  # touched on the I/O thread only

    def settle(self, value: Any, error: BaseException | None) -> None:
        """Hand the outcome to the caller (on the I/O thread; once)."""
        if self.settled:
            return
        self.settled = True
        self.value = value
        self.error = error
        self.lock.release()

    def from_future(self, future: asyncio.Future[Any]) -> None:
        """The request's future ended: its outcome, a cancellation as a closed component."""
        if future.cancelled():
            self.settle(None, _closed())
        elif (error := future.exception()) is not None:
            self.settle(None, error)
        else:
            self.settle(future.result(), None)


class CallBatcher:
    """Requests from any thread to the I/O loop, one hand-off per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inner: LaneComponent,
                 before: Callable[[], None]) -> None:
        """``before`` runs on the loop ahead of each batch (the queued publications)."""
        self._loop = loop
        self._inner = inner
        self._before = before
        self._queue: deque[_Request] = deque()
        self._scheduled = False  # a _take waits to run on the loop
        self._waiting: set[_Waiter] = set()
        self._stopped = False

    def call(self, method: str, args: tuple[Any, ...], target: str | None,
             timeout: float | None) -> Any:
        """Make a request on the loop and wait for its outcome (return it or raise it)."""
        waiter = _Waiter()
        self._waiting.add(waiter)
        try:
            self._queue.append((method, args, target, timeout, waiter))
            if not self._scheduled:
                self._scheduled = True
                try:
                    self._loop.call_soon_threadsafe(self._take)
                except RuntimeError:  # the loop is closed
                    raise _closed() from None
            if self._stopped:  # stopped meanwhile: stopped() may have missed this waiter
                raise _closed()
            waiter.lock.acquire()
        finally:
            self._waiting.discard(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def stopped(self) -> None:
        """The loop ended (on its thread, once it is closed): fail every waiting request."""
        self._stopped = True
        for waiter in list(self._waiting):
            waiter.settle(None, _closed())

    def _take(self) -> None:
        # Reset before the queue is looked at: a request appended later schedules anew.
        self._scheduled = False
        self._before()
        queue = self._queue
        request = self._inner.request
        for _ in range(len(queue)):
            method, args, target, timeout, waiter = queue.popleft()
            try:
                future = request(method, args, target, timeout)
            except Exception as exc:  # bad arguments, not connected, ...: the caller's error
                waiter.settle(None, exc)
            else:
                future.add_done_callback(waiter.from_future)
