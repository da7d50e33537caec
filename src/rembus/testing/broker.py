"""The in-process broker of a :class:`~rembus.testing.Network`: the real router, in memory.

It runs the driver loop of the broker server (``docs/architecture-broker.md``)
over :class:`~rembus.testing.link.Pipe` objects instead of sockets: feed the
router, answer its data requests from the store, commit, write, carry out its
orders, and arm its one timer, all on the event loop's (virtual) time.
"""

from __future__ import annotations

import asyncio
import time

from rembus.testing.link import Pipe
from rembus_proto import ProtocolError
from rembus_proto.broker import (
    CLOSE_GOING_AWAY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SLOW_CONSUMER,
    Close,
    Connection,
    Router,
    RouterConfig,
    ShutdownRequested,
    answer_requests,
)
from rembus_proto.security_port import MemorySecurity, Security
from rembus_proto.store import MemoryStore, Store

#: Rounds of one turn in which the router may keep producing output (replays in batches).
MAX_ROUNDS = 10_000
#: Frames waiting for the next turn; one more closes the connection that sent it.
MAX_INPUT = 100_000


class MemoryBroker:
    """The router, its store and its security on one event loop; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: RouterConfig | None = None,
                 store: Store | None = None, security: Security | None = None) -> None:
        self.loop = loop
        self.config = config or RouterConfig()
        #: Kept across :meth:`stop` and :meth:`start`, like the broker's data directory.
        self.store: Store = store if store is not None else MemoryStore()
        self.security: Security = security if security is not None else MemorySecurity()
        self._wall_offset = time.time() - loop.time()
        self._pipes: dict[Connection, Pipe] = {}
        self._input: list[tuple[Connection, bytes]] = []
        self._turn_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self.router: Router | None = None
        #: Every ``ShutdownRequested`` order stops the broker; counted here.
        self.shutdowns = 0
        self.start()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self.router is not None

    def now(self) -> float:
        """The loop's time: the router's monotonic clock."""
        return self.loop.time()

    def wall(self) -> float:
        """Wall-clock seconds that advance with the loop's time (stamps stored messages)."""
        return self._wall_offset + self.loop.time()

    def start(self) -> None:
        """Start a router on the store (after :meth:`stop`: a restart keeping the store)."""
        if self.router is None:
            self.router = Router(self.store, self.config, now=self.now(),
                                 security=self.security)
            self._arm()

    def stop(self) -> None:
        """Stop like a broker that is shut down: save, commit, close every connection."""
        router = self.router
        if router is None:
            return
        router.shutdown(self.now())
        self.store.commit()
        self.router = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._input.clear()
        pipes = list(self._pipes.values())
        self._pipes.clear()
        for pipe in pipes:
            pipe.close(CLOSE_GOING_AWAY, "the broker stopped", by_broker=True)

    # -- the link side ------------------------------------------------------------

    def attach(self, pipe: Pipe) -> Connection:
        """Accept a new connection; refused while the broker is stopped."""
        router = self.router
        if router is None:
            raise ConnectionRefusedError("the broker is stopped")
        conn = router.connect(self.now(), "memory")
        self._pipes[conn] = pipe
        return conn

    def receive(self, conn: Connection, frame: bytes) -> None:
        """A whole frame from a component, handled at the next turn."""
        if conn not in self._pipes:
            return
        if len(self._input) >= MAX_INPUT:
            self._close(conn, CLOSE_SLOW_CONSUMER, "too many messages waiting for the broker")
            return
        self._input.append((conn, frame))
        self._schedule()

    def backlog(self) -> int:
        """Frames received and not handled yet."""
        return len(self._input)

    def detach(self, conn: Connection) -> None:
        """A connection ended on the component's side."""
        if self._pipes.pop(conn, None) is not None and self.router is not None:
            self._input = [(c, f) for c, f in self._input if c is not conn]
            self.router.disconnect(conn, self.now())
            self._schedule()

    # -- the driver loop ------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._turn_scheduled = False
        router = self.router
        if router is None:
            return
        now, wall = self.now(), self.wall()
        batch, self._input = self._input, []
        for conn, frame in batch:
            if conn not in self._pipes:
                continue
            try:
                router.receive(conn, frame, now, wall)
            except ProtocolError as exc:
                self._close(conn, CLOSE_PROTOCOL_ERROR, str(exc))
        self._write(router, now, wall)
        self._arm()

    def _write(self, router: Router, now: float, wall: float) -> None:
        for _ in range(MAX_ROUNDS):
            orders = answer_requests(router, self.store, self.security, now, wall)
            router.flush()
            self.store.commit()
            pulled = router.data_to_send()
            for conn, frames in pulled:
                pipe = self._pipes.get(conn)
                if pipe is not None:
                    for frame in frames:
                        pipe.send_down(frame)
            for order in orders:
                if isinstance(order, Close):
                    self._close(order.conn, order.code, order.reason)
                elif isinstance(order, ShutdownRequested):
                    self.shutdowns += 1
                    self.loop.call_soon(self.stop)
            waiting = [c for c in router.connections if c.waiting_drain]
            if not pulled and not waiting:
                return
            for conn in waiting:  # memory has room at once
                router.drained(conn, now)
        raise RuntimeError("the router kept producing output")

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        pipe = self._pipes.pop(conn, None)
        if self.router is not None:
            self.router.disconnect(conn, self.now())
        if pipe is not None:
            pipe.close(code, reason, by_broker=True)

    def _arm(self) -> None:
        router = self.router
        deadline = None if router is None else router.next_deadline()
        timer = self._timer
        if timer is not None and timer.when() != deadline:
            timer.cancel()
            self._timer = timer = None
        if timer is None and deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        router = self.router
        if router is not None:
            router.handle_timer(self.now(), self.wall())
            self._turn()
