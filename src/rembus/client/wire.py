"""A minimal asyncio WebSocket connection carrying raw Rembus frames.

No protocol logic: it sends the bytes it is given as binary messages (and
text as text messages, for the JSON dialect) and returns whole messages
received. Tests use it to speak to a broker frame by
frame (e.g. as a 0.1.x peer would) and benchmarks use it as a lean client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Iterable, Sized

from rembus.client.stream import Stream, open_stream
from rembus_proto import ProtocolError
from rembus_proto.session import CLOSED_BEFORE_UPGRADE, no_upgrade_answer, upgrade_refused
from rembus_proto.ws import ClientWebSocket, WSConfig
from rembus_proto.wsevents import Closed, Opened, WsMessage

# A message this large is written on its own: joined with its neighbours into
# one write it would be copied once more.
_WRITE_APART = 64 * 1024

CLOSE_TIMEOUT = 10.0
"""Default bound, in seconds, of the wait for the peer's close frame in :meth:`Wire.close`."""


class WireClosed(ConnectionError):
    """The connection ended."""


class Wire:
    """One WebSocket connection; use :meth:`open`."""

    def __init__(self, stream: Stream, ws: ClientWebSocket) -> None:
        self._stream = stream
        self._ws = ws
        self._inbox: deque[bytes] = deque()
        self._texts: deque[str] = deque()
        self.closed: Closed | None = None
        self._reading = False  # a task waits in _read (close must not read at the same time)
        self._read_done = asyncio.Event()

    @classmethod
    async def open(cls, host: str, port: int, path: str = "/",
                   config: WSConfig | None = None,
                   ssl_context: ssl.SSLContext | None = None,
                   timeout: float | None = None) -> Wire:
        """Connect and complete the WebSocket handshake (TLS when ``ssl_context`` is given).

        ``timeout`` bounds the TCP (and TLS) connection, then again the wait for
        the upgrade answer. Raises ``TimeoutError`` when no connection came,
        :class:`WireClosed` (saying what did not happen) when no upgrade did,
        ``OSError`` for the rest.
        """
        try:
            stream = await asyncio.wait_for(open_stream(host, port, ssl_context), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no TCP connection within {timeout:g} s") from None
        ws = ClientWebSocket(f"{host}:{port}", path, config=config)
        wire = cls(stream, ws)
        stream.writelines(ws.data_to_send())
        try:
            await asyncio.wait_for(wire._upgrade(), timeout)
        except asyncio.TimeoutError:
            stream.close()
            raise WireClosed(no_upgrade_answer(timeout or 0)) from None
        except BaseException:
            stream.close()
            raise
        return wire

    async def _upgrade(self) -> None:
        while True:
            events = await self._read()
            self._keep(events)
            if any(isinstance(e, Opened) for e in events):
                return
            if self.closed is not None or self._stream.at_eof():
                reason = self.closed.reason if self.closed is not None else ""
                if self.closed is not None and self.closed.code == 1002:
                    raise WireClosed(upgrade_refused(reason))
                raise WireClosed(CLOSED_BEFORE_UPGRADE)

    def send(self, *frames: bytes) -> None:
        """Queue frames, each as one binary message (call :meth:`drain` to wait)."""
        self.send_all(frames)

    def send_all(self, frames: Iterable[bytes | str]) -> None:
        """Queue frames, each as one message (binary, or text for a ``str``), in one write."""
        ws = self._ws
        if not ws.is_open:
            raise WireClosed("the connection is closed")
        writelines = self._stream.writelines
        for frame in frames:
            ws.send_message(frame)
            if len(frame) >= _WRITE_APART:
                writelines(ws.data_to_send())
        data = ws.data_to_send()
        if data:
            writelines(data)

    def send_text(self, text: str) -> None:
        """Queue one text message."""
        self.send_all((text,))

    async def recv_text(self) -> str:
        """The next text message; raises :class:`WireClosed` at the end."""
        await self._wait_for(self._texts)
        return self._texts.popleft()

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        await self._stream.drain()

    @property
    def is_open(self) -> bool:
        """True until the connection closed or failed."""
        return self.closed is None and not self._stream.is_closing()

    async def recv(self) -> bytes:
        """The next message; raises :class:`WireClosed` at the end."""
        await self.recv_wait()
        return self._inbox.popleft()

    async def recv_many(self) -> list[bytes]:
        """Every message received so far, waiting for at least one."""
        if not self._inbox:
            await self.recv_wait()
        out = list(self._inbox)
        self._inbox.clear()
        return out

    async def recv_wait(self) -> None:
        """Wait until a message is there; raises :class:`WireClosed` at the end."""
        await self._wait_for(self._inbox)

    async def _wait_for(self, queue: Sized) -> None:
        while not queue:
            if self.closed is not None:
                raise WireClosed(f"closed with code {self.closed.code}: {self.closed.reason}")
            self._keep(await self._read())

    def pending(self) -> int:
        """Messages already received and not yet taken."""
        return len(self._inbox)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close handshake: send a close frame, wait for the peer's (``timeout`` s at most),
        then close the socket.

        Messages that arrive meanwhile are received as usual. Closing the socket
        at once would make the peer's next write fail with a reset: a broker
        that is sending stored messages then stops, and records as delivered
        only those it wrote before (RFC 6455 7.1.1: the client waits for the
        server to end the connection).
        """
        if self._ws.is_open:
            self._ws.close()
            self._stream.writelines(self._ws.data_to_send())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._until_closed(), timeout)
        self._stream.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._stream.wait_closed()

    async def _until_closed(self) -> None:
        """Read until the WebSocket is over, or wait while another task reads."""
        while not self._ws.closed and self.closed is None:
            if self._reading:
                await self._read_done.wait()
            else:
                self._keep(await self._read())

    async def _read(self) -> list[object]:
        self._reading = True
        self._read_done.clear()
        try:
            return await self._read_once()
        finally:
            self._reading = False
            self._read_done.set()

    async def _read_once(self) -> list[object]:
        try:
            chunks = await self._stream.read()
        except (ConnectionError, OSError) as exc:
            self.closed = Closed(1006, str(exc), clean=False)
            return []
        ws = self._ws
        try:
            for data in chunks or (b"",):  # no chunk: the end of the stream
                ws.receive_data(data)
        except ProtocolError as exc:
            self.closed = Closed(1002, str(exc), clean=False)
            return []
        out = ws.data_to_send()
        if out:
            self._stream.writelines(out)
        return list(ws.events())

    def _keep(self, events: list[object]) -> None:
        for event in events:
            if isinstance(event, WsMessage):
                if isinstance(event.data, bytes):
                    self._inbox.append(event.data)
                else:
                    self._texts.append(event.data)
            elif isinstance(event, Closed):
                self.closed = event
