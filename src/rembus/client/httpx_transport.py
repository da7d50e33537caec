"""The httpx-ws transport: WebSocket through httpx (HTTP(S) proxies, custom TLS).

Choose it with ``component(..., transport="httpx")`` (install ``rembus[httpx]``).
It behaves like the native transport: whole binary messages in and out,
``ConnectionError`` once the connection is over, messages larger than
``Options.max_message_size`` refused by closing the connection.

httpx-ws runs its reader inside an anyio task group, and a task group must be
left by the task that entered it, while a component opens its transport in
one task and closes it from another. So a dedicated task owns the session
from connect to close; the other tasks only exchange messages with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import Any

import httpx
import wsproto.events
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketUpgradeError,
    aconnect_ws,
)

from rembus.client.options import Options
from rembus.client.url import ComponentURL
from rembus.errors import ConnectionOverwritten, overwritten
from rembus_proto.session import CLOSED_BEFORE_UPGRADE, no_upgrade_answer, upgrade_refused

#: Bytes asked from the socket per read (httpx-ws calls it the message size, it is not).
READ_CHUNK = 1 << 20
#: Messages received and not yet taken before reading pauses.
INBOX_LIMIT = 1024
#: Bytes queued for writing above which drain() waits.
HIGH_WATER = 4 * 1024 * 1024
#: close code for a message above the size limit (RFC 6455).
CLOSE_TOO_BIG = 1009


def http_url(url: ComponentURL) -> str:
    """The ``http(s)://`` address httpx connects to for ``url``."""
    scheme = "https" if url.secure else "http"
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{scheme}://{host}:{url.port}/"


class HttpxTransport:
    """One WebSocket session of httpx-ws, owned by its own task."""

    def __init__(self, max_message_size: int, close_timeout: float = 10.0) -> None:
        self._max_size = max_message_size
        self._close_timeout = close_timeout
        self._inbox: deque[bytes] = deque()
        self._outbox: deque[bytes] = deque()
        self._queued = 0
        self._received = asyncio.Event()
        self._taken = asyncio.Event()
        self._to_write = asyncio.Event()
        self._written = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: str | None = None
        self._overwritten: ConnectionOverwritten | None = None
        self.owner: asyncio.Task[None] | None = None
        """The task running :meth:`run`; :meth:`close` waits for it."""

    # -- the Transport protocol ---------------------------------------------

    def send(self, frames: list[bytes]) -> None:
        """Queue whole messages for writing."""
        if self._error is not None or self._stop.is_set():
            raise ConnectionError(self._error or "the connection is closed")
        self._outbox.extend(frames)
        self._queued += sum(len(f) for f in frames)
        self._written.clear()
        self._to_write.set()

    async def recv_many(self) -> list[bytes]:
        """Every message received so far (at least one); ConnectionError at the end."""
        while not self._inbox:
            if self._overwritten is not None:
                raise self._overwritten
            if self._error is not None:
                raise ConnectionError(self._error)
            self._received.clear()
            await self._received.wait()
        out = list(self._inbox)
        self._inbox.clear()
        self._taken.set()
        return out

    async def drain(self) -> None:
        """Wait while more than :data:`HIGH_WATER` bytes wait to be written."""
        while self._queued > HIGH_WATER and self._error is None:
            self._written.clear()
            await self._written.wait()

    async def close(self) -> None:
        """Write what is queued, send a close frame and end the session."""
        self._stop.set()
        self._to_write.set()
        owner = self.owner
        if owner is not None and owner is not asyncio.current_task():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await owner
        self._fail("the connection is closed")

    # -- the owner task -----------------------------------------------------

    async def run(self, url: str, client: httpx.AsyncClient,
                  opened: asyncio.Future[None], timeout: float) -> None:
        """Connect, then read and write until :meth:`close` or the end of the connection."""
        ws: AsyncWebSocketSession
        try:
            async with client, aconnect_ws(url, client, max_message_size_bytes=READ_CHUNK,
                                           queue_size=INBOX_LIMIT) as ws:
                if not opened.done():
                    opened.set_result(None)
                await self._serve(ws)
        except BaseException as exc:
            self._fail(f"connection lost: {_describe(exc)}")
            if not opened.done():
                opened.set_exception(ConnectionError(_open_failure(exc, timeout)))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._fail("the connection is closed")

    async def _serve(self, ws: AsyncWebSocketSession) -> None:
        reader = asyncio.ensure_future(self._read(ws))
        writer = asyncio.ensure_future(self._write(ws))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([reader, stop], return_when=asyncio.FIRST_COMPLETED)
            self._to_write.set()
            if not writer.done():
                await writer  # the writer ends once its queue is empty and the stop is set
            if stop.done() and not reader.done():
                await self._close_handshake(ws, reader)
        finally:
            for task in (reader, writer, stop):
                task.cancel()
            await asyncio.gather(reader, writer, stop, return_exceptions=True)

    async def _close_handshake(self, ws: AsyncWebSocketSession,
                               reader: asyncio.Future[None]) -> None:
        """Send our close frame, then keep reading until the broker's (see ``Wire.close``:
        httpx-ws alone would close the stream at once, resetting the connection)."""
        try:
            await ws.send(wsproto.events.CloseConnection(1000))
        except (HTTPXWSException, OSError):
            return
        await asyncio.wait([reader], timeout=self._close_timeout)

    async def _read(self, ws: AsyncWebSocketSession) -> None:
        try:
            while True:
                event = await ws.receive()
                if not isinstance(event, wsproto.events.BytesMessage):
                    continue  # text messages are not part of the protocol
                data = bytes(event.data)
                if len(data) > self._max_size:
                    await ws.close(CLOSE_TOO_BIG, "message too big")
                    self._fail(f"a message of {len(data)} bytes is above the limit of "
                               f"{self._max_size}")
                    return
                self._inbox.append(data)
                self._received.set()
                while len(self._inbox) >= INBOX_LIMIT and self._error is None:
                    self._taken.clear()
                    await self._taken.wait()
        except (WebSocketDisconnect, HTTPXWSException, OSError) as exc:
            if isinstance(exc, WebSocketDisconnect):
                self._overwritten = overwritten(exc.code, exc.reason or "")
            self._fail(f"connection lost: {_describe(exc)}")

    async def _write(self, ws: AsyncWebSocketSession) -> None:
        try:
            while True:
                while self._outbox:
                    frame = self._outbox.popleft()
                    await ws.send_bytes(frame)
                    self._queued -= len(frame)
                    if self._queued <= HIGH_WATER:
                        self._written.set()
                self._written.set()
                if self._stop.is_set():
                    return
                self._to_write.clear()
                await self._to_write.wait()
        except (HTTPXWSException, OSError, RuntimeError) as exc:
            self._fail(f"write failed: {_describe(exc)}")

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        self._received.set()
        self._written.set()
        self._taken.set()


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)  # an ExceptionGroup of anyio
    if isinstance(inner, (list, tuple)) and inner:
        return "; ".join(_describe(e) for e in inner)
    return str(exc) or type(exc).__name__


