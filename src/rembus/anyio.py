"""The anyio driver: the async API on trio (or on asyncio) through anyio.

::

    import rembus.anyio

    async def main() -> None:
        async with rembus.anyio.component("ws://127.0.0.1:8000/myname") as rb:
            await rb.expose(add)
            print(await rb.rpc("other_method", 1, 2))
            await rb.forever()

    trio.run(main)           # or anyio.run(main, backend="trio"), or asyncio

A component lives inside ``async with component(...)``: its tasks (reader,
writer, timer, async handlers) run in a task group of its own that the block
owns, as structured concurrency wants; leaving the block closes it. The
protocol is the sans-IO core's (:class:`~rembus_proto.ClientSession`); the
API, the options and the errors are those of :mod:`rembus` (async). Plain
function handlers run inline on the event loop; ``async def`` handlers run as
tasks, at most ``Options.max_handler_tasks`` at once (then reading pauses).
Errors that escape the ``async with`` block come out of its task group: on
trio they may arrive wrapped in an ``ExceptionGroup``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import anyio
import anyio.abc

from rembus import errors
from rembus.client.async_commands import AsyncCommands, Done
from rembus.client.handlers import check_timeout
from rembus.client.options import Options, make_options
from rembus.client.transport import connect_error, default_ssl_context, describe_os_error
from rembus.client.url import ComponentURL, parse
from rembus.errors import *  # noqa: F403 - the error classes, as in rembus
from rembus.errors import (
    ConnectionOverwritten,
    RembusConnectionClosed,
    RembusError,
    overwritten,
)
from rembus.errors import LoginFailed as LoginFailedError
from rembus_proto import Backoff, ClientSession, ProtocolError
from rembus_proto.session import Disconnected
from rembus_proto.ws import WSConfig

log = logging.getLogger("rembus")

#: Bytes read from the socket at most per receive.
READ_SIZE = 1 << 20
#: Unsent bytes above which a publisher waits for the socket to take them.
HIGH_WATER = 4 * 1024 * 1024
#: The errors of a stream that ended or broke.
_STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                  OSError)


class _Waiter:
    """One caller waiting for the outcome of a request."""

    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Component(AsyncCommands):
    """A component on anyio (create it with :func:`component`)."""

    def __init__(self, url: ComponentURL, options: Options) -> None:
        super().__init__(url, options)
        self._stream: anyio.abc.ByteStream | None = None
        self._session: ClientSession | None = None
        self._backlog: list[Any] = []  # events of a session already dropped
        self._out = bytearray()
        self._output = anyio.Event()  # set: output waits for the writer
        self._drained = anyio.Event()  # set: the writer wrote all the output
        self._sending = False  # the writer is writing
        self._rearm = anyio.Event()  # set: the deadline of the timer changed
        self._armed: float | None = None
        self._waiters: dict[int, _Waiter] = {}
        self._connected = False
        self._failure: BaseException | None = None
        self._closed = anyio.Event()
        self._settled: anyio.Event | None = None
        self._slots: anyio.CapacityLimiter = anyio.CapacityLimiter(options.max_handler_tasks)
        self._room: anyio.Event = anyio.Event()  # set: a handler task ended
        self._tasks: anyio.abc.TaskGroup | None = None
        self._scope = anyio.CancelScope()  # of the component's tasks; close() cancels it
        self._disconnected = anyio.Event()  # set: the reader saw the connection end

    def _now(self) -> float:
        return anyio.current_time()

    def __repr__(self) -> str:
        return f"<rembus.anyio Component {self.url}>"

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Connect and log in, before :meth:`serve` (done by :func:`component`); with
        several brokers (:attr:`ComponentURL.alternates`) each is tried once, in turn."""
        for left in range(len(self.url.alternates), -1, -1):
            try:
                await self._connect()
                break
            except RembusError:
                if not left:
                    raise
                self._failover()
        try:
            while not self._connected:
                if self._failure is not None:
                    raise self._failure
                session = self._session
                if session is None or session.ended:
                    raise RembusConnectionClosed(
                        f"{self.url.endpoint} closed the connection during the login")
                await self._pump_once(session)
        except BaseException:
            await self._drop_stream()
            self._closing = True
            self._finish()
            raise

    async def serve(self, *,
                     task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                     ) -> None:
        """Run the component's tasks (connection, timer, async handlers) until closed
        (started by :func:`component`)."""
        with self._scope:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._run, name=f"rembus {self.url}")
                tasks.start_soon(self._timer, name=f"rembus timer {self.url}")
                task_status.started()

    async def _connect(self) -> None:
        """Open the TCP (and TLS) connection, then the WebSocket, each step bounded by
        ``open_timeout``; raises :class:`RembusConnectionClosed` saying what did not happen."""
        url = self.url
        timeout = self.options.open_timeout
        context = (self.options.ssl_context or default_ssl_context()) if url.secure else None
        try:
            with anyio.fail_after(timeout):
                stream: anyio.abc.ByteStream
                if context is None:
                    stream = await anyio.connect_tcp(url.host, url.port)
                else:
                    stream = await anyio.connect_tcp(url.host, url.port, ssl_context=context,
                                                     tls_standard_compatible=False)
        except (OSError, TimeoutError) as exc:
            raise connect_error(url, describe_os_error(_first_attempt(exc), timeout)) from None
        session = ClientSession(self.conn, url.endpoint.split("://", 1)[1], "/",
                                now=self._now(), open_timeout=timeout,
                                config=WSConfig(max_message_size=self.options.max_message_size))
        try:
            while not session.is_open and not session.ended:
                for data in session.data_to_send():
                    await stream.send(data)
                await self._receive_until_deadline(stream, session)
            for data in session.data_to_send():
                await stream.send(data)
        except _STREAM_ERRORS as exc:
            await _close_quietly(stream)
            raise connect_error(url, describe_os_error(exc, timeout)
                                if isinstance(exc, OSError) else "connection lost") from None
        except BaseException:
            await _close_quietly(stream)
            raise
        if not session.is_open:
            await _close_quietly(stream)
            raise connect_error(url, session.end_reason or "the WebSocket upgrade failed")
        self._stream, self._session = stream, session
        self._out.clear()
        self._process()

    async def _receive_until_deadline(self, stream: anyio.abc.ByteStream,
                                      session: ClientSession) -> None:
        """Feed ``session`` what arrives before its next deadline, or fire its timer."""
        deadline = session.next_deadline()
        data: bytes | None = None
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
            try:
                data = await stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                data = b""
        if data is None:
            session.handle_timer(self._now())
            return
        with contextlib.suppress(ProtocolError):  # then it ended; end_reason says why
            session.receive_data(data, self._now())

    async def _pump_once(self, session: ClientSession) -> None:
        """During the login: write, read (or fire the timer), handle the events."""
        stream = self._stream
        assert stream is not None
        out, self._out = bytes(self._out), bytearray()
        if out:
            await stream.send(out)
        try:
            await self._receive_until_deadline(stream, session)
        except _STREAM_ERRORS:
            session.receive_data(b"", self._now())
        self._process()

    async def _run(self) -> None:
        """Serve the connection; after a loss reconnect (with backoff) until closed."""
        options = self.options
        backoff = Backoff(options.reconnect_initial, options.reconnect_max, random.random)
        while True:
            stream, session = self._stream, self._session
            if stream is not None and session is not None:  # served even while closing:
                # close() waits for the reader to see the broker's close frame
                async with anyio.create_task_group() as connection:
                    connection.start_soon(self._writer, stream)
                    await self._reader(stream, session)
                    with anyio.move_on_after(options.timeout):
                        await self._written()  # our answer to a close frame, say
                    connection.cancel_scope.cancel()
                await self._drop_stream()
                self._disconnected.set()
            if self._closing or not options.reconnect or self._failure is not None:
                break
            await anyio.sleep(backoff.next_delay())
            try:
                await self._connect()
            except RembusError as exc:
                log.debug("%s: reconnect failed: %s", self.url, exc)
                self._failover()
                continue
            backoff.reset()
            log.info("%s reconnected", self.url)
        if not self._closing:
            self._closing = True
            self._finish()

    async def _reader(self, stream: anyio.abc.ByteStream, session: ClientSession) -> None:
        while not session.ended:
            try:
                data = await stream.receive(READ_SIZE)
            except _STREAM_ERRORS as exc:
                if not self._closing:
                    log.info("%s: connection lost: %s", self.url, exc or type(exc).__name__)
                data = b""
            try:
                session.receive_data(data, self._now())
            except ProtocolError as exc:
                log.warning("%s: closing the connection, the broker sent bad data: %s",
                            self.url, exc)
            if session.ended:
                closed = session.closed
                if closed is not None and (error := overwritten(closed.code, closed.reason)):
                    log.error("%s: %s", self.url, error)
                    self._failure = error
            self._process()
            # Too many handlers running: stop reading until one ends, unless requests
            # wait for answers (handlers may be the ones waiting).
            while self._slots.available_tokens == 0 and not self._waiters and \
                    not self._closing:
                self._room = anyio.Event()
                await self._room.wait()

    async def _writer(self, stream: anyio.abc.ByteStream) -> None:
        while True:
            if not self._out:
                self._drained.set()
                self._output = anyio.Event()
                await self._output.wait()
                continue
            data, self._out = bytes(self._out), bytearray()
            self._sending = True
            try:
                await stream.send(data)
            except _STREAM_ERRORS as exc:
                # The reader sees the end too (closing the stream makes sure of it).
                log.debug("%s: write failed: %s", self.url, exc)
                await _close_quietly(stream)
                return
            finally:
                self._sending = False

    async def _timer(self) -> None:
        """Fire the core's timers (request timeouts, QoS resends, keepalive) when due."""
        while True:
            self._rearm = anyio.Event()
            timers = self._session or self.conn
            deadline = self._armed = timers.next_deadline()
            if deadline is None:
                await self._rearm.wait()
                continue
            with anyio.CancelScope(deadline=deadline):
                await self._rearm.wait()
            if self._now() >= deadline:
                (self._session or self.conn).handle_timer(self._now())
                self._process()

    async def _drop_stream(self) -> None:
        stream, session = self._stream, self._session
        self._stream = self._session = None
        self._out.clear()
        self._drained.set()
        if session is not None:
            if not session.ended:
                session.receive_data(b"", self._now())  # the end of the stream
            self._backlog += session.events()
        if stream is not None:
            await _close_quietly(stream)
        self._process()

    def _finish(self) -> None:
        """The component is closed: close the core, fail what still waits."""
        self._close_core()
        self._process()
        error = self._failure or RembusConnectionClosed("the component is closed")
        for waiter in self._waiters.values():
            if not waiter.event.is_set():
                waiter.error = error
                waiter.event.set()
        self._waiters.clear()
        self._room.set()
        self._closed.set()

    async def close(self, timeout: float | None = None) -> int:
        """Close the connection and stop reconnecting; pending requests fail.

        With ``timeout`` (seconds), first wait at most that long for the
        queued publications to go out and the QoS1/QoS2 ones to be
        acknowledged (across a reconnect). Returns how many publications
        were dropped (not sent, or not acknowledged); a warning logs them.
        Leaving the ``async with component(...)`` block calls it.
        """
        check_timeout(timeout, "close")
        if self._closing:
            await self._closed.wait()
            return self.dropped_at_close
        if timeout is not None and self._undelivered():
            settled = self._settled = anyio.Event()
            with anyio.move_on_after(timeout):
                await settled.wait()
            self._settled = None
        self._closing = True
        session, stream = self._session, self._stream
        if session is not None and stream is not None:
            self._disconnected = anyio.Event()
            session.close(self._now())
            self._process()
            self._room.set()
            with anyio.move_on_after(self.options.timeout):
                await self._disconnected.wait()  # the broker's close frame, or the end
        await self._drop_stream()
        self._finish()
        self._scope.cancel()
        return self.dropped_at_close

    async def forever(self) -> None:
        """Receive messages until :meth:`close`; turns reactive first."""
        if self._wants_reactive():
            await self.reactive()
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    # -- the API -------------------------------------------------------------

    async def publish(self, topic: str, *args: Any, qos: int = 0) -> None:
        """Publish ``args`` on ``topic``; with ``qos`` 1 or 2, wait for the broker's ACK.

        The wait lasts at most ``Options.timeout`` seconds, across a reconnect
        that happens meanwhile; then :class:`RembusTimeout` is raised and the
        publication stays queued (sent or resent when the connection allows,
        so it may still arrive; ``close()`` drops it).
        """
        handle = self._publish_handle(topic, args, qos)
        if handle is None:
            self._process()
            await self._drain()
            return
        try:
            with anyio.fail_after(self.options.timeout):
                await self._wait(handle)
        except TimeoutError:
            raise self._publish_timeout(topic) from None

    # -- waiting -------------------------------------------------------------

    def _write_queued(self) -> None:
        self._process()

    async def _wait(self, handle: int) -> Any:
        """Write the request of ``handle`` and wait for its outcome."""
        waiter = self._waiters[handle] = _Waiter()
        self._room.set()  # a paused reader must read the answer
        try:
            self._process()
            await waiter.event.wait()
        finally:
            self._waiters.pop(handle, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    async def _written(self) -> None:
        """Wait until the writer took all the output."""
        while (self._out or self._sending) and self._stream is not None:
            self._drained = anyio.Event()
            await self._drained.wait()

    async def _drain(self) -> None:
        """Wait while more than ``HIGH_WATER`` bytes wait for the socket."""
        while len(self._out) > HIGH_WATER and self._stream is not None and not self._closing:
            self._drained = anyio.Event()
            await self._drained.wait()

    # -- events --------------------------------------------------------------

    def _process(self) -> None:
        """Handle the core's events, queue its output for the writer, re-arm the timer."""
        while True:
            events, self._backlog = self._backlog, []
            session = self._session
            events += session.events() if session is not None else self.conn.events()
            if not events:
                break
            for event in events:
                if not isinstance(event, Disconnected):
                    self._on_event(event)
        session = self._session
        if session is None:
            self.conn.data_to_send()  # not connected: the core keeps what must survive
        else:
            for data in session.data_to_send():
                self._out += data
            if self._out:
                self._output.set()
        settled = self._settled
        if settled is not None and not self._undelivered():
            settled.set()
        deadline = (self._session or self.conn).next_deadline()
        armed = self._armed
        # Only an earlier deadline wakes the timer; a later one is seen when it fires.
        if deadline is not None and (armed is None or deadline < armed):
            self._rearm.set()

    def _resolve(self, handle: int, value: Any, error: BaseException | None) -> None:
        waiter = self._waiters.get(handle)
        if waiter is None or waiter.event.is_set():
            return
        if isinstance(error, RembusConnectionClosed) and isinstance(self._failure,
                                                                    ConnectionOverwritten):
            error = self._failure  # the request was lost because the name was taken
        waiter.value, waiter.error = value, error
        waiter.event.set()

    def _on_connected(self) -> None:
        self._connected = True

    def _login_refused(self, error: LoginFailedError) -> None:
        self._failure = error
        if self._connected:
            log.error("%s: login refused: %s", self.url, error)
        stream = self._stream
        if stream is not None and self._tasks is not None:
            self._tasks.start_soon(_close_quietly, stream)

    def _answered(self) -> None:
        pass  # written by _process: it runs after every handler (inline, or _after_handler)

    def _spawn(self, awaitable: Awaitable[Any], done: Done) -> None:
        if self._tasks is None:  # during the login: nothing can be waited for yet
            done(None, RembusError("an async handler was called before the login ended"))
            return
        self._tasks.start_soon(self._await_handler, awaitable, done)

    def _after_handler(self) -> None:
        self._process()


def _first_attempt(exc: BaseException) -> BaseException:
    """The error of the (first) connection attempt, which anyio gives as the cause."""
    cause = exc.__cause__
    attempts = getattr(cause, "exceptions", None) or [cause]  # an ExceptionGroup, or one
    return attempts[0] if isinstance(attempts[0], OSError) else exc


async def _close_quietly(stream: anyio.abc.ByteStream) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(*_STREAM_ERRORS):
        await stream.aclose()


@contextlib.asynccontextmanager
async def component(url: str | Sequence[str] | None = None,
                    **options: Any) -> AsyncIterator[Component]:
    """Connect a component for the duration of an ``async with`` block.

    Arguments as :func:`rembus.component`. Raises :class:`RembusConnectionClosed`
    if the broker cannot be reached and :class:`~rembus.errors.LoginFailed` if
    it refuses the name. The component is closed when the block ends.
    """
    comp = Component(parse(url), make_options(options))
    await comp.open()
    async with anyio.create_task_group() as tasks:
        await tasks.start(comp.serve)
        try:
            yield comp
        finally:
            with anyio.CancelScope(shield=True):
                await comp.close()


__all__ = ["Component", "Options", "component", *errors.__all__]
