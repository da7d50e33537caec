"""The socket under a :class:`~rembus.client.wire.Wire`: an asyncio protocol, no stream copies.

asyncio's ``StreamReader`` appends every chunk received to one ``bytearray``
and copies it out again on each read; for a message of a MiB that is two
extra copies (and a memory move) before the WebSocket layer sees a byte.
:class:`Stream` hands the chunks over as they came, in a bounded queue.

Writes go through a :class:`~rembus.writes.SlicedWriter`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import cast

from rembus.writes import SLICE, SlicedWriter

#: Bytes received and not yet taken beyond which the socket is not read (back-pressure).
READ_LIMIT = 2 << 20

#: Bytes written and not yet sent above which :meth:`Stream.drain` waits.
WRITE_HIGH = SLICE


class Stream(asyncio.Protocol):
    """One TCP (or TLS) connection: queued received chunks, writes with flow control."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writer: SlicedWriter | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = self._loop.create_future()

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface without the base class
        self._transport = transport = cast(asyncio.Transport, transport)
        self._writer = SlicedWriter(transport, high=WRITE_HIGH, low=WRITE_HIGH // 4,
                                    resume=self._drained)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_LIMIT and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake()
        if self._writer is not None:
            self._writer.lost()
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(ConnectionResetError(str(exc)))
        self._drain_waiters.clear()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        if self._writer is not None:
            self._writer.transport_paused()

    def resume_writing(self) -> None:
        if self._writer is not None:
            self._writer.transport_resumed()

    def _drained(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the reading side --------------------------------------------------------

    async def read(self) -> list[bytes]:
        """The chunks received so far (waiting for one); ``[]`` at the end of the stream.

        Raises the connection's error (``ConnectionError`` / ``OSError``) if it
        failed before anything more was received.
        """
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return []
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        chunks = list(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunks

    def at_eof(self) -> bool:
        """True when the peer ended the stream and every chunk was read."""
        return self._eof and not self._chunks

    # -- the writing side --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the socket (nothing happens once the connection is closing)."""
        if self._writer is not None:
            self._writer.write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        """Queue each of ``chunks`` in order."""
        if self._writer is not None and chunks:
            self._writer.writelines(chunks)

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark."""
        if self._lost.done():
            raise ConnectionResetError(f"connection lost: {self._error or 'closed'}")
        if self._writer is None or not self._writer.paused:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def is_closing(self) -> bool:
        """True once the connection is closing or closed."""
        return self._writer is None or self._writer.closing

    def close(self) -> None:
        """Close the connection (buffered output is still sent)."""
        if self._writer is not None:
            self._writer.close()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        await self._lost


async def open_stream(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> Stream:
    """Connect to ``host:port`` (over TLS with ``ssl_context``, checking ``host``'s name)."""
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(
        Stream, host, port, ssl=ssl_context,
        server_hostname=host if ssl_context is not None else None)
    return stream