def _open_failure(exc: BaseException, timeout: float) -> str:
    """What did not happen when the session could not be opened, in words."""
    inner = getattr(exc, "exceptions", None)  # an ExceptionGroup of anyio
    if isinstance(inner, (list, tuple)) and len(inner) == 1:
        return _open_failure(inner[0], timeout)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no TCP connection within {timeout:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return no_upgrade_answer(timeout)
    if isinstance(exc, WebSocketUpgradeError):
        return upgrade_refused(_describe(exc))
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or "connection refused" in str(
                cause).lower():
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{CLOSED_BEFORE_UPGRADE} ({exc})"
    return _describe(exc)


async def open_httpx(url: ComponentURL, options: Options,
                     ssl_context: ssl.SSLContext | None) -> HttpxTransport:
    """Connect to the broker of ``url`` with httpx-ws; raises ConnectionError if it cannot,
    saying what did not happen (each step bounded by ``Options.open_timeout``)."""
    verify: Any = ssl_context if ssl_context is not None else True
    timeout = options.open_timeout
    client = httpx.AsyncClient(
        verify=verify, trust_env=True,
        timeout=httpx.Timeout(options.timeout, connect=timeout, read=timeout))
    transport = HttpxTransport(options.max_message_size, options.timeout)
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    owner = asyncio.ensure_future(transport.run(http_url(url), client, opened, timeout))
    transport.owner = owner
    try:
        # httpx bounds each step; this bounds them all (TCP, TLS, proxy, upgrade).
        await asyncio.wait_for(asyncio.shield(opened), 3 * timeout)
    except asyncio.TimeoutError:
        owner.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await owner
        raise ConnectionError(f"no WebSocket session within {3 * timeout:g} s") from None
    except BaseException:
        owner.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await owner
        raise
    return transport
