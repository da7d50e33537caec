"""The cluster's archive: one JetStream stream of kept publications, and replays from it.

Kept publications (:class:`~rembus_proto.broker.actions.Forward` with
``kept``: QoS1/2, or matched by a retroactive subscription somewhere in the
cluster) are written with a JetStream publish on
``pub.kept.<tenant>.<topic>`` into the stream ``rembus_<c>_archive``; its
sequence is the archive seq of the whole cluster (one order), which marks
count in. QoS1/2 ones carry ``Nats-Msg-Id`` = publisher + message id, so a
resend within the stream's duplicate window is stored once (and reported as
a duplicate: it is not delivered live a second time).

Retention, from the broker's options: ``max_age`` = ``--retention-max-age``,
``max_msgs_per_subject`` = ``--retention-max-messages`` (a subject is one
tenant's topic), ``max_bytes`` = ``--retention-max-total-bytes``; the
per-topic byte budget has no JetStream counterpart. The first broker creates
the stream; the others use it as it is.

A replay (:class:`~rembus_proto.broker.actions.NeedReplay` of a named twin
with retroactive subscriptions) reads through an ephemeral pull consumer
filtered to those subscriptions, from the twin's mark: the request is answered
once there is at least one message, so the replay of a connected twin follows
the archive for as long as it is connected (its consumer is deleted when the
twin goes, and would expire on its own if this broker died).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from rembus_proto.broker import Router
from rembus_proto.broker.actions import Forward, NeedReplay
from rembus_proto.broker.state import Twin
from rembus_proto.constants import QOS_MASK
from rembus_proto.store import StoredMessage

from .subjects import SubjectError, SubjectSpace, decode_segment, encode_segment

log = logging.getLogger("rembus.broker.cluster")

_PUBLISHER = "Rembus-Publisher"
_FLAGS = "Rembus-Flags"
_ID = "Rembus-Id"
_MSG_ID = "Nats-Msg-Id"
#: Marks a live publication that the archive stored too.
KEPT_HEADER = "Rembus-Kept"
#: Seconds a resend of a QoS1/2 publication is recognised as one (the stream's window).
DUPLICATE_WINDOW = 120.0
#: Seconds one pull waits before the replay checks that its twin is still there.
_POLL = 1.0
#: Seconds an abandoned replay consumer lives on the server (its broker died).
_INACTIVE = 60.0


@dataclass(frozen=True)
class Stored:
    """The archive's answer to a kept publication."""

    seq: int
    duplicate: bool


def headers_of(order: Forward) -> dict[str, str]:
    """What a kept publication carries besides its payload."""
    publisher = encode_segment(order.publisher)
    headers = {_PUBLISHER: publisher, _FLAGS: str(order.flags)}
    if order.msg_id is not None:
        headers[_ID] = order.msg_id.hex()
        if order.flags & QOS_MASK:
            headers[_MSG_ID] = f"{publisher}.{order.msg_id.hex()}"
    return headers


def publication_of(headers: dict[str, str]) -> tuple[int, bytes | None]:
    """``(flags, msg_id)`` of a publication's headers (0 and ``None`` when absent)."""
    try:
        flags = int(headers.get(_FLAGS, "0"))
        raw = headers.get(_ID)
        return flags, bytes.fromhex(raw) if raw else None
    except ValueError:
        return 0, None


class _Feed:
    """The consumer a connected twin's replay reads through."""

    def __init__(self, name: str, filters: list[str],
                 sub: JetStreamContext.PullSubscription, position: int) -> None:
        self.name = name
        self.filters = filters
        self.sub = sub
        self.position = position
        """The seq the consumer delivers next, at the earliest."""


