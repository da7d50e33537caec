"""Keys, tenants, admins and private topics shared by every broker of a cluster.

They live in the key-value bucket ``rembus_<cluster>_security``, one key per
item (``<…>`` escaped with :func:`~.subjects.encode_segment`):

==================================  =========================================
``key.<name>``                      registered key: keytype byte, key bytes
``tenant.<tenant>``                 the tenant's registration PIN (UTF-8)
``admin.<name>``                    ``name`` is an admin (empty value)
``topic.<topic>``                   ``topic`` is private (empty value)
``auth.<topic>.<name>``             ``name`` is authorized on ``topic``
==================================  =========================================

One key per authorization, rather than one list per topic, so that two admins
authorizing two names at once on two brokers both win.

Every broker watches the bucket into a local cache that serves the router's
synchronous :class:`~rembus_proto.security_port.Security` port. Writes:

* REGISTER is a :class:`~rembus_proto.broker.actions.SaveKey` order, done with
  create-if-absent (:meth:`ClusterSecurity.save_key_order`): two brokers
  cannot register one name twice, the second is told "already registered";
* a key lookup the cache cannot answer reads the bucket (its stream leader),
  so a component registered through one broker logs in at once through
  another (:meth:`ClusterSecurity.defer_key`); when the bucket cannot be
  read, the cache answers;
* UNREGISTER and the admin commands on private topics change the cache at
  once (the router answers from it) and are written to the bucket in order by
  a background writer (bounded queue, bounded retries).

An erased item leaves an erase marker without TTL, so that it stays erased.

Seeding: a broker joining the cluster copies the keys, tenants, admins and
private topics of its data directory into the bucket where the bucket has no
entry for them (an erased entry counts as one; the authorizations of a
private topic come only with the topic). The bucket is the authority
from then on: what the broker's files say is not read again while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from rembus.security.crypto import check_public_key
from rembus.security.file_security import FileSecurity
from rembus_proto.broker.actions import NeedKey, SaveKey
from rembus_proto.security_port import KEY_TYPE_NAMES, PublicKey, SecurityError

from .config import BrokerPort, ClusterConfig
from .kvstore import Bucket
from .subjects import SubjectError, SubjectSpace, decode_segment, encode_segment

log = logging.getLogger("rembus.broker.cluster")

KEY, TENANT, ADMIN, TOPIC, AUTH = "key", "tenant", "admin", "topic", "auth"
#: Largest value of the bucket (a public key in PEM is well below).
MAX_VALUE = 64 * 1024
#: Writes waiting for the bucket, and key lookups in progress; beyond, refused.
MAX_PENDING = 10_000
#: Attempts of one background write before it is given up (logged).
_ATTEMPTS = 3
#: Attempts of a create-if-absent racing with erasures.
_CREATE_ATTEMPTS = 3

Item = tuple[str, ...]
"""``(kind, name)`` or ``(AUTH, topic, name)``."""


def item_key(item: Item) -> str:
    """The bucket key of an item."""
    return ".".join([item[0], *(encode_segment(part) for part in item[1:])])


def parse_key(key: str) -> Item | None:
    """The item of a bucket key, ``None`` for a key that is not one."""
    kind, *parts = key.split(".")
    size = 3 if kind == AUTH else 2
    if kind not in (KEY, TENANT, ADMIN, TOPIC, AUTH) or len(parts) + 1 != size:
        return None
    try:
        return (kind, *(decode_segment(part) for part in parts))
    except SubjectError:
        return None


def encode_key(key: PublicKey) -> bytes:
    """A registered key as a bucket value: its type (one byte), then its bytes."""
    return bytes([key.keytype]) + key.data


def decode_key(value: bytes) -> PublicKey:
    """A bucket value as a registered key; an unreadable one blocks its name's login."""
    if len(value) > 1 and value[0] in KEY_TYPE_NAMES:
        return PublicKey(value[1:], value[0])
    log.error("cluster: a registered key in the security bucket is not readable")
    return PublicKey(b"", next(iter(KEY_TYPE_NAMES)))


