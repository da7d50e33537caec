"""The blocking driver: one socket, no background thread; the caller pumps.

::

    import rembus.blocking

    rb = rembus.blocking.component("ws://127.0.0.1:8000/myname")
    rb.expose(add)
    print(rb.rpc("other_method", 1, 2))   # pumps until the answer arrives
    rb.forever()                          # or call rb.process(timeout) in a loop

Nothing happens between calls: :meth:`Component.process` reads what the
broker sent, runs handlers inline (plain functions only), fires timers (request
timeouts, QoS resends, reconnects) and writes. Every blocking call (``rpc``,
``subscribe``, QoS publish, ...) pumps the same way until its answer is there,
so handlers also run inside those calls, and a handler may itself call
``rpc`` (the pump nests).

In a custom selector loop, register :meth:`Component.fileno` for reading
(and for writing while :meth:`Component.want_write`), wake up at
:meth:`Component.next_deadline` and call ``process(0)``. A component is not
thread-safe: use it from one thread at a time.
"""

from __future__ import annotations

import inspect
import logging
import random
import select
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from rembus import errors
from rembus.client import lifetime
from rembus.client.base import ComponentBase
from rembus.client.blocking_open import READ_SIZE, open_session
from rembus.client.dispatch import EventDispatcher
from rembus.client.handlers import (
    Handler,
    Outcome,
    check_handler,
    check_timeout,
    exposer_call,
    response_for_error,
    response_for_result,
)
from rembus.client.options import Options, make_options
from rembus.client.url import ComponentURL, parse
from rembus.errors import *  # noqa: F403 - the error classes, as in rembus
from rembus.errors import (
    ConnectionOverwritten,
    LoginFailed,
    RembusConnectionClosed,
    RembusError,
    RembusTimeout,
    overwritten,
)
from rembus_proto import Backoff, ClientSession, ProtocolError
from rembus_proto.client_events import PublicationReceived, RequestReceived

log = logging.getLogger("rembus")

#: Reads at most per process() call, so a busy broker cannot starve the caller.
READS_PER_PROCESS = 16
#: Unsent bytes above which a call pumps until the socket took them.
HIGH_WATER = 4 * 1024 * 1024


class Reply:
    """The answer to a request sent with :meth:`Component.rpc_nowait` (pipelining)."""

    def __init__(self, component: Component, handle: int) -> None:
        self._component = component
        self._handle = handle
        self._outcome: tuple[Any, BaseException | None] | None = None

    def done(self) -> bool:
        """True once the answer (or the error) is there; :meth:`result` then does not block."""
        return self._outcome is not None or self._component.answered(self._handle)

    def result(self) -> Any:
        """Pump until the answer arrives; return it or raise the request's error."""
        if self._outcome is None:
            try:
                self._outcome = (self._component.wait_for(self._handle), None)
            except RembusError as exc:
                self._outcome = (None, exc)
        value, error = self._outcome
        if error is not None:
            raise error
        return value


