"""The thread driver: the async API with blocking calls.

::

    import rembus.sync as rembus

    rb = rembus.component("myname")
    rb.publish("temperature", 21.5)
    print(rb.rpc("add", 1, 2))
    rb.close()

Each component runs an asyncio :class:`rembus.client.aio.Component` on an I/O
thread of its own; every call here hands its work to that thread and waits
for its outcome, so behaviour and errors are those of the async API. QoS0
publications and requests cross in batches (one wake-up of the I/O thread for
all those made meanwhile; see docs/threading.md). Handlers
are plain functions: they may block and may call this API (``rpc``,
``publish``, ...) on their own component. Subscribers run one at a time on a
thread of their own, so messages are handled in the order they arrive;
exposed methods run concurrently on a pool of ``Options.workers`` threads. At most
``Options.max_handler_tasks`` handler calls wait or run at once; beyond it the
component stops reading from the broker until one ends.

An ``async def`` handler is run on the I/O thread instead, like in the async
API; it must not call this blocking API (that raises ``RuntimeError``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from rembus import errors
from rembus.client import lifetime
from rembus.client.async_commands import Done
from rembus.client.handlers import (
    Handler,
    check_handler,
    check_timeout,
    check_topic,
    topic_of,
    wire_payload,
)
from rembus.client.options import Options, make_options
from rembus.client.threaded_calls import CallBatcher
from rembus.client.threaded_lane import (
    InLane,
    InPool,
    LaneComponent,
    OrderedLane,
    lane_component,
)
from rembus.client.threaded_publish import LARGE_PUBLICATION, BatchPublisher
from rembus.client.url import ComponentURL, parse
from rembus.errors import *  # noqa: F403 - the error classes, as in rembus
from rembus.errors import RembusConnectionClosed
from rembus.security.registration import register_sync as register
from rembus.security.registration import unregister_sync as unregister
from rembus_proto import Payload

T = TypeVar("T")
log = logging.getLogger("rembus")


class IOThread:
    """A thread running an asyncio loop, and the way to wait for coroutines on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._stopped = False
        self._on_stop: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def in_thread(self) -> bool:
        """True when called from the I/O thread itself."""
        return threading.get_ident() == self._thread.ident

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the I/O thread once its loop is closed."""
        self._on_stop.append(fn)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; its future fails if the thread stops first."""
        if self.in_thread():
            coro.close()
            raise RuntimeError("the blocking rembus.sync API cannot be called from its own "
                               "I/O thread (an async handler): await the rembus.client.aio API "
                               "there, or use a plain function handler")
        with self._lock:
            if self._stopped:
                coro.close()
                raise RembusConnectionClosed("the component is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (or raise its error)."""
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise RembusConnectionClosed("the component is closed") from None

    def stop(self) -> None:
        """Stop the loop (after what is scheduled) and wait for the thread unless it is us."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_thread():
            self._thread.join()

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            with self._lock:
                self._stopped = True
                pending = list(self._pending)
            for future in pending:  # scheduled too late to run: fail them, do not hang
                if not future.done():
                    future.set_exception(RembusConnectionClosed("the component is closed"))
            for fn in self._on_stop:
                fn()


class HandlerPool:
    """Worker threads running plain-function handlers for one component.

    Requests come from the loop (:meth:`put`); each outcome goes back to the
    loop, where its ``done`` is called. Outcomes of handlers that end close
    together share one wake-up of the loop.
    """

    def __init__(self, workers: int, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        """``limit``: handler calls waiting or running beyond which :attr:`full` is true."""
        self._size = workers
        self._loop = loop
        self._limit = limit
        self._queue: queue.SimpleQueue[tuple[Handler, tuple[Any, ...], Done] | None] = (
            queue.SimpleQueue())
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._outcomes: deque[tuple[Done, Any, BaseException | None]] = deque()
        self._settle_scheduled = False
        self._busy = 0  # calls put and not yet settled (on the loop only)
        self.on_room: Callable[[], None] = _nothing  # called on the loop once not full

    @property
    def full(self) -> bool:
        """Whether ``limit`` calls wait or run (the component stops reading)."""
        return self._busy >= self._limit

    def wrap(self, fn: Handler) -> Handler:
        """What the async component registers for ``fn``: a call run on the pool."""
        if inspect.iscoroutinefunction(fn):
            return fn
        return InPool(fn, self)

    def put(self, fn: Handler, args: tuple[Any, ...], done: Done) -> None:
        """Run ``fn(*args)`` on a worker, then ``done(result, error)`` on the loop."""
        self._start_workers()
        self._busy += 1
        self._queue.put((fn, args, done))

    async def run(self, fn: Handler, args: tuple[Any, ...]) -> Any:
        """Run ``fn(*args)`` on a worker and return its result; called on the I/O thread."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self.put(fn, args, functools.partial(_set_future, future))
        return await future

    def close(self) -> None:
        """Let the workers end once the handlers they run return (without waiting)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    def _start_workers(self) -> None:
        if self._threads:
            return
        with self._lock:
            if self._threads or self._closed:
                return
            for index in range(self._size):
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"rembus handler {index + 1}")
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, done = item
            error: BaseException | None = None
            result = None
            try:
                result = fn(*args)
            except Exception as exc:
                error = exc
            except BaseException as exc:  # e.g. SystemExit: report it, keep the worker
                error = RuntimeError(f"the handler raised {exc!r}")
            self._outcomes.append((done, result, error))
            if not self._settle_scheduled:
                self._settle_scheduled = True
                # RuntimeError: the loop is closed, nobody waits for this answer any more.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        """On the loop: hand the outcomes of the handlers that ended to their ``done``."""
        # Reset first: an outcome appended from now on schedules another call.
        self._settle_scheduled = False
        outcomes = self._outcomes
        was_full = self.full
        for _ in range(len(outcomes)):
            done, result, error = outcomes.popleft()
            self._busy -= 1
            try:
                done(result, error)
            except Exception:  # answering failed: log it, settle the others
                log.exception("answering a request failed")
        if was_full and not self.full:
            self.on_room()


def _set_future(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _nothing() -> None:
    pass


class Component:
    """A connected component with blocking calls (create it with :func:`component`).

    Safe to use from any thread, handlers included; not from its I/O thread.
    """

    def __init__(self, inner: LaneComponent, io: IOThread, pool: HandlerPool) -> None:
        self._inner = inner
        self._io = io
        self._pool = pool
        self._ordered: OrderedLane = inner.lane
        self._publisher = BatchPublisher(io.loop, inner)
        self._calls = CallBatcher(io.loop, inner, self._publisher.flush)
        io.on_stop(self._calls.stopped)
        self._close_lock = threading.Lock()
        self._closed = False
        lifetime.close_at_exit(self)

    @property
    def name(self) -> str | None:
        """The component name (``None`` when anonymous)."""
        return self._inner.name

    @property
    def url(self) -> ComponentURL:
        """Where the component connects."""
        return self._inner.url

    @property
    def options(self) -> Options:
        """The options given at creation."""
        return self._inner.options

    @property
    def is_connected(self) -> bool:
        """True while the connection to the broker is up and logged in."""
        return self._inner.is_connected

    @property
    def dropped_messages(self) -> int:
        """Messages dropped (and logged) because their payload could not be decoded."""
        return self._inner.dropped_messages

    def __repr__(self) -> str:
        return f"<rembus.sync Component {self._inner.url}>"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a call on the I/O thread after the publications queued before it."""
        try:
            return self._io.run(self._after_publications(coro))
        finally:
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                coro.close()  # never run (the component closed first): no warning

    async def _after_publications(self, coro: Coroutine[Any, Any, T]) -> T:
        self._publisher.flush()  # the QoS0 messages queued before the call go first
        return await coro

    def publish(self, topic: str, *args: Any, qos: int = 0) -> None:
        """Publish ``args`` on ``topic``; with ``qos`` 1 or 2, wait for the broker's ACK.

        A QoS0 publication made while connected returns once it is queued
        (in order with the others); errors that only the I/O thread can see
        then are logged. A QoS1/2 one waits at most ``Options.timeout``
        seconds, across a reconnect, then raises :class:`RembusTimeout`; the
        publication stays queued (see :meth:`rembus.Component.publish`).
        """
        if qos == 0 and self._inner.is_connected and not self._io.in_thread():
            check_topic(topic, "publish")
            if self._closed:
                raise RembusConnectionClosed("the component is closed")
            data = wire_payload(args)
            if len(data.raw) < LARGE_PUBLICATION:
                self._publisher.post(topic, data)
            else:  # the queue bounds messages, not bytes: a large one waits for the socket
                self._run(self._publish_and_drain(topic, data))
            return
        self._run(self._inner.publish(topic, *args, qos=qos))

    async def _publish_and_drain(self, topic: str, data: Payload) -> None:
        self._inner.publish_nowait(topic, data)
        await self._inner.drain()

    def rpc(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` through the broker and return its result."""
        if self._closed or self._io.in_thread():
            return self._run(self._inner.rpc(method, *args, timeout=timeout))
        return self._calls.call(method, args, None, timeout)

    def direct(self, target: str, method: str, *args: Any,
               timeout: float | None = None) -> Any:
        """Call ``method`` on the component named ``target``."""
        if self._closed or self._io.in_thread():
            return self._run(self._inner.direct(target, method, *args, timeout=timeout))
        return self._calls.call(method, args, target, timeout)

    def subscribe(self, fn: Handler, retroactive: bool = False, *,
                  topic: str | None = None) -> None:
        """Call ``fn(*args)`` for every message on ``topic`` (default: ``fn.__name__``).

        ``retroactive=True``: a named component also gets what was published
        while it was away. Delivery starts at once; messages that arrive for
        topics subscribed later are held for them (``Options.max_held_messages``).
        """
        check_handler(fn, "subscribe")
        name = topic_of(fn, topic, "subscribe")
        handler = fn if inspect.iscoroutinefunction(fn) else InLane(fn)
        self._run(self._inner.subscribe(handler, retroactive, topic=name))

    def unsubscribe(self, fn_or_topic: Handler | str) -> None:
        """Stop receiving a topic."""
        self._run(self._inner.unsubscribe(topic_of(fn_or_topic, None, "unsubscribe")))

    def expose(self, fn: Handler, *, topic: str | None = None) -> None:
        """Serve RPC calls of ``topic`` (default: ``fn.__name__``) with ``fn``."""
        check_handler(fn, "expose")
        name = topic_of(fn, topic, "expose")
        self._run(self._inner.expose(self._pool.wrap(fn), topic=name))

    def unexpose(self, fn_or_topic: Handler | str) -> None:
        """Stop serving a method."""
        self._run(self._inner.unexpose(topic_of(fn_or_topic, None, "unexpose")))

    def reactive(self) -> None:
        """Start (or resume) receiving publications, stored ones first."""
        self._run(self._inner.reactive())

    def unreactive(self) -> None:
        """Pause the delivery of publications (the broker stores them for later)."""
        self._run(self._inner.unreactive())

    def admin(self, topic: str, command: dict[str, Any]) -> Any:
        """Send a broker admin command and return its answer (see ``rembus.Component.admin``)."""
        return self._run(self._inner.admin(topic, command))

    def forever(self) -> None:
        """Handle messages until :meth:`close` (from another thread) or Ctrl-C.

        Turns reactive first (unless :meth:`unreactive` was called). Ctrl-C
        closes the component and returns.
        """
        try:
            self._io.submit(self._inner.forever()).result()
        except KeyboardInterrupt:
            self.close()
        except (concurrent.futures.CancelledError, RembusConnectionClosed):
            if not self._closed:
                raise

    def close(self, timeout: float | None = None) -> int:
        """Close the connection, stop the I/O thread; pending requests fail.

        With ``timeout`` (seconds), first wait at most that long for the
        queued publications to go out and the QoS1/QoS2 ones to be
        acknowledged (see :meth:`rembus.Component.close`). Returns how many
        publications were dropped; a warning logs them. A component still
        open when the interpreter exits is closed then.
        """
        check_timeout(timeout, "close")
        lifetime.forget_at_exit(self)
        with self._close_lock:
            if self._closed:
                return self._inner.dropped_at_close
            self._closed = True
        self._publisher.close()  # what is queued still goes out first, nothing more comes
        try:
            if not self._io.in_thread():
                return self._run(self._inner.close(timeout))
            return 0
        finally:
            self._pool.close()
            self._ordered.close()
            self._io.stop()

    def __enter__(self) -> Component:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def component(url: str | Sequence[str] | None = None, **options: Any) -> Component:
    """Connect a component and return it (blocking); arguments as :func:`rembus.component`.

    Raises :class:`RembusConnectionClosed` if the broker cannot be reached and
    :class:`LoginFailed` if it refuses the name.
    """
    parsed = parse(url)
    opts = make_options(options)
    io = IOThread(f"rembus {parsed}")
    try:
        inner = io.run(lane_component(url, **options))
    except BaseException:
        io.stop()
        raise
    pool = HandlerPool(opts.workers, io.loop, opts.max_handler_tasks)
    inner.attach_pool(pool)
    return Component(inner, io, pool)


__all__ = ["Component", "Options", "component", "register", "unregister", *errors.__all__]