class ClusterArchive:
    """The archive stream of one cluster, as one broker writes and reads it."""

    def __init__(self, js: JetStreamContext, space: SubjectSpace, router: Router,
                 flush: Callable[[], None], stream: str) -> None:
        self.js = js
        self.space = space
        self.router = router
        self.flush = flush
        self.stream = stream
        self.feeds: dict[Twin, _Feed] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._running: dict[Twin, asyncio.Task[None]] = {}
        """The replay request being answered, per twin (one at a time)."""
        self.not_archived = 0
        """Kept publications the archive did not confirm (QoS0 ones went out live anyway)."""

    @classmethod
    async def open(cls, js: JetStreamContext, space: SubjectSpace, router: Router,
                   flush: Callable[[], None], replicas: int = 1) -> ClusterArchive:
        """The archive of cluster ``space``, created with the router's retention if needed."""
        config = router.config
        name = space.bucket("archive")
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(api.StreamConfig(
                name=name, subjects=[space.archive()], retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE, num_replicas=replicas,
                max_age=config.retention_max_age,
                max_msgs_per_subject=config.retention_max_per_topic,
                max_bytes=config.retention_max_total_bytes,
                duplicate_window=min(DUPLICATE_WINDOW, config.retention_max_age)))
        return cls(js, space, router, flush, name)

    async def last_seq(self) -> int:
        """The seq of the newest message of the archive (0 when empty)."""
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    # -- writing -----------------------------------------------------------------

    async def keep(self, order: Forward) -> Stored:
        """Write one kept publication; raises ``nats.errors.Error`` when not stored."""
        subject = self.space.publish(order.tenant, order.topic, kept=True)
        ack = await self.js.publish(subject, order.payload, headers=headers_of(order),
                                    stream=self.stream)
        return Stored(ack.seq, bool(ack.duplicate))

    async def keep_all(self, orders: list[Forward]) -> list[Stored | None]:
        """Write publications (in this order: one connection keeps it); ``None`` for
        those not stored (counted)."""
        results = await asyncio.gather(*(self.keep(order) for order in orders),
                                       return_exceptions=True)
        stored: list[Stored | None] = []
        for order, result in zip(orders, results, strict=True):
            if isinstance(result, Stored):
                stored.append(result)
                continue
            if not isinstance(result, nats.errors.Error | SubjectError | asyncio.TimeoutError):
                raise result
            self.not_archived += 1
            if self.not_archived % 1000 == 1:
                log.warning("cluster: publication on %r not archived (%d so far): %s",
                            order.topic[:80], self.not_archived, result)
            stored.append(None)
        return stored

    def settle(self, order: Forward, stored: Stored | None) -> dict[str, str] | None:
        """After the archive's answer about a kept publication: acknowledge a QoS1/2
        one that is stored, and give the headers to send it live with (``None``: not
        to be sent live: a resend the archive had already, or a QoS1/2 publication
        not stored, which its publisher sends again)."""
        router = self.router
        qos = order.conn is not None and order.msg_id is not None and order.flags & QOS_MASK
        if stored is None:
            return None if qos else headers_of(order)  # QoS0: live, not archived
        router.archive_seq(stored.seq)
        if qos:
            assert order.conn is not None and order.msg_id is not None
            router.cluster_acked(order.conn, order.msg_id, time.monotonic())
        if stored.duplicate:
            return None
        headers = headers_of(order)
        headers[KEPT_HEADER] = "1"  # its retroactive subscribers read it from the archive
        return headers

    # -- replays -----------------------------------------------------------------

    def replay(self, request: NeedReplay) -> None:
        """Answer ``request`` once the archive has something for it."""
        twin = request.twin
        previous = self._running.get(twin)
        task = asyncio.create_task(self._replay(request, previous))
        self._running[twin] = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda done: self._done(twin, done))

    def _done(self, twin: Twin, task: asyncio.Task[None]) -> None:
        if self._running.get(twin) is task:
            del self._running[twin]
        error = None if task.cancelled() else task.exception()
        if error is not None:  # unexpected: expected failures are retried in _replay
            log.error("cluster: replay of %r failed, closing its connection: %r", twin.name,
                      error, exc_info=error)
            if twin.conn is not None:
                self.router.serve_failed(twin.conn, "replay failed, try again")
                self.flush()

    @staticmethod
    def _stale(request: NeedReplay) -> bool:
        twin = request.twin
        return (twin.conn is None or request.token != twin.replay_token
                or not twin.replay_waiting)

    def _filters(self, twin: Twin) -> list[str]:
        filters = set()
        for topic in twin.retroactive_topics():
            try:
                filters.add(self.space.subscription(twin.tenant, topic, kept=True).subject)
            except SubjectError:
                continue
        return sorted(filters)

    async def _replay(self, request: NeedReplay, previous: asyncio.Task[None] | None) -> None:
        twin = request.twin
        if previous is not None:
            if not previous.done():  # a request that went stale (the replay started over)
                previous.cancel()
                await asyncio.gather(previous, return_exceptions=True)
            # after a batch answered, the next request reads on through the same consumer
            if previous.cancelled() or previous.exception() is not None:
                await self.close(twin)  # where it stopped reading is not known: start afresh
        while not self._stale(request):
            try:
                batch = await self._next_batch(request)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("cluster: replay of %r interrupted, trying again: %s", twin.name,
                            exc)
                await self.close(twin)
                await asyncio.sleep(_POLL)  # JetStream unreachable or electing a leader
                continue
            if batch is None or self._stale(request):
                continue
            self.router.replay_batch(request, batch, time.monotonic(), time.time())
            self.flush()
            return
        await self.close(twin)

    async def _next_batch(self, request: NeedReplay) -> list[StoredMessage] | None:
        """The next messages owed to the twin of ``request`` (empty: it has no retroactive
        subscription left); ``None`` when there is nothing yet."""
        feed = await self._feed(request.twin, request.after_seq + 1)
        if feed is None:
            if not request.twin.retroactive_topics():
                return []
            await asyncio.sleep(_POLL)  # only topics no subject can carry: nothing to read
            return None
        try:
            msgs = await feed.sub.fetch(request.limit, timeout=_POLL)
        except nats.errors.TimeoutError:
            return None
        if not msgs:  # nats-py's answer when the pull request ended with a status (expired)
            return None
        batch = self._batch(msgs, request.max_bytes)
        last = msgs[-1].metadata.sequence.stream
        # cut by the byte budget (or a message skipped): read again from there next time
        feed.position = last + 1 if batch and batch[-1].seq == last else 0
        if batch:
            self.router.archive_seq(batch[-1].seq)
        return batch or None

    async def _feed(self, twin: Twin, start: int) -> _Feed | None:
        filters = self._filters(twin)
        feed = self.feeds.get(twin)
        if feed is not None and feed.filters == filters and feed.position == start:
            return feed
        await self.close(twin)
        if not filters:
            return None
        name = uuid.uuid4().hex
        config = api.ConsumerConfig(
            name=name, filter_subjects=filters, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(start, 1), ack_policy=api.AckPolicy.NONE,
            inactive_threshold=_INACTIVE, mem_storage=True, num_replicas=1)
        await self.js.add_consumer(self.stream, config)
        sub = await self.js.pull_subscribe_bind(name=name, stream=self.stream)
        feed = self.feeds[twin] = _Feed(name, filters, sub, start)
        return feed

    async def close(self, twin: Twin) -> None:
        """Stop reading for ``twin`` (it left, or reads from elsewhere now)."""
        feed = self.feeds.pop(twin, None)
        if feed is None:
            return
        try:
            await feed.sub.unsubscribe()
            await self.js.delete_consumer(self.stream, feed.name)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.debug("cluster: replay consumer %s not deleted (it expires): %s", feed.name, exc)

    def _batch(self, msgs: list[Msg], max_bytes: int | None) -> list[StoredMessage]:
        batch: list[StoredMessage] = []
        size = 0
        for msg in msgs:
            if max_bytes is not None and batch and size + len(msg.data) > max_bytes:
                break
            size += len(msg.data)
            try:
                _, topic, _ = self.space.parse_publish(msg.subject)
            except SubjectError:
                continue
            headers = msg.headers or {}
            flags, msg_id = publication_of(headers)
            meta = msg.metadata
            publisher = decode_segment(headers.get(_PUBLISHER, "_"))
            batch.append(StoredMessage(meta.sequence.stream,
                                       int(meta.timestamp.timestamp() * 1e9), topic, flags,
                                       msg_id, msg.data, publisher))
        return batch


__all__ = ["DUPLICATE_WINDOW", "KEPT_HEADER", "ClusterArchive", "Stored", "headers_of",
           "publication_of"]
