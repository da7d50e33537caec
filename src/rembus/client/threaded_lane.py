"""Subscribers of the sync API: one thread, messages in arrival order, no round trip each.

The I/O loop puts ``(handler, args, event)`` in a bounded queue and goes on;
the lane's thread takes everything queued at once and runs it in order, so a
burst of messages costs one wake-up of the thread, not one each. A place in
the queue is freed when its handler has run, so at most ``size`` messages
wait or run. Only when the queue is full does the loop wait, in a task: later
messages then queue up behind it (in order) and the component stops reading
once ``max_handler_tasks`` of them wait, so memory stays bounded and nothing
overtakes anything.

A QoS1/QoS2 message is acknowledged only once its handler returned (or
raised), as on the async driver: the lane's thread hands the handled messages
back to the loop, which acknowledges them; handlers that end while the loop
has not yet taken the previous ones share its next wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rembus.client import aio
from rembus.client.handlers import Handler
from rembus.client.options import Options, make_options
from rembus.client.url import ComponentURL, parse
from rembus_proto.client_events import PublicationReceived

log = logging.getLogger("rembus")

#: A handler, its arguments, and the message to acknowledge once it ran (``None``: QoS0).
_Item = tuple[Handler, tuple[Any, ...], PublicationReceived | None]


class InLane:
    """A plain-function subscriber, as registered: its messages go to the lane."""

    __slots__ = ("__name__", "fn")

    def __init__(self, fn: Handler) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "subscriber")

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class OrderedLane:
    """A thread running subscriber handlers one at a time, in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int,
                 handled: Callable[[list[PublicationReceived]], None]) -> None:
        """``handled`` is called on the loop with the QoS1/QoS2 messages whose
        handler ended, in the order they ran."""
        self._loop = loop
        self._size = size
        self._handled = handled
        self._items: deque[_Item] = deque()
        self._held = 0  # queued or running (guarded by _ready)
        self._ready = threading.Condition(threading.Lock())
        self._idle = False  # the thread waits for items
        self._closed = False
        self._done: list[PublicationReceived] = []  # handled, not yet acknowledged (_ready)
        self._wake_scheduled = False  # a _report waits to run on the loop (_ready)
        self._backlog = 0  # messages waiting for room (touched on the loop thread only)
        self._order: asyncio.Lock | None = None
        self._room: asyncio.Event | None = None
        self._want_room = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, fn: Handler, args: tuple[Any, ...], event: PublicationReceived | None
            ) -> Coroutine[Any, Any, None] | None:
        """Queue a call of ``fn`` (on the loop); a coroutine to await when the lane is full.

        ``event`` (a QoS1/QoS2 message) is passed to ``handled`` once ``fn`` ended.
        """
        self._start()
        item = (fn, args, event)
        if not self._backlog and self._offer(item):
            return None
        self._backlog += 1
        return self._put_in_order(item)

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

    def _report(self) -> None:
        """On the loop: acknowledge what was handled, let a waiting message in."""
        with self._ready:
            done = self._done
            self._done = []
            self._wake_scheduled = False
        if done:
            self._handled(done)
        if self._want_room and self._room is not None:
            self._room.set()

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
            for fn, args, event in batch:
                try:
                    fn(*args)
                except BaseException as exc:  # SystemExit too: log it, keep the thread
                    log.error("subscriber %s raised %r", getattr(fn, "__name__", fn), exc,
                              exc_info=exc)
                with ready:
                    self._held -= 1
                    if event is not None:
                        self._done.append(event)
                    wake = (event is not None or self._want_room) and not self._wake_scheduled
                    if wake:
                        self._wake_scheduled = True
                if wake:
                    try:
                        self._loop.call_soon_threadsafe(self._report)
                    except RuntimeError:  # the loop is closed: nobody waits any more
                        return


class LaneComponent(aio.Component):
    """The async component of the sync API: plain-function subscribers run on a lane."""

    def __init__(self, url: ComponentURL, options: Options) -> None:
        super().__init__(url, options)
        self.lane = OrderedLane(self._loop, options.max_handler_tasks, self._handled)

    def _on_publication(self, event: PublicationReceived) -> None:
        if type(self.registry.subscribers.get(event.topic)) is not InLane:
            super()._on_publication(event)  # an async def handler, or none yet
            return
        call = self._publication_call(event)
        if call is None:
            return
        handler, args = call
        assert isinstance(handler, InLane)
        waiting = self.lane.put(handler.fn, args, None if event.msg_id is None else event)
        if waiting is not None:
            self._invoke(_awaited, (waiting,), _waited)

    def _handled(self, events: list[PublicationReceived]) -> None:
        for event in events:
            self._delivered(event)
        self._schedule_flush()


def _awaited(coro: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
    return coro


def _waited(_: Any, error: BaseException | None) -> None:
    if error is not None:
        log.error("queueing a message for the subscriber thread failed: %r", error)


async def lane_component(url: str | Sequence[str] | None, **options: Any) -> LaneComponent:
    """Connect the async half of a sync component (on its I/O loop)."""
    comp = LaneComponent(parse(url), make_options(options))
    await comp.start()
    return comp