class ClusterSecurity:
    """The security port of a broker in a cluster (see the module documentation)."""

    def __init__(self, bucket: Bucket, broker: BrokerPort, config: ClusterConfig) -> None:
        self.bucket = bucket
        self.broker = broker
        self.config = config
        self.items: dict[Item, bytes] = {}
        """The cache: every item of the bucket and its value."""
        self._writes: deque[tuple[Item, bytes | None]] = deque()
        self._wake = asyncio.Event()
        self._lookups: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, js: JetStreamContext, space: SubjectSpace, broker: BrokerPort,
                   config: ClusterConfig, seed: FileSecurity | None) -> ClusterSecurity:
        """Open (or create) the bucket, seed it from ``seed``, load it and follow it."""
        bucket = await Bucket.open(js, space.bucket("security"), config.replicas, MAX_VALUE)
        self = cls(bucket, broker, config)
        if seed is not None:
            await self.seed(seed)
        watcher = await (await js.key_value(bucket.name)).watchall()
        updates = watcher.updates  # untyped in nats-py
        while (entry := await updates(config.op_timeout)) is not None:  # type: ignore[no-untyped-call]
            self._apply(entry)
        self._tasks = [asyncio.create_task(self._follow(watcher)),
                       asyncio.create_task(self._write_loop())]
        return self

    async def stop(self) -> None:
        """Stop following the bucket (writes still queued are given up, and logged)."""
        tasks = [*self._tasks, *self._lookups]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded, as in the bridge's stop (a cancellation lost by wait_for)
            await asyncio.wait(tasks, timeout=self.config.op_timeout)
        if self._writes:
            log.warning("cluster: %d security changes not written", len(self._writes))

    async def seed(self, files: FileSecurity) -> int:
        """Copy what ``files`` holds into the bucket where it has no entry; items copied."""
        items: list[tuple[Item, bytes]] = []
        for name in files.registered():
            key = files.public_key(name)
            if key is not None and key.data:
                items.append(((KEY, name), encode_key(key)))
        items += [((TENANT, tenant), pin.encode()) for tenant, pin in files.tenants().items()]
        items += [((ADMIN, name), b"") for name in files.admins()]
        copied = 0
        for item, value in items:
            copied += await self._seed_one(item, value)
        for topic, names in files.private_topics().items():
            # the authorizations of a topic the cluster already knows are the cluster's
            if await self._seed_one((TOPIC, topic), b""):
                copied += 1
                for name in names:
                    copied += await self._seed_one((AUTH, topic, name), b"")
        if copied:
            log.info("cluster: %d security entries of the data directory shared", copied)
        return copied

    async def _seed_one(self, item: Item, value: bytes) -> bool:
        try:
            return await self.bucket.write(item_key(item), value, 0, None) is not None
        except SubjectError as exc:
            log.warning("cluster: %s %r not shared: %s", item[0], item[1][:80], exc)
            return False

    # -- the cache -------------------------------------------------------------

    def _apply(self, entry: KeyValue.Entry) -> None:
        item = parse_key(entry.key)
        if item is None:
            return
        if entry.operation in ("DEL", "PURGE") or entry.value is None:
            changed = self.items.pop(item, None) is not None
        else:
            changed = self.items.get(item) != entry.value
            self.items[item] = entry.value
        if changed and item[0] in (TOPIC, AUTH) and self._tasks:
            self.broker.router.reload_security()

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry)

    # -- the Security port -----------------------------------------------------

    def public_key(self, name: str) -> PublicKey | None:
        """The key of ``name`` in the cache."""
        value = self.items.get((KEY, name))
        return None if value is None else decode_key(value)

    def save_key(self, name: str, key: PublicKey) -> None:
        """Not used: in a cluster, REGISTER goes through :meth:`save_key_order`."""
        raise SecurityError("keys are registered through the cluster")

    def delete_key(self, name: str) -> None:
        """Forget the key of ``name`` here at once, in the bucket shortly."""
        self._change((KEY, name), None)

    def tenant_pin(self, tenant: str) -> str | None:
        """The PIN of ``tenant``."""
        value = self.items.get((TENANT, tenant))
        return None if value is None else value.decode(errors="replace")

    def is_admin(self, name: str) -> bool:
        """Whether ``name`` is an admin of the cluster."""
        return (ADMIN, name) in self.items

    def private_topics(self) -> Mapping[str, Collection[str]]:
        """Every private topic and its authorized names."""
        topics: dict[str, set[str]] = {}
        for item in self.items:
            if item[0] == TOPIC:
                topics.setdefault(item[1], set())
        for item in self.items:
            if item[0] == AUTH and item[1] in topics:
                topics[item[1]].add(item[2])
        return topics

    def save_private_topic(self, topic: str, names: Collection[str] | None) -> None:
        """Make the cluster's authorizations of ``topic`` those of ``names``."""
        before = {item[2] for item in self.items if item[0] == AUTH and item[1] == topic}
        after = set(names or ())
        changes: list[tuple[Item, bytes | None]] = [
            ((AUTH, topic, name), None) for name in sorted(before - after)]
        if names is None:
            changes.append(((TOPIC, topic), None))
        else:
            changes.append(((TOPIC, topic), b""))
            changes += [((AUTH, topic, name), b"") for name in sorted(after - before)]
        if len(self._writes) + len(changes) > MAX_PENDING:
            raise SecurityError("too many security changes waiting for the cluster")
        for item, value in changes:
            self._change(item, value)

    def _change(self, item: Item, value: bytes | None) -> None:
        try:
            item_key(item)
        except SubjectError as exc:
            raise SecurityError(f"not usable in a cluster: {exc}") from None
        if len(self._writes) >= MAX_PENDING:
            raise SecurityError("too many security changes waiting for the cluster")
        if value is None:
            self.items.pop(item, None)
        else:
            self.items[item] = value
        self._writes.append((item, value))
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._writes:
                item, value = self._writes.popleft()
                await self._write(item, value)

    async def _write(self, item: Item, value: bytes | None) -> None:
        key = item_key(item)
        for attempt in range(_ATTEMPTS):
            try:
                if value is None:
                    await asyncio.wait_for(self.bucket.erase(key, None, None),
                                           self.config.op_timeout)
                else:
                    await asyncio.wait_for(self.bucket.write(key, value, None, None),
                                           self.config.op_timeout)
                return
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                if attempt + 1 == _ATTEMPTS:
                    log.error("cluster: security change of %s %r not written: %s", item[0],
                              item[1][:80], exc)

    # -- asynchronous requests of the router ---------------------------------------

    def defer_key(self, request: NeedKey) -> bool:
        """A key not in the cache is read from the bucket: the lookup is answered later."""
        if (KEY, request.name) in self.items or len(self._lookups) >= MAX_PENDING:
            return False
        self._spawn(self._look_up(request))
        return True

    async def _look_up(self, request: NeedKey) -> None:
        key: PublicKey | None
        try:
            entry = await asyncio.wait_for(self.bucket.get(item_key((KEY, request.name))),
                                           self.config.op_timeout)
            key = None if entry is None or entry.value is None else decode_key(entry.value)
        except SubjectError:
            key = None  # a name no cluster key can hold was never registered
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            # JetStream without a leader (a node lost, quorum lost): the cache answers.
            # The name's lease cannot be taken either then, so the login is refused
            # with "try again later"; at worst a name registered within the watcher's
            # lag gets in as an unregistered one (no admin, no private topic).
            log.warning("cluster: key of %r not read (the cache answers): %s",
                        request.name[:80], exc)
            key = self.public_key(request.name)
        self.broker.router.key_found(request.conn, request.name, key, time.monotonic(),
                                     time.time())
        self.broker.schedule_flush()

    def save_key_order(self, order: SaveKey) -> None:
        """Register a key cluster-wide, create-if-absent; answers the REGISTER."""
        if len(self._lookups) >= MAX_PENDING:
            self._saved(order, "too many registrations in progress", False)
            return
        self._spawn(self._save_key(order))

    async def _save_key(self, order: SaveKey) -> None:
        try:
            check_public_key(order.key)
            key = item_key((KEY, order.name))
            value = encode_key(order.key)
            created = await asyncio.wait_for(self._create(key, value), self.config.op_timeout)
        except SecurityError as exc:
            self._saved(order, str(exc), False)
            return
        except SubjectError as exc:
            self._saved(order, f"name not usable in a cluster: {exc}", False)
            return
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("cluster: key of %r not saved: %s", order.name[:80], exc)
            self._saved(order, "cluster unavailable, try again later", False)
            return
        if created:
            self.items[(KEY, order.name)] = value
            log.info("registered %s in the cluster", order.name)
        self._saved(order, None, not created)

    async def _create(self, key: str, value: bytes) -> bool:
        """Write ``key`` if it has no value (absent, or erased); whether it was written."""
        expected = 0
        for _ in range(_CREATE_ATTEMPTS):
            if await self.bucket.write(key, value, expected, None) is not None:
                return True
            entry = await self.bucket.get(key)
            if entry is not None and entry.value is not None:
                return False
            expected = 0 if entry is None else entry.revision
        return False

    def _saved(self, order: SaveKey, refusal: str | None, taken: bool) -> None:
        self.broker.router.key_saved(order.conn, order.msg_id, order.name, refusal, taken,
                                     time.monotonic())
        self.broker.schedule_flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)


__all__ = ["ClusterSecurity", "decode_key", "encode_key", "item_key", "parse_key"]
