"""QoS0 publications of the sync API, handed to the I/O thread in batches.

A blocking ``publish()`` that waited for the I/O thread each time would cost
a thread round trip per message. Instead the caller encodes the arguments
(so encoding errors are raised to it), appends them to a bounded queue and
returns; no lock is taken on that path (a deque's ``append`` and
``popleft`` are atomic). The first publication of a batch wakes the I/O
loop once; there a writer takes everything queued (at most ``limit`` at a
time), hands it to the protocol core and waits for the socket to drain
before it takes more. A caller that gets ``limit`` messages ahead blocks
until the writer takes some.

Any other call of the component first moves what is queued into the core
(:meth:`BatchPublisher.flush`, on the loop), so the order of calls is the
order on the wire.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from rembus.client.threaded_lane import LaneComponent
from rembus.errors import RembusConnectionClosed
from rembus_proto import Payload

#: Encoded size from which a QoS0 publication is not queued: the queue counts
#: messages, so the caller writes a large one itself and waits for the socket.
LARGE_PUBLICATION = 64 * 1024


class BatchPublisher:
    """Bounded hand-off of QoS0 publications from any thread to the I/O loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inner: LaneComponent,
                 limit: int = 10_000) -> None:
        """``limit``: publications queued ahead of the loop before :meth:`post` blocks
        (each caller thread may add one more while another one waits)."""
        self._loop = loop
        self._inner = inner
        self._limit = limit
        self._queue: deque[tuple[str, Payload]] = deque()
        self._scheduled = False  # a _wake waits to run on the loop
        self._writer: asyncio.Task[None] | None = None  # touched on the loop only
        self._room = threading.Condition(threading.Lock())
        self._want_room = False  # a caller waits in _wait_room
        self._closed = False

    def post(self, topic: str, data: Payload) -> None:
        """Queue one publication (blocks while ``limit`` are waiting).

        Raises :class:`RembusConnectionClosed` once :meth:`close` was called.
        """
        queue = self._queue
        if len(queue) >= self._limit:
            self._wait_room()
        if self._closed:
            raise RembusConnectionClosed("the component is closed")
        queue.append((topic, data))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed
                raise RembusConnectionClosed("the component is closed") from None

    def flush(self) -> None:
        """On the loop: hand everything queued to the protocol core now (no waiting)."""
        self._take(len(self._queue))

    def close(self) -> None:
        """Refuse further publications and release callers waiting for room."""
        with self._room:
            self._closed = True
            self._room.notify_all()

    def _wait_room(self) -> None:
        with self._room:
            while len(self._queue) >= self._limit and not self._closed:
                self._want_room = True
                self._room.wait()

    def _wake(self) -> None:
        # Reset before the queue is looked at: a publication appended later schedules anew.
        self._scheduled = False
        if self._writer is None:
            self._writer = self._loop.create_task(self._write())

    async def _write(self) -> None:
        queue = self._queue
        try:
            while queue:
                self._take(min(len(queue), self._limit))
                await self._inner.drain()
        finally:
            self._writer = None

    def _take(self, count: int) -> None:
        """Move ``count`` queued publications into the core, in order, and write them."""
        popleft = self._queue.popleft
        self._inner.publish_all(popleft() for _ in range(count))
        if self._want_room:
            with self._room:
                self._want_room = False
                self._room.notify_all()
