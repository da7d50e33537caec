"""The in-memory connection of one component to the in-process broker, with faults.

A :class:`Link` belongs to one component and outlives its connections: the
faults set on it apply to whatever connection is current. Messages are whole
Rembus frames; ``"up"`` is component → broker, ``"down"`` broker → component.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from rembus.client.options import Options
from rembus.client.transport import Transport
from rembus.client.url import ComponentURL
from rembus.errors import overwritten
from rembus_proto import Message, decode
from rembus_proto.broker import CLOSE_SLOW_CONSUMER

if TYPE_CHECKING:
    from rembus_proto.broker import Connection

Direction = Literal["up", "down"]
#: Which messages a fault applies to: a message class (or tuple of them), a predicate, or all.
Match = type[Message] | tuple[type[Message], ...] | Callable[[Message], bool] | None

#: Frames waiting to be read by a component; one more closes its connection (slow consumer).
MAX_INBOX = 100_000
#: Faults set on a link at once.
MAX_FAULTS = 1_000
#: Frames waiting for the broker above which a component's ``drain()`` lets the broker run.
HIGH_WATER = 1_000


class BrokerSide(Protocol):
    """What a link needs from the in-process broker."""

    loop: asyncio.AbstractEventLoop

    def attach(self, pipe: Pipe) -> Connection:
        """Accept a connection (raises ``ConnectionRefusedError`` while stopped)."""

    def receive(self, conn: Connection, frame: bytes) -> None:
        """A frame arrived from a component."""

    def detach(self, conn: Connection) -> None:
        """The component closed its connection, or the link was cut."""

    def backlog(self) -> int:
        """Frames received and not handled yet."""


@dataclass
class _Fault:
    action: Literal["drop", "delay", "duplicate", "reorder"]
    direction: Direction
    match: Match
    count: int | None
    delay: float = 0.0
    held: list[bytes] = field(default_factory=list)

    def matches(self, frame: bytes) -> bool:
        match = self.match
        if match is None:
            return True
        message = decode(frame)
        if isinstance(match, (type, tuple)):
            return isinstance(message, match)
        return bool(match(message))


class Link:
    """The connections of one component to the broker, and the faults injected on them."""

    def __init__(self, broker: BrokerSide) -> None:
        self._broker = broker
        self._faults: list[_Fault] = []
        self._refusing = False
        self.pipe: Pipe | None = None
        #: Connections made over this link so far.
        self.connections = 0

    # -- faults ---------------------------------------------------------------

    def drop(self, direction: Direction, match: Match = None, count: int | None = 1) -> None:
        """Lose the next ``count`` matching messages (``None``: all, until :meth:`heal`)."""
        self._add(_Fault("drop", direction, match, count))

    def delay(self, seconds: float, direction: Direction, match: Match = None,
              count: int | None = 1) -> None:
        """Deliver the next ``count`` matching messages ``seconds`` later (virtual time);
        lost if the connection ends meanwhile."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, not {seconds!r}")
        self._add(_Fault("delay", direction, match, count, seconds))

    def duplicate(self, direction: Direction, match: Match = None,
                  count: int | None = 1) -> None:
        """Deliver the next ``count`` matching messages twice."""
        self._add(_Fault("duplicate", direction, match, count))

    def reorder(self, direction: Direction, match: Match = None, count: int = 2) -> None:
        """Hold the next ``count`` matching messages, then deliver them in reverse order
        (others pass meanwhile)."""
        if count < 2:
            raise ValueError(f"reorder needs count >= 2, not {count!r}")
        self._add(_Fault("reorder", direction, match, count))

    def heal(self) -> None:
        """Remove every fault; messages held for a reorder are delivered as they are."""
        faults, self._faults = self._faults, []
        pipe = self.pipe
        for fault in faults:
            for frame in fault.held:
                if pipe is not None:
                    pipe.forward(fault.direction, frame)

    def cut(self) -> None:
        """End the current connection at once, on both sides (the component reconnects)."""
        if self.pipe is not None:
            self.pipe.close(None, "the link was cut")

    def refuse(self, refusing: bool = True) -> None:
        """Refuse (or accept again) new connections of this component."""
        self._refusing = refusing

    def _add(self, fault: _Fault) -> None:
        if fault.direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {fault.direction!r}")
        if fault.count is not None and fault.count < 1:
            raise ValueError(f"count must be >= 1 or None, not {fault.count!r}")
        if len(self._faults) >= MAX_FAULTS:
            raise ValueError(f"more than {MAX_FAULTS} faults on one link")
        self._faults.append(fault)

    def pass_frame(self, pipe: Pipe, direction: Direction, frame: bytes) -> None:
        """Carry ``frame`` through the faults of ``direction``."""
        for fault in self._faults:
            if fault.direction != direction or not fault.matches(frame):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count == 0 and fault.action != "reorder":
                    self._faults.remove(fault)
            if fault.action == "drop":
                return
            if fault.action == "duplicate":
                pipe.forward(direction, frame)
                pipe.forward(direction, frame)
            elif fault.action == "delay":
                pipe.loop.call_later(fault.delay, pipe.forward, direction, frame)
            else:
                fault.held.append(frame)
                if fault.count == 0:
                    self._faults.remove(fault)
                    for held in reversed(fault.held):
                        pipe.forward(direction, held)
            return
        pipe.forward(direction, frame)

    # -- connections ------------------------------------------------------------

    async def open(self, url: ComponentURL, options: Options) -> Transport:
        """Connect over this link (the ``opener`` of the component's driver)."""
        if self._refusing:
            raise ConnectionRefusedError("the link refuses connections")
        self.cut()
        pipe = Pipe(self, self._broker)
        self.pipe = pipe
        self.connections += 1
        return pipe.transport

    def ended(self, pipe: Pipe) -> None:
        """``pipe`` has closed: forget it."""
        if self.pipe is pipe:
            self.pipe = None
        for fault in self._faults:
            fault.held.clear()


