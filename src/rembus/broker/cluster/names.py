"""One name, one connection, cluster-wide: leases on component names in JetStream.

A broker that accepts a named component first acquires the lease of the name;
only one owner (a broker and one of its connections, spelled as one string)
holds it at a time, whichever node of the NATS cluster each broker talks to.
The lease is a key of the bucket ``rembus_<cluster>_names`` whose value is the
owner and which the server removes ``ttl`` seconds after its last write:

* :meth:`NameLeases.acquire` creates the key when it is absent (expected
  revision 0), or replaces an erased one, or one already written by the same
  owner; it fails while another owner's lease lives;
* :meth:`NameLeases.renew` rewrites it at the revision this object last
  wrote, well within ``ttl`` (every :attr:`NameLeases.renew_interval`); a
  renewal that finds another revision means the lease was lost;
* :meth:`NameLeases.release` erases it (at that revision) when the component
  disconnects;
* a broker that dies stops renewing, and the server expires its leases after
  ``ttl`` seconds: the names are free again.

Per-key TTLs need nats-server 2.11 or later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext

from .kvstore import Bucket
from .subjects import SubjectSpace, encode_segment

#: Seconds a lease lives after its last renewal, unless configured otherwise.
DEFAULT_TTL = 10
#: Leases one broker may hold, unless configured otherwise.
DEFAULT_MAX_HELD = 100_000
# A write can lose a race to an expiry or a release between our read and our
# write; beyond a few rounds someone else is active on the name, and we lose.
_ATTEMPTS = 3


class LeaseLimit(RuntimeError):
    """This broker already holds its maximum number of leases."""


@dataclass
class _Held:
    owner: bytes
    revision: int
    sent_at: float
    """Event-loop time when the write that set ``revision`` was sent."""


class NameLeases:
    """The leases this broker holds, in the names bucket of its cluster."""

    def __init__(self, bucket: Bucket, ttl: int = DEFAULT_TTL,
                 max_held: int = DEFAULT_MAX_HELD) -> None:
        if ttl < 1:
            raise ValueError("a lease lives at least one second")
        self.bucket = bucket
        self.ttl = ttl
        self.max_held = max_held
        self._held: dict[str, _Held] = {}

    @classmethod
    async def open(cls, js: JetStreamContext, space: SubjectSpace, ttl: int = DEFAULT_TTL,
                   replicas: int = 1, max_held: int = DEFAULT_MAX_HELD) -> NameLeases:
        """The leases of cluster ``space``, creating its bucket if needed."""
        return cls(await Bucket.open(js, space.bucket("names"), replicas), ttl, max_held)

    @property
    def renew_interval(self) -> float:
        """How often to call :meth:`renew_all`: a third of the TTL."""
        return self.ttl / 3

    @property
    def held(self) -> dict[str, str]:
        """Name → owner of the leases this object believes it holds."""
        return {name: held.owner.decode() for name, held in self._held.items()}

    async def acquire(self, name: str, owner: str) -> bool:
        """Take the lease of ``name`` for ``owner``; false while someone else holds it."""
        if name not in self._held and len(self._held) >= self.max_held:
            raise LeaseLimit(f"already {self.max_held} leases held")
        key, value = encode_segment(name), owner.encode()
        held = self._held.get(name)
        expected = held.revision if held is not None and held.owner == value else 0
        for _ in range(_ATTEMPTS):
            sent_at = asyncio.get_running_loop().time()
            revision = await self.bucket.write(key, value, expected, self.ttl)
            if revision is not None:
                self._held[name] = _Held(value, revision, sent_at)
                return True
            entry = await self.bucket.get(key)
            if entry is not None and entry.value not in (None, value):
                break
            expected = 0 if entry is None else entry.revision
        if held is not None and held.owner == value:
            self._forget(name, held)  # we believed it ours: it was lost
        return False

    async def renew(self, name: str) -> bool:
        """Extend the lease of ``name``; false (and forgotten) if it was lost meanwhile."""
        held = self._held.get(name)
        if held is None:
            return False
        sent_at = asyncio.get_running_loop().time()
        revision = await self.bucket.write(encode_segment(name), held.owner, held.revision,
                                           self.ttl)
        if revision is None:
            self._forget(name, held)
            return False
        held.revision, held.sent_at = revision, sent_at
        return True

    def deadline(self, name: str) -> float | None:
        """Event-loop time after which the lease of ``name`` counts as lost unless renewed.

        The server frees a name ``ttl`` seconds after it stored the last write;
        counting from when that write was *sent*, and keeping one renewal
        interval in hand, the broker gives a name up before anyone else can get it.
        """
        held = self._held.get(name)
        return None if held is None else held.sent_at + self.ttl - self.renew_interval

    async def keep_renewed(self, on_lost: Callable[[str], object]) -> None:
        """Renew every lease each :attr:`renew_interval`, until cancelled.

        A lease is lost when a renewal finds another revision, or when no
        renewal succeeded before its :meth:`deadline` (NATS unreachable,
        JetStream without quorum): it is forgotten and ``on_lost(name)`` is
        called, so that the broker closes that component's connection.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.renew_interval)
            for name, held in list(self._held.items()):
                if self._held.get(name) is not held:
                    continue  # released (or lost and taken again) while we renewed others
                deadline = held.sent_at + self.ttl - self.renew_interval
                try:
                    renewed = await asyncio.wait_for(self.renew(name), deadline - loop.time())
                except (nats.errors.Error, asyncio.TimeoutError):
                    renewed = loop.time() < deadline  # try again next round, while there is time
                if not renewed:
                    self._forget(name, held)
                    on_lost(name)

    def _forget(self, name: str, held: _Held) -> None:
        if self._held.get(name) is held:
            del self._held[name]

    async def renew_all(self) -> list[str]:
        """Renew every lease held; the names whose lease was lost."""
        return [name for name in list(self._held) if not await self.renew(name)]

    async def release(self, name: str) -> bool:
        """Give the lease of ``name`` up; false if it was not held (any more)."""
        held = self._held.pop(name, None)
        if held is None:
            return False
        return await self.bucket.erase(encode_segment(name), held.revision, self.ttl)

    async def release_all(self) -> None:
        """Give every lease up (a broker shutting down cleanly)."""
        for name in list(self._held):
            await self.release(name)

    async def owner(self, name: str) -> str | None:
        """Who holds the lease of ``name`` now, as the cluster sees it."""
        entry = await self.bucket.get(encode_segment(name))
        return None if entry is None or entry.value is None else entry.value.decode()
