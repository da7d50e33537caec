"""Subscribers of the sync API: one thread, messages in arrival order, no round trip each.

The I/O loop appends ``(handler, args, event)`` to a bounded queue and goes
on; the lane's thread pops and runs them in order. That path takes no lock
(a deque's ``append`` and ``popleft`` are atomic, and each of the two
counters that bound the queue is written by one thread only); a thread that
found the queue empty sleeps until one token wakes it, so a burst of messages
costs one wake-up of the thread, not one each. A place in the queue is freed
when its handler has run, so at most ``size`` messages wait or run. When the
queue is full, further messages wait in order on the loop (the overflow) and
the component stops reading from the broker until they are all in: memory
stays bounded, nothing overtakes anything, and no task is made per message.

A QoS1/QoS2 message is acknowledged only once its handler returned (or
raised), as on the async driver: the lane's thread hands the handled messages
back to the loop, which acknowledges them; handlers that end while the loop
has not yet taken the previous ones share its next wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol

from rembus.client import aio
from rembus.client.async_commands import Done
from rembus.client.handlers import Handler
from rembus.client.options import Options, make_options
from rembus.client.url import ComponentURL, parse
from rembus.errors import RembusError
from rembus_proto import Payload
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


class Pool(Protocol):
    """Where exposed plain functions run (the sync API's handler pool)."""

    @property
    def full(self) -> bool:
        """Whether as many calls as allowed wait or run."""

    on_room: Callable[[], None]

    def put(self, fn: Handler, args: tuple[Any, ...], done: Done) -> None:
        """Run ``fn(*args)`` off the loop, then ``done(result, error)`` on the loop."""

    def run(self, fn: Handler, args: tuple[Any, ...]) -> Coroutine[Any, Any, Any]:
        """Run ``fn(*args)`` off the loop; await its result."""


class InPool:
    """A plain-function exposed method, as registered: its requests go to the pool."""

    __slots__ = ("__name__", "fn", "pool")

    def __init__(self, fn: Handler, pool: Pool) -> None:
        self.fn = fn
        self.pool = pool
        self.__name__ = getattr(fn, "__name__", "method")

    def __call__(self, *args: Any) -> Coroutine[Any, Any, Any]:
        return self.pool.run(self.fn, args)


class OrderedLane:
    """A thread running subscriber handlers one at a time, in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int,
                 handled: Callable[[list[PublicationReceived]], None],
                 room: Callable[[], None]) -> None:
        """``handled`` is called on the loop with the QoS1/QoS2 messages whose
        handler ended, in the order they ran; ``room`` once the messages that
        waited for room (:attr:`overflowing`) are all queued."""
        self._loop = loop
        self._size = size
        self._handled = handled
        self._on_room = room
        self._items: deque[_Item] = deque()
        # queued - ended = messages that wait or run; each counter has one writer thread.
        self._queued = 0  # written on the loop only
        self._ended = 0  # written on the lane's thread only
        self._overflow: deque[_Item] = deque()  # waiting for room (on the loop only)
        self._want_room = False  # the overflow is not empty: report each handler's end
        self._done: deque[PublicationReceived] = deque()  # handled, not yet acknowledged
        self._report_scheduled = False  # a _report waits to run on the loop
        self._sleeping = False  # the lane's thread waits for a token in _tokens
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def overflowing(self) -> bool:
        """Messages wait on the loop for room in the lane (stop reading more)."""
        return bool(self._overflow)

    def put(self, fn: Handler, args: tuple[Any, ...], event: PublicationReceived | None
            ) -> None:
        """Queue a call of ``fn`` (on the loop), behind the messages waiting for room.

        ``event`` (a QoS1/QoS2 message) is passed to ``handled`` once ``fn`` ended.
        """
        self._start()
        item = (fn, args, event)
        if not self._overflow and self._offer(item):
            return
        self._overflow.append(item)
        self._want_room = True
        self._refill()  # the thread may have made room before it saw the flag

    def close(self) -> None:
        """Let the thread end after the handlers already queued (without waiting)."""
        self._closed = True
        self._tokens.put(None)

    def _offer(self, item: _Item) -> bool:
        """Queue ``item`` unless ``size`` messages already wait or run."""
        if self._queued - self._ended >= self._size:
            return False
        self._queued += 1
        self._items.append(item)
        if self._sleeping:
            self._sleeping = False
            self._tokens.put(None)
        return True

    def _refill(self) -> None:
        """On the loop: move waiting messages into the lane while there is room."""
        overflow = self._overflow
        while overflow and self._offer(overflow[0]):
            overflow.popleft()
        if not overflow and self._want_room:
            self._want_room = False
            self._on_room()

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True,
                                                name="rembus subscribers")
                self._thread.start()

    def _report(self) -> None:
        """On the loop: acknowledge what was handled, let waiting messages in."""
        # Reset first: a message handled from now on schedules another report.
        self._report_scheduled = False
        done = self._done
        if done:
            self._handled([done.popleft() for _ in range(len(done))])
        if self._overflow:
            self._refill()

    def _next(self) -> _Item | None:
        """The next queued item, waiting for one; ``None`` once closed and all handled."""
        items = self._items
        while not items:
            if self._closed:
                return None
            self._sleeping = True
            if not items and not self._closed:  # looked again: a put may have missed the flag
                self._tokens.get()
            self._sleeping = False
        return items.popleft()

    def _work(self) -> None:
        # No lock on this path: the loop appends, this thread pops (both atomic), and
        # a sleeping thread is woken by one token, so a burst costs one wake-up.
        while (item := self._next()) is not None:
            fn, args, event = item
            try:
                fn(*args)
            except BaseException as exc:  # SystemExit too: log it, keep the thread
                log.error("subscriber %s raised %r", getattr(fn, "__name__", fn), exc,
                          exc_info=exc)
            self._ended += 1
            if event is not None:
                self._done.append(event)
            elif not self._want_room:
                continue
            if not self._report_scheduled:
                self._report_scheduled = True
                try:
                    self._loop.call_soon_threadsafe(self._report)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return


class LaneComponent(aio.Component):
    """The async component of the sync API: plain-function subscribers run on a lane."""

    def __init__(self, url: ComponentURL, options: Options) -> None:
        super().__init__(url, options)
        self._pool: Pool | None = None
        self.lane = OrderedLane(self._loop, options.max_handler_tasks, self._handled,
                                self._room.set)

    def _on_publication(self, event: PublicationReceived) -> None:
        if type(self.registry.subscribers.get(event.topic)) is not InLane:
            super()._on_publication(event)  # an async def handler, or none yet
            return
        call = self._publication_call(event)
        if call is None:
            return
        handler, args = call
        assert isinstance(handler, InLane)
        self.lane.put(handler.fn, args, None if event.msg_id is None else event)

    def attach_pool(self, pool: Pool) -> None:
        """Count the calls waiting for ``pool`` as handler calls (``max_handler_tasks``)."""
        self._pool = pool
        pool.on_room = self._room.set

    def _invoke(self, handler: Handler, args: tuple[Any, ...], done: Done) -> None:
        if handler.__class__ is InPool:  # straight to the pool: no coroutine, no task
            assert isinstance(handler, InPool)
            handler.pool.put(handler.fn, args, done)
            return
        super()._invoke(handler, args, done)

    def _handlers_full(self) -> bool:
        return (self.lane.overflowing or (self._pool is not None and self._pool.full)
                or super()._handlers_full())

    def request(self, method: str, args: tuple[Any, ...], target: str | None,
                timeout: float | None) -> asyncio.Future[Any]:
        """Queue an ``rpc`` (a ``direct`` one with ``target``); the future of its outcome."""
        return self._track(self._rpc_handle(method, args, target, timeout))

    def publish_all(self, batch: Iterable[tuple[str, Payload]]) -> None:
        """Hand QoS0 publications of encoded arguments to the core, then write them at once.

        One socket write per batch, not one per few messages: each write lets
        another thread take the interpreter, for up to a switch interval
        (``sys.getswitchinterval()``) when that thread is busy publishing.
        A publication refused by the core is logged and lost.
        """
        for topic, data in batch:
            try:
                self._publish_handle(topic, data, 0)
            except RembusError as exc:
                log.warning("%s: publication on %s lost: %s", self.url, topic, exc)
        self._process()

    def _handled(self, events: list[PublicationReceived]) -> None:
        for event in events:
            self._delivered(event)
        self._schedule_flush()


async def lane_component(url: str | Sequence[str] | None, **options: Any) -> LaneComponent:
    """Connect the async half of a sync component (on its I/O loop)."""
    comp = LaneComponent(parse(url), make_options(options))
    await comp.start()
    return comp