class Pipe:
    """One connection: the component's transport at one end, a router connection at the other."""

    def __init__(self, link: Link, broker: BrokerSide) -> None:
        self._link = link
        self._broker = broker
        self.loop = broker.loop
        self.transport = MemoryTransport(self)
        self.open = True
        self.conn = broker.attach(self)

    def broker_backlog(self) -> int:
        """Frames the broker has not handled yet."""
        return self._broker.backlog()

    def send_up(self, frame: bytes) -> None:
        """A frame written by the component."""
        self._link.pass_frame(self, "up", frame)

    def send_down(self, frame: bytes) -> None:
        """A frame written by the broker."""
        self._link.pass_frame(self, "down", frame)

    def forward(self, direction: Direction, frame: bytes) -> None:
        """Hand ``frame`` to the other end, if the connection is still open."""
        if not self.open:
            return
        if direction == "up":
            self._broker.receive(self.conn, frame)
        elif not self.transport.feed(frame):
            self.close(CLOSE_SLOW_CONSUMER, "the component does not read")

    def close(self, code: int | None, reason: str, *, by_broker: bool = False) -> None:
        """End the connection; the broker hears of it unless it closed it itself."""
        if not self.open:
            return
        self.open = False
        self.transport.end(code, reason)
        self._link.ended(self)
        if not by_broker:
            self._broker.detach(self.conn)


class MemoryTransport(Transport):
    """The component's end of a :class:`Pipe`: a bounded queue of whole frames."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._inbox: list[bytes] = []
        self._ready = asyncio.Event()
        self._error: Exception | None = None

    def feed(self, frame: bytes) -> bool:
        """Queue a frame for the component; False when the queue is full."""
        if len(self._inbox) >= MAX_INBOX:
            return False
        self._inbox.append(frame)
        self._ready.set()
        return True

    def end(self, code: int | None, reason: str) -> None:
        """The connection ended: the frames queued are still read, then the error."""
        self._error = overwritten(code, reason) or ConnectionError(
            f"connection closed ({reason})" if code is None else
            f"connection closed by the broker (code {code}: {reason})")
        self._ready.set()

    def send(self, frames: list[bytes]) -> None:
        if self._error is not None:
            raise ConnectionError("the connection is closed")
        for frame in frames:
            self._pipe.send_up(frame)

    async def recv_many(self) -> list[bytes]:
        while not self._inbox:
            if self._error is not None:
                raise self._error
            self._ready.clear()
            await self._ready.wait()
        frames, self._inbox = self._inbox, []
        return frames

    async def drain(self) -> None:
        # Like a full socket buffer: a writer that never yields lets the broker catch up.
        while self._error is None and self._pipe.broker_backlog() > HIGH_WATER:
            await asyncio.sleep(0)

    async def close(self) -> None:
        self._pipe.close(None, "closed by the component")
