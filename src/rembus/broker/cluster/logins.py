"""The names of one broker in its cluster: leases taken, waited for, taken over, given up.

The router asks (:class:`NeedLease`, :class:`LeaseReleased`); operations on
one name run in the order asked (a lock per name), operations on different
names at the same time. A name held by another broker is refused while that
broker lives (it answers on its inbox ``broker.<id>``); a dead holder cannot
give it up, so its lease is waited for until its TTL ends; with
``overwrite_connection`` a live holder is asked to close its connection
(4000 "overwritten") and give the name up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from rembus_proto.broker import CLOSE_OVERWRITTEN
from rembus_proto.broker.actions import LeaseReleased, NeedLease, TwinChanged
from rembus_proto.store import TwinRecord

from .config import BrokerPort, ClusterConfig
from .locations import Locations
from .names import LeaseLimit, NameLeases
from .subjects import SubjectError, SubjectSpace

if TYPE_CHECKING:
    from .archive import ClusterArchive
    from .twins import TwinStore

log = logging.getLogger("rembus.broker.cluster")

#: Close code of a connection whose name the cluster no longer grants us.
CLOSE_TRY_AGAIN = 1013
#: Lease operations (logins, releases) in progress at once; beyond it logins are refused.
MAX_LEASE_OPS = 10_000
_OVERWRITE = b"overwrite "
#: Times a broker asks holders of a name to give it up for one login.
_OVERWRITES = 3


class Logins:
    """Takes and gives up the names of one broker's components."""

    def __init__(self, broker: BrokerPort, config: ClusterConfig, space: SubjectSpace,
                 broker_id: str, nc: Client, leases: NameLeases,
                 locations: Locations) -> None:
        self.broker = broker
        self.router = broker.router
        self.config = config
        self.space = space
        self.broker_id = broker_id
        self.nc = nc
        self.leases = leases
        self.locations = locations
        self.tasks: set[asyncio.Task[None]] = set()
        """Operations in progress."""
        self.twins: TwinStore | None = None
        """Where twins are kept: loaded when a lease is won, saved in order with it."""
        self.archive: ClusterArchive | None = None
        """Its last seq starts a new twin's mark."""
        self._saves: set[str] = set()
        """Names with a twin save waiting (one is enough: it writes the latest state)."""
        self._name_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Name -> the lock that orders its operations, and the tasks using it."""

    def order(self, op: NeedLease | LeaseReleased | TwinChanged) -> None:
        """Run ``op`` after the earlier operations on the same name (one lock per name)."""
        if isinstance(op, TwinChanged):
            if op.name in self._saves or self.twins is None:
                return
            self._saves.add(op.name)
        if len(self.tasks) >= MAX_LEASE_OPS:
            if isinstance(op, NeedLease):
                self.router.lease_found(op.conn, op.name, "too many logins in progress",
                                        time.monotonic(), time.time())
                self.broker.schedule_flush()
            return  # a release not done: the name expires with its TTL
        lock, users = self._name_locks.get(op.name, (asyncio.Lock(), 0))
        self._name_locks[op.name] = (lock, users + 1)
        task = asyncio.create_task(self._run_lease_op(op, lock))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_lease_op(self, op: NeedLease | LeaseReleased | TwinChanged,
                            lock: asyncio.Lock) -> None:
        try:
            async with lock:
                if isinstance(op, NeedLease):
                    await self._login(op)
                elif isinstance(op, TwinChanged):
                    self._saves.discard(op.name)
                    await self._save(op.name)
                else:
                    await self._release(op.name)
        finally:
            users = self._name_locks[op.name][1] - 1
            if users:
                self._name_locks[op.name] = (lock, users)
            else:
                del self._name_locks[op.name]

    async def _login(self, op: NeedLease) -> None:
        refusal = await self._acquire(op.name)
        record: TwinRecord | None = None
        qos2: list[bytes] = []
        last_seq = 0
        if refusal is None and self.twins is not None and self.archive is not None:
            try:
                record, qos2 = await asyncio.wait_for(self.twins.load(op.name),
                                                      self.config.op_timeout)
                last_seq = await asyncio.wait_for(self.archive.last_seq(),
                                                  self.config.op_timeout)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("cluster: twin of %r not read: %s", op.name, exc)
                await self._release(op.name)
                refusal = "cluster unavailable, try again later"
        self.router.lease_found(op.conn, op.name, refusal, time.monotonic(), time.time(),
                                record, qos2, last_seq)
        self.broker.schedule_flush()

    async def _save(self, name: str) -> None:
        assert self.twins is not None
        try:
            await asyncio.wait_for(self.twins.save(name), self.config.op_timeout)
            self.broker.schedule_flush()  # ACK2s released by the stored mark
        except (SubjectError, nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("cluster: twin of %r not saved: %s", name, exc)

    async def _acquire(self, name: str) -> str | None:
        try:
            won = await asyncio.wait_for(self.leases.acquire(name, self.broker_id),
                                         self.config.op_timeout)
            if not won:
                won = await self._acquire_from_holder(name)
            if won:
                await asyncio.wait_for(self.locations.place(name, self.broker_id),
                                       self.config.op_timeout)
        except LeaseLimit as exc:
            return str(exc)
        except (SubjectError, ValueError) as exc:
            return f"name not usable in a cluster: {exc}"
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("cluster: lease of %r not taken: %s", name, exc)
            return "cluster unavailable, try again later"
        return None if won else "already connected"

    async def _acquire_from_holder(self, name: str) -> bool:
        """Take the lease of ``name`` from the broker holding it, when that is allowed.

        A holder whose inbox has no responder is dead: it cannot release the
        lease, which expires within the TTL; it is waited for. A live holder
        keeps it, unless ``overwrite_connection`` is on: it is then asked to
        close its connection (4000 "overwritten") and give the name up.
        """
        overwrite = self.router.config.overwrite_connection
        ask = _OVERWRITE + name.encode() if overwrite else b""
        deadline = time.monotonic() + self.config.lease_ttl + 1
        overwrites = 0
        holder = await self.leases.owner(name)
        while holder is not None and holder != self.broker_id:
            try:
                await self.nc.request(self.space.broker(holder), ask, timeout=1)
                overwrites += 1
                if not overwrite or overwrites > _OVERWRITES:
                    return False  # the holder lives: the name is really taken
            except nats.errors.NoRespondersError:
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(min(0.5, self.config.lease_ttl / 4))  # until its TTL ends
            except nats.errors.TimeoutError:
                return False  # slow, maybe alive: not ours to take
            if await self.leases.acquire(name, self.broker_id):
                return True
            holder = await self.leases.owner(name)
        return holder is None and await self.leases.acquire(name, self.broker_id)

    async def on_inbox(self, msg: Msg) -> None:
        """Another broker checks that this one is alive, or takes over a name."""
        if msg.data.startswith(_OVERWRITE):
            name = msg.data[len(_OVERWRITE):].decode(errors="replace")
            if self.router.config.overwrite_connection:
                log.info("cluster: %r connected through another broker: closing it here",
                         name)
                if self.twins is not None:  # the new holder's from now on
                    self.twins.forget(name)
                self.router.lease_lost(name, CLOSE_OVERWRITTEN, "overwritten")
                self.broker.schedule_flush()
                try:
                    await asyncio.wait_for(self.leases.release(name), self.config.op_timeout)
                except (nats.errors.Error, asyncio.TimeoutError) as exc:
                    log.warning("cluster: lease of %r not released: %s", name, exc)
        if msg.reply:
            await msg.respond(b"")

    async def _release(self, name: str) -> None:
        if self.twins is not None:
            self.twins.forget(name)
        try:
            await asyncio.wait_for(self.leases.release(name), self.config.op_timeout)
            await asyncio.wait_for(self.locations.remove(name, self.broker_id),
                                   self.config.op_timeout)
        except (SubjectError, nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("cluster: lease of %r not released (it expires): %s", name, exc)

    def lost(self, name: str) -> None:
        """The lease of ``name`` was lost (not renewed in time, or taken): close its user."""
        log.warning("cluster: lease of %r lost: closing its connection", name)
        if self.twins is not None:
            self.twins.forget(name)
        self.router.lease_lost(name, CLOSE_TRY_AGAIN, "name lease lost, try again later")
        self.broker.schedule_flush()


__all__ = ["CLOSE_TRY_AGAIN", "MAX_LEASE_OPS", "Logins"]