class Component(EventDispatcher, ComponentBase):
    """A component driven by its caller (create it with :func:`component`)."""

    def __init__(self, url: ComponentURL, options: Options) -> None:
        super().__init__(url, options)
        self._sock: socket.socket | None = None
        self._session: ClientSession | None = None
        self._backlog: list[Any] = []  # events of a session already dropped
        self._out = bytearray()
        self._waiting: set[int] = set()
        self._done: dict[int, Outcome] = {}
        self._connected = False
        self._failure: BaseException | None = None
        self._reconnect_at: float | None = None
        self._backoff = Backoff(options.reconnect_initial, options.reconnect_max,
                                random.random)

    def _now(self) -> float:
        return time.monotonic()

    def _check_handler(self, fn: Any, what: str) -> None:
        check_handler(fn, what)
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{what}() of rembus.blocking takes a plain function, not a "
                            f"coroutine function: use rembus (async) or rembus.sync for async "
                            f"handlers")

    def __repr__(self) -> str:
        return f"<rembus.blocking Component {self.url}>"

    # -- pumping -------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's descriptor for a selector; -1 while disconnected."""
        return self._sock.fileno() if self._sock is not None else -1

    def want_write(self) -> bool:
        """True while output waits for the socket to accept it."""
        return bool(self._out)

    def next_deadline(self) -> float | None:
        """When :meth:`process` must run next at the latest, on the ``time.monotonic()``
        clock (``None``: only when the socket is readable)."""
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return time.monotonic()  # decrypted bytes wait: a selector would not see them
        deadline = (self._session or self.conn).next_deadline()
        again = self._reconnect_at
        if again is not None and (deadline is None or again < deadline):
            deadline = again
        return deadline

    def process(self, timeout: float | None = 0.0) -> int:
        """Do what is due, waiting at most ``timeout`` seconds (``None``: no limit) for
        something to do when nothing is; return how many events were handled.

        Reads what the broker sent, runs handlers, fires timers, reconnects
        when it is time, writes what it can.
        """
        if self._closing:
            return 0
        count = self._step()
        if count or timeout == 0:
            self._write()
            return count
        self._wait_io(timeout)
        count = self._step()
        self._write()
        return count

    def forever(self) -> None:
        """Pump until :meth:`close` (or Ctrl-C, which closes); turns reactive first."""
        try:
            if self._wants_reactive():
                self.reactive()
            while not self._closing:
                self.process(None)
        except KeyboardInterrupt:
            self.close()
        if self._failure is not None:
            raise self._failure

    def close(self, timeout: float | None = None) -> int:
        """Write what is queued, close the connection; pending requests fail.

        With ``timeout`` (seconds), first pump at most that long until the
        queued publications went out and the QoS1/QoS2 ones were
        acknowledged (across a reconnect). Returns how many publications
        were dropped (not sent, or not acknowledged); a warning logs them.
        A component still open when the interpreter exits is closed then.
        Messages the broker sends until its close frame (waited for ``timeout``
        at most) are still handled.
        """
        check_timeout(timeout, "close")
        lifetime.forget_at_exit(self)
        if self._closing:
            return self.dropped_at_close
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self._undelivered() and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.process(left)
        self._closing = True
        self._reconnect_at = None
        sock, session = self._sock, self._session
        if sock is not None and session is not None:
            self._queue_output()
            session.close(time.monotonic())
            self._queue_output()
            deadline = time.monotonic() + self.options.timeout
            self._write_all(deadline)
            self._read_until_closed(deadline)
        self._drop_socket()
        self._reconnect_at = None  # the end of the connection above is no loss to recover
        self._close_core()
        self._dispatch()
        return self.dropped_at_close

    def __enter__(self) -> Component:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -------------------------------------------------------------

    def publish(self, topic: str, *args: Any, qos: int = 0) -> None:
        """Publish ``args`` on ``topic``; with ``qos`` 1 or 2, pump until the broker's ACK.

        The wait lasts at most ``Options.timeout`` seconds, across a reconnect
        that happens meanwhile; then :class:`RembusTimeout` is raised and the
        publication stays queued (sent or resent when the connection allows,
        so it may still arrive; ``close()`` drops it).
        """
        handle = self._publish_handle(topic, args, qos)
        if handle is None:
            self._send_soon()
            return
        try:
            self.wait_for(handle, time.monotonic() + self.options.timeout)
        except RembusTimeout:
            raise self._publish_timeout(topic) from None

    def rpc(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` through the broker; pump until its result arrives."""
        return self.rpc_nowait(method, *args, timeout=timeout).result()

    def direct(self, target: str, method: str, *args: Any,
               timeout: float | None = None) -> Any:
        """Call ``method`` on the component named ``target``."""
        return self.direct_nowait(target, method, *args, timeout=timeout).result()

    def rpc_nowait(self, method: str, *args: Any, timeout: float | None = None) -> Reply:
        """Send an RPC and return at once; ``reply.result()`` waits for the answer.

        Many requests can be in flight at once (pipelining).
        """
        return self._reply(self._rpc_handle(method, args, None, timeout))

    def direct_nowait(self, target: str, method: str, *args: Any,
                      timeout: float | None = None) -> Reply:
        """Like :meth:`rpc_nowait`, for the component named ``target``."""
        return self._reply(self._rpc_handle(method, args, target, timeout))

    def subscribe(self, fn: Handler, retroactive: bool = False, *,
                  topic: str | None = None) -> None:
        """Call ``fn(*args)`` for every message on ``topic`` (default: ``fn.__name__``).

        With ``retroactive=True`` a named component also gets, when it comes
        back, what was published while it was away. Delivery starts at once
        (the component turns reactive) unless :meth:`unreactive` was called;
        messages that arrive for topics subscribed later are held for them
        (``Options.max_held_messages``) and handed over here, in order.
        """
        self._admin(self._subscribe_handle(fn, retroactive, topic))
        if self._wants_reactive():
            self.reactive()

    def unsubscribe(self, fn_or_topic: Handler | str) -> None:
        """Stop receiving a topic."""
        self._admin(self._unsubscribe_handle(fn_or_topic))

    def expose(self, fn: Handler, *, topic: str | None = None) -> None:
        """Serve RPC calls of ``topic`` (default: ``fn.__name__``) with ``fn``."""
        self._admin(self._expose_handle(fn, topic))

    def unexpose(self, fn_or_topic: Handler | str) -> None:
        """Stop serving a method."""
        self._admin(self._unexpose_handle(fn_or_topic))

    def reactive(self) -> None:
        """Start (or resume) receiving publications, stored ones first."""
        self._admin(self._reactive_handle(True))

    def unreactive(self) -> None:
        """Pause the delivery of publications (the broker stores them for later)."""
        self._admin(self._reactive_handle(False))

    def admin(self, topic: str, command: dict[str, Any]) -> Any:
        """Send a broker admin command and return its answer (see ``rembus.Component.admin``)."""
        return self.wait_for(self._admin_handle(topic, command))

    # -- requests ------------------------------------------------------------

    def _reply(self, handle: int) -> Reply:
        self._waiting.add(handle)
        self._send_soon()
        return Reply(self, handle)

    def _admin(self, handle: int | None) -> None:
        if handle is None:
            self._send_soon()
        else:
            self.wait_for(handle)

    def answered(self, handle: int) -> bool:
        """Whether the answer to request ``handle`` is there (:meth:`wait_for` takes it)."""
        return handle in self._done

    def wait_for(self, handle: int, deadline: float | None = None) -> Any:
        """Pump until the outcome of ``handle``; past ``deadline`` raise RembusTimeout."""
        self._waiting.add(handle)
        try:
            self._send_soon()
            while handle not in self._done:
                if self._closing:
                    raise RembusConnectionClosed("the component is closed")
                if self._sock is None and self._reconnect_at is None:
                    raise RembusConnectionClosed(f"not connected to {self.url.endpoint}")
                if deadline is None:
                    self.process(None)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RembusTimeout(f"no answer within {self.options.timeout:g} s")
                self.process(left)
            _, value, error = self._done.pop(handle)
        finally:
            self._waiting.discard(handle)
        if error is not None:
            raise error
        return value

    def _send_soon(self) -> None:
        """Write the new output now as far as the socket takes it, pumping while too much
        waits (the broker may need us to read before it reads more)."""
        self._queue_output()
        self._write()
        while len(self._out) > HIGH_WATER and self._sock is not None and not self._closing:
            self.process(None)

    # -- the connection ------------------------------------------------------

    def _connect(self) -> None:
        """Open the socket, then the WebSocket (each step bounded by ``open_timeout``), and
        start the login; raises :class:`RembusConnectionClosed` saying what did not happen."""
        sock, session = open_session(self.url, self.conn, self.options)
        self._sock, self._session = sock, session
        self._out.clear()
        self._queue_output()

    def start(self) -> None:
        """Connect and log in (done by :func:`component`; call it once); with several
        brokers each is tried once, in turn."""
        for left in range(len(self.url.alternates), -1, -1):
            try:
                self._connect()
                break
            except RembusConnectionClosed:
                if not left:
                    raise
                self._failover()
        try:
            while not self._connected:
                if self._failure is not None:
                    raise self._failure
                if self._sock is None:
                    raise RembusConnectionClosed(
                        f"{self.url.endpoint} closed the connection during the login")
                self.process(None)
        except BaseException:
            self._reconnect_at = None
            self.close()
            raise

    def _lost(self, reason: str) -> None:
        if self._sock is None:
            return
        if not self._closing:
            log.info("%s: connection lost: %s", self.url, reason)
        self._drop_socket()
        now = time.monotonic()
        if self._connected and self.options.reconnect and self._failure is None:
            self._reconnect_at = now + self._backoff.next_delay()
        elif self._connected:
            self._closing = True
            self._close_core()

    def _drop_socket(self) -> None:
        sock, session = self._sock, self._session
        self._sock = self._session = None
        self._out.clear()
        if session is not None:
            if not session.ended:
                session.receive_data(b"", time.monotonic())  # the end of the stream
            self._backlog += session.events()
        if sock is not None:
            sock.close()

    def _try_reconnect(self, now: float) -> None:
        self._reconnect_at = None
        try:
            self._connect()
        except RembusConnectionClosed as exc:
            log.debug("%s: reconnect failed: %s", self.url, exc)
            self._failover()
            self._reconnect_at = time.monotonic() + self._backoff.next_delay()
            return
        self._backoff.reset()
        log.info("%s reconnected", self.url)

    # -- one turn ------------------------------------------------------------

    def _step(self) -> int:
        """Reconnect and fire timers when due, read what is there, handle the events."""
        now = time.monotonic()
        if self._reconnect_at is not None and now >= self._reconnect_at and not self._closing:
            self._try_reconnect(now)
        self._read()
        timers = self._session or self.conn
        deadline = timers.next_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            timers.handle_timer(time.monotonic())
        return self._dispatch()

    def _wait_io(self, timeout: float | None) -> None:
        """Sleep until the socket is readable (or writable, with output waiting), the next
        deadline, or ``timeout``."""
        deadline = self.next_deadline()
        wait = timeout
        if deadline is not None:
            until = max(0.0, deadline - time.monotonic())
            wait = until if wait is None else min(wait, until)
        sock = self._sock
        if sock is None:
            if wait is None:
                return  # nothing can ever happen: the component is finished
            time.sleep(wait)
            return
        select.select([sock], [sock] if self._out else [], [], wait)

    def _read(self) -> None:
        for _ in range(READS_PER_PROCESS):
            sock = self._sock
            session = self._session
            if sock is None or session is None:
                return
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            try:
                session.receive_data(data, time.monotonic())
            except ProtocolError as exc:
                log.warning("%s: closing the connection, the broker sent bad data: %s",
                            self.url, exc)
            if session.ended:
                self._queue_output()
                self._write()
                closed = session.closed
                if closed is not None and (error := overwritten(closed.code, closed.reason)):
                    log.error("%s: %s", self.url, error)
                    self._failure = error
                self._lost(session.end_reason or "connection lost")
                return

    def _queue_output(self) -> None:
        session = self._session
        if session is None:
            self.conn.data_to_send()  # not connected: the core keeps what must survive
            return
        for data in session.data_to_send():
            self._out += data

    def _write(self) -> None:
        self._queue_output()
        sock = self._sock
        out = self._out
        while out and sock is not None:
            try:
                sent = sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            del out[:sent]

    def _write_all(self, deadline: float) -> None:
        while self._out and self._sock is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([], [self._sock], [], left)
            self._write()

    def _read_until_closed(self, deadline: float) -> None:
        """Read until the broker's close frame or the end of the stream (RFC 6455 7.1.1).

        Closing the socket while the broker still writes resets the connection
        and fails the broker's writes: one replaying stored messages then
        takes those it wrote before as undelivered.
        """
        while self._sock is not None and self._session is not None and not self._session.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([self._sock], [], [], left)
            self._read()

    # -- events --------------------------------------------------------------

    def _dispatch(self) -> int:
        count = 0
        while True:
            events = self._take_events()
            if not events:
                return count
            count += len(events)
            for event in events:
                self._on_event(event)
            self._write()

    def _take_events(self) -> list[Any]:
        events, self._backlog = self._backlog, []
        session = self._session
        events += session.events() if session is not None else self.conn.events()
        return events

    def _resolve(self, handle: int, value: Any, error: BaseException | None) -> None:
        if handle in self._waiting:
            if isinstance(error, RembusConnectionClosed) and isinstance(self._failure,
                                                                        ConnectionOverwritten):
                error = self._failure  # the request was lost because the name was taken
            self._done[handle] = (handle, value, error)

    def _on_connected(self) -> None:
        self._connected = True

    def _login_refused(self, error: LoginFailed) -> None:
        self._failure = error
        if self._connected:
            log.error("%s: login refused: %s", self.url, error)
        self._reconnect_at = None
        self._drop_socket()
        self._closing = self._connected

    def _on_publication(self, event: PublicationReceived) -> None:
        call = self._publication_call(event)
        if call is None:
            return
        handler, args = call
        try:
            handler(*args)
        except Exception as exc:
            log.error("%s: subscriber of %s raised %r", self.url, event.topic, exc,
                      exc_info=exc)
        self._delivered(event)

    def _on_request(self, event: RequestReceived) -> None:
        handler, detail = exposer_call(self.registry, event, self.options.dataframe)
        if handler is None:
            status, value = detail
        else:
            try:
                status, value = response_for_result(handler(*detail))
            except Exception as exc:
                status, value = response_for_error(exc)
        self.conn.respond(event.request_id, status, value)


def component(url: str | Sequence[str] | None = None, **options: Any) -> Component:
    """Connect a component and return it once logged in.

    Arguments as :func:`rembus.component`. Raises :class:`RembusConnectionClosed`
    if the broker cannot be reached and :class:`~rembus.errors.LoginFailed` if it
    refuses the name.
    """
    comp = Component(parse(url), make_options(options))
    comp.start()
    lifetime.close_at_exit(comp)
    return comp


__all__ = ["Component", "Options", "Reply", "component", *errors.__all__]
