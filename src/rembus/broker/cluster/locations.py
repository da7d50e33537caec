"""Where each named component is connected: component name → broker id, in JetStream.

A broker places a component when it accepts its connection (after winning the
name's lease, see :mod:`.names`) and removes it when the connection ends. A
broker that wants to reach a component it does not hold — a direct call
``target/method`` — locates it here and sends to the subject of that broker,
or learns that the component is not connected anywhere.

Entries live in the bucket ``rembus_<cluster>_locations``. With a ``ttl`` an
entry also disappears that many seconds after its last placement, so that the
entries of a broker that died go away with its leases; the broker then places
its components again at each lease renewal. A removal only removes an entry
that still names the removing broker: a component that reconnected through
another broker meanwhile stays where it is.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from .kvstore import Bucket
from .subjects import SubjectSpace, encode_segment

#: Seconds an erase marker stays before the server drops it.
MARKER_TTL = 60
# Our removal races only with placements by other brokers: a few rounds settle it.
_ATTEMPTS = 3


class Locations:
    """The location registry of one cluster."""

    def __init__(self, bucket: Bucket, ttl: int | None = None) -> None:
        if ttl is not None and ttl < 1:
            raise ValueError("an entry lives at least one second")
        self.bucket = bucket
        self.ttl = ttl

    @classmethod
    async def open(cls, js: JetStreamContext, space: SubjectSpace, ttl: int | None = None,
                   replicas: int = 1) -> Locations:
        """The registry of cluster ``space``, creating its bucket if needed."""
        return cls(await Bucket.open(js, space.bucket("locations"), replicas), ttl)

    async def place(self, component: str, broker: str) -> None:
        """Record that ``component`` is connected through ``broker`` (again)."""
        await self.bucket.write(encode_segment(component), broker.encode(), None, self.ttl)

    async def locate(self, component: str) -> str | None:
        """The broker ``component`` is connected through, ``None`` if none is known."""
        entry = await self.bucket.get(encode_segment(component))
        return None if entry is None or entry.value is None else entry.value.decode()

    async def remove(self, component: str, broker: str) -> bool:
        """Forget ``component`` if it is still placed at ``broker``; whether it was."""
        key, value = encode_segment(component), broker.encode()
        for _ in range(_ATTEMPTS):
            entry = await self.bucket.get(key)
            if entry is None or entry.value != value:
                return False
            if await self.bucket.erase(key, entry.revision, MARKER_TTL):
                return True
        return False
