"""Writing large buffers into an asyncio transport without re-copying its backlog.

The selector transport keeps what the socket did not take in one
``bytearray``: it slices the unsent tail of each write, appends it, and
deletes from the front as the socket takes more. Once that buffer holds a
few MiB (a reader slower than the writer, large messages) every append that
grows it copies the whole backlog again. :class:`SlicedWriter` keeps the
transport's own buffer under one :data:`SLICE` and holds the rest as
``memoryview`` slices of the caller's bytes, handed over whenever the
transport has sent everything: the socket sends from the caller's bytes and
no byte is copied more than once.

Flow control is the caller's as before: ``paused`` turns true above ``high``
bytes waiting (the transport's buffer and the slices) and the ``pause``
callback runs; it turns false, and ``resume`` runs, once at most ``low`` wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

#: Largest piece handed to the transport at once.
SLICE = 256 * 1024


def _nothing() -> None:
    pass


class SlicedWriter:
    """The writing side of one transport (the protocol forwards its writing callbacks)."""

    __slots__ = ("_blocked", "_close_pending", "_high", "_low", "_on_pause", "_on_resume",
                 "_queued", "_queued_bytes", "_transport", "paused")

    def __init__(self, transport: asyncio.WriteTransport, *, high: int, low: int,
                 pause: Callable[[], None] = _nothing,
                 resume: Callable[[], None] = _nothing) -> None:
        self._transport = transport
        self._high = high
        self._low = low
        self._on_pause = pause
        self._on_resume = resume
        self._queued: deque[memoryview] = deque()
        self._queued_bytes = 0
        self._blocked = False  # the transport holds a slice's worth: give it nothing more
        self._close_pending = False
        self.paused = False
        """More than ``high`` bytes waited, and not yet ``low`` or fewer since."""
        # The transport calls back only when it has sent everything: the next slice
        # then goes to the socket without being copied. It pauses above ``low``, so
        # that whenever more than ``low`` waits a callback is still to come.
        transport.set_write_buffer_limits(min(SLICE, low), 0)

    @property
    def size(self) -> int:
        """Bytes written and not yet taken by the socket."""
        return self._queued_bytes + self._transport.get_write_buffer_size()

    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called or the transport is closing."""
        return self._close_pending or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Queue ``data`` (ignored once closing)."""
        transport = self._transport
        if self._close_pending or transport.is_closing():
            return
        if len(data) <= SLICE and not self._blocked and not self._queued:
            transport.write(data)
        else:
            view = memoryview(data)
            self._queued.extend(view[at : at + SLICE] for at in range(0, len(view), SLICE))
            self._queued_bytes += len(view)
            self._push()
        self._pause_if_over()

    def writelines(self, chunks: list[bytes]) -> None:
        """Queue each of ``chunks`` in order (one transport call when they are small)."""
        if len(chunks) == 1:
            self.write(chunks[0])
            return
        transport = self._transport
        if self._close_pending or transport.is_closing():
            return
        if not self._blocked and not self._queued and sum(map(len, chunks)) <= SLICE:
            transport.writelines(chunks)
            self._pause_if_over()
            return
        # Small frames are joined into pieces of about a slice: one transport write
        # each, not one per frame; a large one is handed over as it is (no copy).
        small: list[bytes] = []
        size = 0
        for chunk in chunks:
            if len(chunk) >= SLICE:
                if small:
                    self.write(b"".join(small))
                    small, size = [], 0
                self.write(chunk)
                continue
            small.append(chunk)
            size += len(chunk)
            if size >= SLICE:
                self.write(b"".join(small))
                small, size = [], 0
        if small:
            self.write(b"".join(small))

    def _pause_if_over(self) -> None:
        if not self.paused and self.size > self._high:
            self.paused = True
            self._on_pause()

    def _push(self) -> None:
        transport = self._transport
        queued = self._queued
        while queued and not self._blocked and not transport.is_closing():
            piece = queued.popleft()
            self._queued_bytes -= len(piece)
            transport.write(piece)
        if self._close_pending and not queued:
            self._close_pending = False
            transport.close()

    def transport_paused(self) -> None:
        """The protocol's ``pause_writing``."""
        self._blocked = True

    def transport_resumed(self) -> None:
        """The protocol's ``resume_writing``: the transport sent everything it held."""
        self._blocked = False
        self._push()
        if self.paused and self.size <= self._low:
            self.paused = False
            self._on_resume()

    def close(self) -> None:
        """Close the transport once everything queued is handed over."""
        if self._queued:
            self._close_pending = True
        else:
            self._transport.close()

    def lost(self) -> None:
        """The connection is gone: drop what is queued."""
        self._queued.clear()
        self._queued_bytes = 0
        self._close_pending = False
