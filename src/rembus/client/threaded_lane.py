"""Subscribers of the sync API: one thread, messages in arrival order, no round trip each.

The I/O loop puts ``(handler, args)`` in a bounded queue and goes on; the
lane's thread takes everything queued at once and runs it in order, so a
burst of messages costs one wake-up of the thread, not one each. A place in
the queue is freed when its handler has run, so at most ``size`` messages
wait or run. Only when the queue is full does the loop wait, in a task: later
messages then queue up behind it (in order) and the component stops reading
once ``max_handler_tasks`` of them wait, so memory stays bounded and nothing
overtakes anything.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any

from rembus.client.handlers import Handler

log = logging.getLogger("rembus")

_Item = tuple[Handler, tuple[Any, ...]]


class OrderedLane:
    """A thread running subscriber handlers one at a time, in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._size = size
        self._items: deque[_Item] = deque()
        self._held = 0  # queued or running (guarded by _ready)
        self._ready = threading.Condition(threading.Lock())
        self._idle = False  # the thread waits for items
        self._closed = False
        self._backlog = 0  # messages waiting for room (touched on the loop thread only)
        self._order: asyncio.Lock | None = None
        self._room: asyncio.Event | None = None
        self._want_room = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def wrap(self, fn: Handler) -> Handler:
        """What the async component calls for ``fn`` (called on the I/O loop)."""
        if inspect.iscoroutinefunction(fn):
            return fn

        def enqueue(*args: Any) -> Coroutine[Any, Any, None] | None:
            self._start()
            if not self._backlog and self._offer((fn, args)):
                return None
            self._backlog += 1
            return self._put_in_order((fn, args))

        return enqueue

    def close(self) -> None:
        """Let the thread end after the handlers already queued (without waiting)."""
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _offer(self, item: _Item) -> bool:
        """Queue ``item`` unless ``size`` messages already wait or run."""
        with self._ready:
            if self._held >= self._size:
                return False
            self._held += 1
            self._items.append(item)
            if self._idle:
                self._ready.notify()
        return True

    async def _put_in_order(self, item: _Item) -> None:
        if self._order is None:
            self._order = asyncio.Lock()
            self._room = asyncio.Event()
        room = self._room
        assert room is not None
        try:
            async with self._order:  # FIFO: waiting messages keep their order
                while True:
                    room.clear()
                    self._want_room = True
                    if self._offer(item):
                        return
                    await room.wait()
        finally:
            self._backlog -= 1
            if not self._backlog:
                self._want_room = False

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True,
                                                name="rembus subscribers")
                self._thread.start()

    def _work(self) -> None:
        ready = self._ready
        while True:
            with ready:
                while not self._items and not self._closed:
                    self._idle = True
                    ready.wait()
                    self._idle = False
                if not self._items:
                    return  # closed, and every queued handler has run
                batch = list(self._items)
                self._items.clear()
            for fn, args in batch:
                try:
                    fn(*args)
                except BaseException as exc:  # SystemExit too: log it, keep the thread
                    log.error("subscriber %s raised %r", getattr(fn, "__name__", fn), exc,
                              exc_info=exc)
                with ready:
                    self._held -= 1
                if self._want_room and self._room is not None:
                    try:
                        self._loop.call_soon_threadsafe(self._room.set)
                    except RuntimeError:  # the loop is closed: nobody waits any more
                        return
