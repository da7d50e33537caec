"""QoS0 publications of the sync API, handed to the I/O thread in batches.

A blocking ``publish()`` that waited for the I/O thread each time would cost
a thread round trip per message. Instead the caller encodes the arguments
(so encoding errors are raised to it), queues them and returns; the I/O
thread takes whole batches, writes them and waits for the socket to drain
before it frees their places in the bounded queue. A caller that gets
``limit`` messages ahead blocks until the I/O thread catches up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

from rembus.client import aio
from rembus.errors import RembusError
from rembus_proto import Payload

log = logging.getLogger("rembus")


class BatchPublisher:
    """Bounded hand-off of QoS0 publications from any thread to the I/O loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inner: aio.Component,
                 limit: int = 10_000) -> None:
        self._loop = loop
        self._inner = inner
        self._room = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, Payload]] = deque()
        self._scheduled = False
        self._idle = threading.Event()
        self._idle.set()

    def post(self, topic: str, data: Payload) -> None:
        """Queue one publication (blocks while ``limit`` are waiting)."""
        self._room.acquire()
        with self._lock:
            self._queue.append((topic, data))
            self._idle.clear()
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._start)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything posted has been written (or ``timeout`` passed)."""
        return self._idle.wait(timeout)

    def _start(self) -> None:
        self._loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
                if not batch:
                    self._scheduled = False
                    self._idle.set()
                    return
            try:
                for topic, data in batch:
                    try:
                        self._inner.publish_nowait(topic, data)
                    except RembusError as exc:
                        log.warning("%s: publication on %s lost: %s", self._inner.url, topic, exc)
                await self._inner.drain()
            except (ConnectionError, OSError) as exc:
                log.debug("%s: %s", self._inner.url, exc)
            finally:
                for _ in batch:
                    self._room.release()
