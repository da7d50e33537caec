"""Twins of named components in the cluster: one CBOR record per name in the ``twins`` bucket.

A record holds what a broker needs to take a component over from another:
its subscriptions (with their ``msg_from``: retroactive or not), exposed
methods, its delivery mark in the cluster's archive (with the seqs done above
it), the archive seq of each subscription and the QoS2 ids it published whose
ACK2 did not come yet.

Only the holder of the name's lease writes it, at the revision it read or last
wrote (compare-and-set): a former holder that lost the name cannot overwrite
its successor's record. Writes of one name are ordered with its lease
operations (:class:`~.logins.Logins`), so a record is stored before the lease
is released, and the next broker reads it after taking the lease.

Every broker watches the bucket (:meth:`TwinStore.watch_retro`) for the
retroactive subscriptions of the whole cluster: publications they match are
kept in the archive (:mod:`.archive`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import cbor2
import nats.errors
from nats.js import JetStreamContext

from rembus_proto.broker import Router
from rembus_proto.broker.state import Twin
from rembus_proto.store import TwinRecord
from rembus_proto.topics import tenant

from .kvstore import Bucket
from .subjects import SubjectSpace, decode_segment, encode_segment

log = logging.getLogger("rembus.broker.cluster")

#: Largest record (bytes); a bigger one is not stored (logged).
MAX_RECORD = 1024 * 1024 - 4096
#: Seconds before a failed watch of the twins starts again.
_RETRY = 1.0


def encode_twin(twin: Twin) -> bytes:
    """The cluster's record of ``twin``."""
    return cbor2.dumps({
        "subs": dict(twin.subs), "exposed": list(twin.exposed), "mark": twin.mark,
        "done": sorted(twin.done_above), "since": dict(twin.since),
        "qos2": list(twin.qos2_seen),
    })


def decode_twin(name: str, data: bytes) -> tuple[TwinRecord, list[bytes]]:
    """A record read back, and its QoS2 ids; ``ValueError`` when it is not one."""
    try:
        value: Any = cbor2.loads(data)
        subs = {str(topic): float(window) for topic, window in value["subs"].items()}
        record = TwinRecord(name, subs, [str(topic) for topic in value["exposed"]],
                            int(value["mark"]), [int(seq) for seq in value["done"]],
                            {str(topic): int(seq) for topic, seq in value["since"].items()})
        qos2 = [bytes(msg_id) for msg_id in value.get("qos2", ())]
    except (cbor2.CBORDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a twin record: {exc}") from exc
    return record, qos2


def retro_topics(record: TwinRecord) -> set[str]:
    """The retroactive subscriptions of a record."""
    return {topic for topic, window in record.subscriptions.items() if window > 0}


class TwinStore:
    """The twins bucket, as one broker reads and writes it."""

    def __init__(self, bucket: Bucket, router: Router) -> None:
        self.bucket = bucket
        self.router = router
        self._revisions: dict[str, int] = {}
        """Name -> revision of its record this broker read or wrote (0: none yet)."""
        self._written: dict[str, bytes] = {}
        """Name -> the record last written (a write of the same bytes is skipped)."""
        self.lost = 0
        """Writes refused because another broker wrote the record meanwhile."""

    @classmethod
    async def open(cls, js: JetStreamContext, space: SubjectSpace, router: Router,
                   replicas: int = 1) -> TwinStore:
        """The twins bucket of cluster ``space``, created if needed."""
        bucket = await Bucket.open(js, space.bucket("twins"), replicas,
                                   max_value_size=MAX_RECORD)
        return cls(bucket, router)

    async def load(self, name: str) -> tuple[TwinRecord | None, list[bytes]]:
        """The record of ``name`` (the caller just took its lease), remembered for writes."""
        entry = await self.bucket.get(encode_segment(name))
        if entry is None or entry.value is None:
            self._revisions[name] = 0 if entry is None else entry.revision
            return None, []
        self._revisions[name] = entry.revision
        self._written[name] = entry.value
        try:
            return decode_twin(name, entry.value)
        except ValueError as exc:
            log.warning("cluster: twin of %r unreadable, starting afresh: %s", name, exc)
            return None, []

    async def save(self, name: str) -> None:
        """Store the twin of ``name`` as the router has it now (if this broker holds it)."""
        revision = self._revisions.get(name)
        twin = self.router.twins.get(name)
        if revision is None or twin is None:
            return  # not loaded here (lease not ours), or forgotten
        held = len(twin.held_ack2)  # covered by this record: they go once it is stored
        data = encode_twin(twin)
        if data == self._written.get(name):
            self.router.twin_stored(name, held, time.monotonic())
            return
        if len(data) > MAX_RECORD:
            log.warning("cluster: twin of %r too large to store (%d bytes)", name, len(data))
            return
        written = await self.bucket.write(encode_segment(name), data, revision, None)
        if written is None:
            self.lost += 1
            log.warning("cluster: twin of %r written by another broker: not overwritten", name)
            self.forget(name)
            return
        self._revisions[name] = written
        self._written[name] = data
        self.router.twin_stored(name, held, time.monotonic())

    def forget(self, name: str) -> None:
        """``name`` is no longer ours (lease released or lost): no more writes."""
        self._revisions.pop(name, None)
        self._written.pop(name, None)

    async def watch_retro(self, js: JetStreamContext,
                          changed: Callable[[str, str, int], None]) -> None:
        """Follow every record; call ``changed(tenant, topic, ±1)`` as retroactive
        subscriptions appear and go in the cluster. Runs until cancelled; a watch
        that fails (NATS unreachable) starts again, from the values stored."""
        known: dict[str, set[str]] = {}
        while True:
            try:
                await self._watch(js, known, changed)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("cluster: watch of the twins interrupted, starting again: %s", exc)
            await asyncio.sleep(_RETRY)

    async def _watch(self, js: JetStreamContext, known: dict[str, set[str]],
                     changed: Callable[[str, str, int], None]) -> None:
        kv = await js.key_value(self.bucket.name)
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                continue  # the end of the values that were there
            name = decode_segment(entry.key)
            topics: set[str] = set()
            if entry.operation is None and entry.value:
                try:
                    topics = retro_topics(decode_twin(name, entry.value)[0])
                except ValueError:
                    topics = set()
            before = known.pop(name, set())
            if topics:
                known[name] = topics
            owner = tenant(name)
            for topic in topics - before:
                changed(owner, topic, 1)
            for topic in before - topics:
                changed(owner, topic, -1)


__all__ = ["MAX_RECORD", "TwinStore", "decode_twin", "encode_twin", "retro_topics"]
