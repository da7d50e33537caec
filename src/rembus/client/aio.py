"""The asyncio driver: ``rb = await rembus.component(...)``.

A :class:`Component` owns a :class:`~rembus_proto.ClientConnection` (all
protocol logic) and one transport; it turns the core's events into handler
calls and awaited results, and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rembus.client import lifetime
from rembus.client.async_commands import AsyncCommands, Done
from rembus.client.handlers import check_timeout
from rembus.client.options import Options, make_options
from rembus.client.transport import Opener, Transport, open_transport
from rembus.client.url import ComponentURL, parse
from rembus.errors import ConnectionOverwritten, RembusConnectionClosed, RembusError
from rembus.errors import LoginFailed as LoginFailedError
from rembus_proto import Backoff, Payload, ProtocolError

log = logging.getLogger("rembus")

#: Publications written at once by a publisher that does not yield to the loop,
#: or fewer once their bytes reach :data:`_FLUSH_BYTES`.
_FLUSH_EVERY = 64
_FLUSH_BYTES = 256 * 1024


class Component(AsyncCommands):
    """A connected Rembus component (create it with :func:`component`)."""

    def __init__(self, url: ComponentURL, options: Options, *, opener: Opener = open_transport,
                 jitter: Callable[[], float] = random.random) -> None:
        """``opener`` makes the transport of each connection attempt (a WebSocket by
        default; ``rembus.testing`` passes an in-memory one) and ``jitter`` spreads the
        reconnect delays (see :class:`~rembus_proto.Backoff`)."""
        super().__init__(url, options)
        self._loop = asyncio.get_running_loop()
        self._opener = opener
        self._jitter = jitter
        lifetime.track(self, self._loop)
        self._transport: Transport | None = None
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        self._failure: BaseException | None = None
        self._runner: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False
        self._unflushed = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots: asyncio.Semaphore = asyncio.Semaphore(options.max_handler_tasks)
        self._room: asyncio.Event = asyncio.Event()
        self._settled: asyncio.Future[None] | None = None

    def _now(self) -> float:
        # The one clock of the component: every deadline, timer and sleep of this
        # driver runs on the event loop's time, so a loop with virtual time drives it all.
        return self._loop.time()

    def __repr__(self) -> str:
        return f"<rembus Component {self.url}>"

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect and log in (done by :func:`component`; call it once).

        With several brokers (:attr:`ComponentURL.alternates`) each is tried once, in turn.
        """
        for left in range(len(self.url.alternates), -1, -1):
            try:
                await self._open_transport()
                break
            except (OSError, RembusError, asyncio.TimeoutError):
                if not left:
                    raise
                self._failover()
        self._runner = self._loop.create_task(self._run(), name=f"rembus {self.url}")
        try:
            await self._connected
        except BaseException:
            await self.close()
            raise

    async def _open_transport(self) -> None:
        transport = await self._opener(self.url, self.options)
        self._transport = transport
        self.conn.connect(self._now())
        self._process()

    async def _run(self) -> None:
        options = self.options
        backoff = Backoff(options.reconnect_initial, options.reconnect_max, self._jitter)
        while not self._closing:
            transport = self._transport
            if transport is not None:
                await self._read_loop(transport)
                self._transport = None
                self.conn.connection_lost(self._now())
                self._process()
                await transport.close()
            if self._closing or not self.options.reconnect or self._failure is not None:
                break
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._open_transport()
                backoff.reset()
                log.info("%s reconnected", self.url)
            except (OSError, RembusError, asyncio.TimeoutError) as exc:
                log.debug("%s: reconnect failed: %s", self.url, exc)
                self._failover()
        self._finish()

    async def _read_loop(self, transport: Transport) -> None:
        try:
            while True:
                frames = await transport.recv_many()
                now = self._now()
                conn = self.conn
                for frame in frames:
                    conn.receive_message(frame, now)
                self._process()
                # Too many handlers running: stop reading until one ends, unless requests
                # wait for answers (handlers may be the ones waiting; not reading would
                # deadlock them).
                while self._handlers_full() and not self._futures:
                    self._room.clear()
                    await self._room.wait()
        except ProtocolError as exc:
            log.warning("%s: closing the connection, the broker sent bad data: %s",
                        self.url, exc)
        except ConnectionOverwritten as exc:
            log.error("%s: %s", self.url, exc)
            self._failure = exc
        except (ConnectionError, OSError, EOFError) as exc:
            if not self._closing:
                log.info("%s: connection lost: %s", self.url, exc)

    def _handlers_full(self) -> bool:
        """Whether ``max_handler_tasks`` handler calls wait or run (reading pauses);
        set ``_room`` when that changes."""
        return self._slots.locked()

    def _finish(self) -> None:
        self._close_core()
        self._process()
        error = self._failure or RembusConnectionClosed("the component is closed")
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()
        if not self._connected.done():
            self._connected.set_exception(error)
        self._closed.set()

    async def close(self, timeout: float | None = None) -> int:
        """Close the connection and stop reconnecting; pending requests fail.

        With ``timeout`` (seconds), first wait at most that long for the
        queued publications to go out and the QoS1/QoS2 ones to be
        acknowledged (across a reconnect). Returns how many publications
        were dropped (not sent, or not acknowledged); a warning logs them.
        """
        check_timeout(timeout, "close")
        if self._closing:
            await self._closed.wait()
            return self.dropped_at_close
        if timeout is not None and self._undelivered():
            await self._settle(timeout)
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        transport = self._transport
        if transport is not None:
            self._flush()
            await transport.close()
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if not self._closed.is_set():
            self._finish()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        return self.dropped_at_close

    async def _settle(self, timeout: float) -> None:
        """Wait at most ``timeout`` s until no publication waits to be sent or acknowledged."""
        settled = self._settled = self._loop.create_future()
        try:
            await asyncio.wait_for(settled, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._settled = None

    async def forever(self) -> None:
        """Receive messages until :meth:`close` (or Ctrl-C); turns reactive on first."""
        if self._wants_reactive():
            await self.reactive()
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> Component:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the API -------------------------------------------------------------

    async def publish(self, topic: str, *args: Any, qos: int = 0,
                      wait: bool = True) -> asyncio.Future[None] | None:
        """Publish ``args`` on ``topic``; with ``qos`` 1 or 2, wait for the broker's ACK.

        The wait lasts at most ``Options.timeout`` seconds, across a reconnect
        that happens meanwhile; then :class:`RembusTimeout` is raised and the
        publication stays queued (sent or resent when the connection allows,
        so it may still arrive; ``close()`` drops it).

        ``wait=False`` (QoS1/QoS2, pipelining): return at once a future that
        ends when the ACK arrives, or fails as the wait above would; the
        guarantees (resends, order, acknowledgement) are the same. Await (or
        check) every such future. ``max_unacked_publishes`` (10,000) of them
        may be pending at once; one more raises :class:`RembusError`. Returns
        ``None`` for QoS0 and when ``wait`` is true.
        """
        handle = self._publish_handle(topic, args, qos)
        self._published()
        if handle is None:
            if not self._unflushed:  # only a write can fill the socket's buffer
                await self.drain()
            return None
        future = self._track(handle)
        timer = self._loop.call_later(self.options.timeout, self._expire, handle, topic)
        future.add_done_callback(lambda _: timer.cancel())
        if not wait:
            await self.drain()
            return future
        await future
        return None

    def publish_nowait(self, topic: str, data: Payload) -> None:
        """Queue a QoS0 publication of encoded arguments without waiting (the sync API's path).

        Call :meth:`drain` now and then: nothing here waits for the socket.
        """
        self._publish_handle(topic, data, 0)
        self._published()

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if self._transport is not None:
            try:
                await self._transport.drain()
            except (ConnectionError, OSError) as exc:
                # The read loop reports the loss and reconnects; a QoS0 message may be lost.
                log.debug("%s: write failed: %s", self.url, exc)

    def _published(self) -> None:
        unflushed = self._unflushed = self._unflushed + 1
        if unflushed >= _FLUSH_EVERY or self.conn.published_bytes >= _FLUSH_BYTES:
            # A publisher that never yields must not pile up output: write now,
            # and let drain() hold it back while the socket buffer is full.
            self._process()
        elif not self._flush_scheduled:  # _schedule_flush, inlined: once per message
            self._flush_scheduled = True
            self._loop.call_soon(self._process)

    # -- internals -----------------------------------------------------------

    def _write_queued(self) -> None:
        self._schedule_flush()

    async def _wait(self, handle: int) -> Any:
        return await self._track(handle)

    def _track(self, handle: int) -> asyncio.Future[Any]:
        """The future the outcome of request ``handle`` will end."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._futures[handle] = future
        self._room.set()
        self._schedule_flush()  # requests made in the same loop turn share one write
        return future

    def _expire(self, handle: int, topic: str) -> None:
        """A QoS publication got no ACK within the timeout: its caller stops waiting."""
        future = self._futures.pop(handle, None)
        if future is not None and not future.done():
            future.set_exception(self._publish_timeout(topic))

    def _schedule_flush(self) -> None:
        """Write the core's output at the end of this loop turn."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._process)

    def _flush(self) -> None:
        frames = self.conn.data_to_send()
        transport = self._transport
        if frames and transport is not None:
            try:
                transport.send(frames)
            except (ConnectionError, OSError) as exc:
                log.debug("%s: write failed: %s", self.url, exc)

    def _process(self) -> None:
        """Handle the core's events, write its output and arm its timer."""
        self._flush_scheduled = False
        self._unflushed = 0
        conn = self.conn
        for event in conn.events():
            self._on_event(event)
        self._flush()
        settled = self._settled
        if settled is not None and not settled.done() and not self._undelivered():
            settled.set_result(None)
        deadline = conn.next_deadline()
        timer = self._timer
        if timer is not None and timer.when() != deadline:
            timer.cancel()
            self._timer = timer = None
        if timer is None and deadline is not None and not self._closing:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.conn.handle_timer(self._now())
        self._process()

    def _on_connected(self) -> None:
        if not self._connected.done():
            self._connected.set_result(None)

    def _login_refused(self, error: LoginFailedError) -> None:
        self._failure = error
        if not self._connected.done():
            self._connected.set_exception(error)
        else:
            log.error("%s: login refused: %s", self.url, error)
        transport = self._transport
        if transport is not None:
            self._loop.create_task(transport.close())

    def _resolve(self, handle: int, value: Any, error: BaseException | None) -> None:
        future = self._futures.pop(handle, None)
        if future is None or future.done():
            return
        if isinstance(error, RembusConnectionClosed) and isinstance(self._failure,
                                                                    ConnectionOverwritten):
            error = self._failure  # the request was lost because the name was taken
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    def _answered(self) -> None:
        self._schedule_flush()

    def _spawn(self, awaitable: Awaitable[Any], done: Done) -> None:
        task = self._loop.create_task(self._await_handler(awaitable, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def component(url: str | Sequence[str] | None = None, **options: Any) -> Component:
    """Connect a component and return it.

    ``url`` is ``"ws://host:port/name"`` (named), ``"ws://host:port"``
    (anonymous), ``"name"`` (named, at ``$REMBUS_BASE_URL`` or
    ``ws://127.0.0.1:8000``) or ``None`` (anonymous, same address); or a list
    of URLs of the same component at several brokers of a cluster (also a
    comma-separated ``$REMBUS_BASE_URL``): when one cannot be reached, at the
    start or on a reconnect, the next one is tried. Options
    are the fields of :class:`~rembus.client.options.Options` (``timeout=``, ...).
    Raises :class:`RembusConnectionClosed` if the broker cannot be reached and
    :class:`~rembus.errors.LoginFailed` if it refuses the name.
    """
    parsed = parse(url)
    opts = make_options(options)
    comp = Component(parsed, opts)
    await comp.start()
    return comp
