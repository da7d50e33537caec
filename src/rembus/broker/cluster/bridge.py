"""The cluster driver: a broker's router joined to the other brokers through NATS.

The router decides (see :mod:`rembus_proto.broker.cluster`); this module
carries its cluster actions out with a nats-py client on the broker's event
loop, and brings back what other brokers send:

* :class:`InterestChanged` → NATS subscriptions, one per distinct (tenant,
  topic or pattern) wanted here (:mod:`.subjects`), one queue subscription per
  (tenant, method) exposed by a connected component, one per named component
  connected here (``direct.<name>``);
* :class:`Forward` → a publication on ``pub.live.<tenant>.<topic>``, on a
  connection with ``no_echo``: a broker never hears its own publications, and
  what arrives from NATS is delivered locally only (never forwarded again);
* :class:`RemoteCall` → a NATS request on ``rpc.<tenant>.<method>`` (queue
  group: NATS picks one of the brokers that expose it) or
  ``direct.<target>``; "no responders" is the error the one broker would give
  (42 method not found, 45/46 target not found or down); a request nobody
  answers within the call timeout is not answered, as on one broker;
* :class:`NeedLease` / :class:`LeaseReleased` → the name leases
  (:mod:`.logins` over :mod:`.names`), renewed in the background; a lease
  lost closes the connection that held it (1013, try again later);
* :class:`TwinChanged` → the twin's record in the twins bucket (:mod:`.twins`),
  in order with the lease operations of its name;
* a kept :class:`Forward` → first the archive (:mod:`.archive`), then, unless
  the archive had it already (a resend), ``pub.live`` with a ``kept`` mark;
  a QoS1/2 publication is acknowledged to its publisher once stored;
* :class:`NeedReplay` → read from the archive (:mod:`.archive`);
* :class:`SaveKey`, key lookups and the security port → the security shared
  by the cluster (:mod:`.security`);
* with the policy ``less_busy``, load reports and the broker a call goes to
  (:mod:`.load`).

Every queue here has a bound: publications waiting for NATS
(:attr:`ClusterConfig.max_outbox`, beyond it they are dropped and counted),
requests in flight (the router's ``max_pending_calls_total``), requests from
other brokers waiting for their answer (the same bound). A publication can
reach one broker through two subscriptions of it (a topic and a pattern):
publications carry the publishing broker's id and a sequence number, and a
bounded window of recent ones drops the second copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from rembus.security.file_security import FileSecurity
from rembus_proto import cbor
from rembus_proto.broker import Connection
from rembus_proto.broker.actions import (
    ClusterOrder,
    Forward,
    InterestChanged,
    LeaseReleased,
    NeedKey,
    NeedReplay,
    RemoteCall,
    SaveKey,
    TwinChanged,
)
from rembus_proto.broker.cluster import DIRECT, RPC, SUB
from rembus_proto.constants import Status
from rembus_proto.messages import Response, decode

from .archive import KEPT_HEADER, ClusterArchive, Stored, publication_of
from .config import BrokerPort, ClusterConfig, parse_servers
from .load import LoadBoard
from .locations import Locations
from .logins import CLOSE_TRY_AGAIN, Logins
from .names import NameLeases
from .security import ClusterSecurity
from .subjects import RPC_QUEUE, SubjectError, SubjectSpace
from .twins import TwinStore

log = logging.getLogger("rembus.broker.cluster")

_ORIGIN = "Rembus-Origin"
_SEQ = "Rembus-Seq"
_STATUS = "Rembus-Status"
_TOPIC = "Rembus-Topic"
#: Publications written to NATS (and kept ones to the archive) in one round.
_BATCH = 256
_SEEN_WINDOW = 8192
#: Rounds over the NATS servers before giving up at the start.
_START_ROUNDS = 2


class ClusterBridge:
    """Runs one broker's part of the cluster; :meth:`start`, then :meth:`stop`."""

    def __init__(self, broker: BrokerPort, config: ClusterConfig) -> None:
        self.broker = broker
        self.router = broker.router
        self.config = config
        self.space = SubjectSpace(config.name)
        self.broker_id = uuid.uuid4().hex
        """Fresh at every start: a restarted broker never takes old leases for its own."""
        self.nc: Client | None = None
        self.logins: Logins | None = None
        self.archive: ClusterArchive | None = None
        self.security: ClusterSecurity | None = None
        self.loads: LoadBoard | None = None
        """Set when the policy is ``less_busy``."""
        self.dropped = 0
        """Publications not sent to the cluster (outbox full, or no NATS connection)."""
        self._subs: dict[tuple[str, str, str], Subscription] = {}
        self._wanted: dict[tuple[str, str, str], None] = {}
        self._outbox: deque[tuple[str, bytes, dict[str, str]] | Forward] = deque()
        self._wake = asyncio.Event()
        self._seq = 0
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._replies: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._token = 0
        self._calls: set[asyncio.Task[None]] = set()
        self._calls_of: dict[Connection, int] = {}
        """Requests in flight in the cluster per local connection."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # -- life ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to NATS, open the buckets and join the router; raises on failure."""
        # A few rounds over the servers to start; once in, reconnect for ever (nats-py
        # reads the option at each attempt).
        self.nc = await nats.connect(servers=list(self.config.servers), no_echo=True,
                                     name=f"rembus broker {self.broker_id}",
                                     max_reconnect_attempts=_START_ROUNDS,
                                     reconnect_time_wait=0.5, connect_timeout=5,
                                     error_cb=self._nats_error,
                                     disconnected_cb=self._nats_disconnected,
                                     reconnected_cb=self._nats_reconnected)
        self.nc.options["max_reconnect_attempts"] = -1
        try:
            js = self.nc.jetstream()
            leases = await NameLeases.open(js, self.space, self.config.lease_ttl,
                                           self.config.replicas)
            locations = await Locations.open(js, self.space, self.config.lease_ttl,
                                             self.config.replicas)
            twins = await TwinStore.open(js, self.space, self.router, self.config.replicas)
            archive = self.archive = await ClusterArchive.open(
                js, self.space, self.router, self.broker.schedule_flush, self.config.replicas)
            seed = self.broker.security
            security = self.security = await ClusterSecurity.open(
                js, self.space, self.broker, self.config,
                seed if isinstance(seed, FileSecurity) else None)
        except BaseException:
            await self.nc.close()
            raise
        self.router.use_security(security, deferred_keys=True)
        self.broker.security = security
        logins = self.logins = Logins(self.broker, self.config, self.space, self.broker_id,
                                      self.nc, leases, locations)
        logins.twins, logins.archive = twins, archive
        self.router.join_cluster()
        self.broker.cluster = self
        await self.nc.subscribe(self.space.broker(self.broker_id), cb=logins.on_inbox)
        self._tasks = [asyncio.create_task(self._send_loop()),
                       asyncio.create_task(leases.keep_renewed(logins.lost)),
                       asyncio.create_task(twins.watch_retro(js, self.router.cluster_retro))]
        if self.router.config.policy == "less_busy":
            loads = self.loads = LoadBoard(self.router, self.space, self.broker_id,
                                           self.config.load_interval)

            async def on_call(tenant: str, msg: Msg) -> None:
                self._on_request(tenant, None, msg)
            await loads.subscribe(self.nc, on_call)
            self._tasks.append(asyncio.create_task(loads.keep_reporting(
                lambda: [(t, m) for kind, t, m in self._wanted if kind == RPC],
                lambda subject, payload, headers: self._send((subject, payload, headers)))))
        self.broker.schedule_flush()
        log.info("broker %s joined cluster %r through %s", self.broker_id, self.config.name,
                 ", ".join(self.config.servers))

    async def _nats_error(self, error: Exception) -> None:
        log.debug("cluster: NATS: %s: %s", type(error).__name__, error)

    async def _nats_disconnected(self) -> None:
        if not self._stopped:
            log.warning("cluster: NATS connection lost; reconnecting")

    async def _nats_reconnected(self) -> None:
        nc = self.nc
        log.info("cluster: NATS connection back (%s)",
                 nc.connected_url.netloc if nc is not None and nc.connected_url else "?")

    async def stop(self) -> None:
        """Store the twins of the components that left, give every name up, leave NATS."""
        logins = self.logins
        if not self._stopped and logins is not None:
            for event in self.router.events():  # the last turn of a broker that stops
                if isinstance(event, TwinChanged | LeaseReleased):
                    logins.order(event)
            if logins.tasks:
                await asyncio.wait(logins.tasks, timeout=self.config.op_timeout)
        self._stopped = True
        archive_tasks = self.archive.tasks if self.archive is not None else ()
        tasks = [*self._tasks, *self._calls, *(logins.tasks if logins else ()),
                 *archive_tasks]
        for task in tasks:
            task.cancel()
        self._wake.set()  # a loop whose cancellation was lost (see _send_loop) ends too
        if tasks:
            # bounded: on Python 3.11 asyncio.wait_for can swallow a cancellation
            # that arrives as its inner operation completes
            await asyncio.wait(tasks, timeout=self.config.op_timeout)
        self._tasks = []
        if self.security is not None:
            await self.security.stop()
        nc = self.nc
        if nc is None:
            return
        if logins is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(logins.leases.release_all(), self.config.op_timeout)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("cluster: names not released (they expire with their TTL): %s",
                            exc)
        if not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), self.config.op_timeout)
            except (nats.errors.Error, asyncio.TimeoutError, ConnectionError):
                await nc.close()
        self.nc = None

    # -- from the router ---------------------------------------------------------

    def handle(self, order: ClusterOrder | NeedReplay) -> None:
        """Carry out one cluster order of the router (called during the broker's turn)."""
        if self._stopped:
            return  # leaving: the names are released by stop(), nothing else goes out
        if isinstance(order, NeedReplay):
            if self.archive is not None:
                self.archive.replay(order)
        elif isinstance(order, Forward):
            self._forward(order)
        elif isinstance(order, InterestChanged):
            key = (order.kind, order.tenant, order.topic)
            if order.present:
                self._wanted[key] = None
            else:
                self._wanted.pop(key, None)
            self._wake.set()
        elif isinstance(order, RemoteCall):
            self._remote_call(order)
        elif isinstance(order, SaveKey):
            if self.security is not None:
                self.security.save_key_order(order)
        elif self.logins is not None:
            self.logins.order(order)

    def defer_key(self, request: NeedKey) -> bool:
        """A key lookup the shared security cache cannot answer reads the cluster."""
        return self.security is not None and self.security.defer_key(request)

    def status(self) -> dict[str, Any]:
        """What ``/status.json`` shows of the cluster."""
        loads = self.loads
        return {"broker_id": self.broker_id, "name": self.config.name,
                "dropped": self.dropped,
                "loads": loads.snapshot(time.monotonic()) if loads is not None else []}

    def output(self, conn: Connection, frames: list[bytes]) -> None:
        """Answers the router queued on a pseudo-connection: back to the asking broker."""
        limits = self.router.config.limits
        for frame in frames:
            try:
                message = decode(frame, limits)
            except Exception:  # our own output: never expected
                log.exception("cluster: cannot read an answer for another broker")
                continue
            if not isinstance(message, Response):
                continue
            entry = self._replies.pop(message.id, None)
            if entry is not None:
                self._send((entry[0], message.data.raw, {_STATUS: str(message.status)}))

    def _forward(self, order: Forward) -> None:
        try:
            subject = self.space.publish(order.tenant, order.topic)
        except SubjectError as exc:
            self.dropped += 1
            log.warning("cluster: publication on %r not forwarded: %s", order.topic[:80], exc)
            return
        if order.kept:  # archived first, then sent live (see _send_batch)
            self._send(order)
            return
        self._seq += 1
        self._send((subject, order.payload, {_ORIGIN: self.broker_id, _SEQ: str(self._seq)}))

    def _send(self, item: tuple[str, bytes, dict[str, str]] | Forward) -> None:
        if len(self._outbox) >= self.config.max_outbox:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("cluster: outbox full, %d messages dropped so far", self.dropped)
            return  # a QoS1/2 publisher is not acknowledged: it sends it again
        self._outbox.append(item)
        self._wake.set()

    def _remote_call(self, order: RemoteCall) -> None:
        config = self.router.config
        now = time.monotonic()
        if len(self._calls) >= config.max_pending_calls_total:
            self._answer(order.conn, order.msg_id, Status.GENERIC_ERROR,
                         "too many requests in flight in the cluster", now)
            return
        if self._calls_of.get(order.conn, 0) >= config.max_pending_calls:
            self._answer(order.conn, order.msg_id, Status.GENERIC_ERROR,
                         "too many requests in flight", now)
            return
        try:
            subjects = ([self.space.direct(order.target)] if order.target is not None
                        else [self.space.rpc(order.tenant, order.topic)])
            chosen = (self.loads.pick(order.tenant, order.topic, now)
                      if self.loads is not None and order.target is None else None)
            if chosen is not None:  # less_busy; the queue group if it is gone
                subjects.insert(0, self.space.rpc_at(chosen, order.tenant, order.topic))
        except SubjectError as exc:
            self._answer(order.conn, order.msg_id, Status.GENERIC_ERROR, str(exc), now)
            return
        task = asyncio.create_task(self._call(order, subjects, config.call_timeout))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        self._calls_of[order.conn] = self._calls_of.get(order.conn, 0) + 1

    async def _call(self, order: RemoteCall, subjects: list[str], timeout: float) -> None:
        try:
            await self._request(order, subjects, timeout)
        finally:
            left = self._calls_of.pop(order.conn) - 1
            if left:
                self._calls_of[order.conn] = left

    async def _request(self, order: RemoteCall, subjects: list[str], timeout: float) -> None:
        assert self.nc is not None
        try:
            answer = await self.nc.request(subjects[0], order.data, timeout=timeout,
                                           headers={_TOPIC: order.topic})
        except nats.errors.NoRespondersError:
            if len(subjects) > 1:
                await self._request(order, subjects[1:], timeout)
                return
            self._answer(order.conn, order.msg_id, order.missing, order.missing_value,
                         time.monotonic())
            return
        except nats.errors.TimeoutError:
            return  # as on one broker: the caller's own timeout tells it
        except nats.errors.MaxPayloadError:
            self._answer(order.conn, order.msg_id, Status.GENERIC_ERROR,
                         f"{order.topic}: request larger than the cluster's NATS max_payload",
                         time.monotonic())
            return
        except nats.errors.Error as exc:
            self._answer(order.conn, order.msg_id, Status.METHOD_UNAVAILABLE,
                         f"{order.topic}: cluster unreachable ({type(exc).__name__})",
                         time.monotonic())
            return
        status = int((answer.headers or {}).get(_STATUS, Status.GENERIC_ERROR))
        if len(subjects) > 1 and status in (Status.METHOD_NOT_FOUND, Status.METHOD_UNAVAILABLE):
            await self._request(order, subjects[1:], timeout)  # chosen by a stale report
            return
        self.router.remote_reply(order.conn, order.msg_id, status, answer.data,
                                 time.monotonic())
        self.broker.schedule_flush()

    def _answer(self, conn: Connection, msg_id: bytes, status: int, value: Any,
                now: float) -> None:
        self.router.remote_reply(conn, msg_id, status, cbor.dumps(value), now)
        self.broker.schedule_flush()

    # -- from NATS ---------------------------------------------------------------

    async def _on_publication(self, msg: Msg) -> None:
        headers = msg.headers or {}
        origin = (headers.get(_ORIGIN, ""), headers.get(_SEQ, ""))
        if all(origin):
            if origin in self._seen:
                return  # the same publication through a second subscription of ours
            self._seen[origin] = None
            if len(self._seen) > _SEEN_WINDOW:
                self._seen.popitem(last=False)
        flags, msg_id = publication_of(headers)
        try:
            tenant, topic, _ = self.space.parse_publish(msg.subject)
            self.router.remote_publish(tenant, topic, msg.data, time.monotonic(), time.time(),
                                       flags, msg_id, KEPT_HEADER in headers)
        except (SubjectError, OverflowError) as exc:
            log.warning("cluster: publication on %r dropped: %s", msg.subject[:80], exc)
            return
        self.broker.schedule_flush()

    def _requests(self, tenant: str, target: str | None
                  ) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            self._on_request(tenant, target, msg)
        return on_request

    def _on_request(self, tenant: str, target: str | None, msg: Msg) -> None:
        topic = (msg.headers or {}).get(_TOPIC)
        if not msg.reply or not topic:
            return
        now = time.monotonic()
        replies = self._replies
        while replies and next(iter(replies.values()))[1] < now:
            replies.popitem(last=False)  # answers the router will never give (timed out)
        if len(replies) >= self.router.config.max_pending_calls_total:
            self._send((msg.reply, cbor.dumps("too many requests in flight in the broker"),
                        {_STATUS: str(int(Status.GENERIC_ERROR))}))
            return
        self._token += 1
        token = self._token.to_bytes(8, "little")
        replies[token] = (msg.reply, now + self.router.config.call_timeout + 1)
        try:
            self.router.remote_request(tenant, topic, target, msg.data, token, now,
                                       time.time())
        except OverflowError as exc:
            replies.pop(token, None)
            self._send((msg.reply, cbor.dumps(str(exc)),
                        {_STATUS: str(int(Status.GENERIC_ERROR))}))
            return
        self.broker.schedule_flush()

    # -- background work ---------------------------------------------------------

    async def _send_loop(self) -> None:
        """Write queued messages and bring the subscriptions in line with the interests."""
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
            await self._reconcile()
            outbox = self._outbox
            while outbox:
                await self._send_batch([outbox.popleft()
                                        for _ in range(min(_BATCH, len(outbox)))])

    async def _send_batch(self, batch: list[tuple[str, bytes, dict[str, str]] | Forward]
                          ) -> None:
        """Write a batch in order; kept publications go to the archive first, together."""
        nc, archive = self.nc, self.archive
        assert nc is not None and archive is not None
        kept = [item for item in batch if isinstance(item, Forward)]
        stored = iter(await archive.keep_all(kept) if kept else ())
        for item in batch:
            if isinstance(item, Forward):
                live = self._stored(item, next(stored))
                if live is None:
                    continue
                item = live
            subject, payload, headers = item
            try:
                await nc.publish(subject, payload, headers=headers)
            except nats.errors.Error as exc:
                self.dropped += 1
                if self.dropped % 1000 == 1:  # one line per thousand, not a flood
                    log.warning("cluster: not sent to %s (%d dropped so far): %s: %s",
                                subject[:80], self.dropped, type(exc).__name__, exc)
        if kept:
            self.broker.schedule_flush()  # ACKs of stored publications

    def _stored(self, order: Forward, stored: Stored | None
                ) -> tuple[str, bytes, dict[str, str]] | None:
        """What to send live after the archive's answer about a kept publication."""
        assert self.archive is not None
        headers = self.archive.settle(order, stored)
        if headers is None:
            return None
        self._seq += 1
        headers.update({_ORIGIN: self.broker_id, _SEQ: str(self._seq)})
        return self.space.publish(order.tenant, order.topic), order.payload, headers

    async def _reconcile(self) -> None:
        nc = self.nc
        assert nc is not None
        for key in [key for key in self._subs if key not in self._wanted]:
            sub = self._subs.pop(key)
            try:
                # drain, not unsubscribe: what already arrived is still handled (a request
                # dropped here would leave its caller waiting for its timeout)
                drained = sub.drain()  # type: ignore[no-untyped-call]  # untyped in nats-py
                await asyncio.wait_for(drained, self.config.op_timeout)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.debug("cluster: unsubscribe %s: %s", key, exc)
        for key in [key for key in self._wanted if key not in self._subs]:
            kind, tenant, topic = key
            try:
                if kind == SUB:
                    subject = self.space.subscription(tenant, topic, kept=False).subject
                    sub = await nc.subscribe(subject, cb=self._on_publication)
                elif kind == RPC:
                    sub = await nc.subscribe(self.space.rpc(tenant, topic), queue=RPC_QUEUE,
                                             cb=self._requests(tenant, None))
                elif kind == DIRECT:
                    sub = await nc.subscribe(self.space.direct(topic),
                                             cb=self._requests(tenant, topic))
                else:
                    continue
            except (SubjectError, nats.errors.Error) as exc:
                self._wanted.pop(key, None)
                log.warning("cluster: cannot subscribe for %s %r: %s", kind, topic[:80], exc)
                continue
            self._subs[key] = sub


__all__ = ["CLOSE_TRY_AGAIN", "BrokerPort", "ClusterBridge", "ClusterConfig", "parse_servers"]
