"""What the router asks of its driver: the values :meth:`Router.events` returns.

:class:`Close`, :class:`ShutdownRequested`, :class:`PruneArchive` and
:class:`Skipped` are orders; :class:`NeedReplay` and :class:`NeedKey` are data requests that the
driver answers between two turns with :meth:`Router.replay_batch` and
:meth:`Router.key_found`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ..security_port import PublicKey
from .state import Connection, Twin


@dataclass(frozen=True, slots=True)
class Close:
    """The driver must close ``conn`` (after flushing its pending output)."""

    conn: Connection
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """An admin sent ``shutdown``: the driver should stop the broker."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A message for ``conn`` was not sent: at ``size`` bytes it is over the ``limit``
    its peer accepts (e.g. a publication grown by the topic a pattern delivery adds).
    The driver logs it; :attr:`Router.skipped` counts them."""

    conn: Connection
    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class NeedReplay:
    """Read up to ``limit`` stored messages with ``seq > after_seq`` (only ``topics``
    when not ``None``) and hand them to :meth:`Router.replay_batch` with ``token``."""

    twin: Twin
    token: int
    after_seq: int
    topics: Collection[str] | None
    limit: int
    max_bytes: int | None = None
    """At most this many payload bytes (one message at least); ``None``: no bound."""


@dataclass(frozen=True, slots=True)
class NeedKey:
    """Look up the registered key of ``name`` and hand it to :meth:`Router.key_found`;
    the input of ``conn`` waits until then."""

    conn: Connection
    name: str


@dataclass(frozen=True, slots=True)
class PruneArchive:
    """Time to apply the retention rules: drop stored messages received before
    ``before_ns`` (wall clock), all but the newest ``max_per_topic`` of each topic,
    then the oldest beyond ``max_topic_bytes`` per topic and ``max_total_bytes`` in all
    (see :meth:`rembus_proto.store.Store.prune`)."""

    before_ns: int
    max_per_topic: int
    max_topic_bytes: int | None = None
    max_total_bytes: int | None = None


# -- brokers joined in a cluster (only once :meth:`Router.join_cluster` was called) --


@dataclass(frozen=True, slots=True)
class Forward:
    """A publication of a local component: send it to the other brokers of the cluster.

    ``kept``: it goes into the cluster's archive (QoS1/2, or a retroactive
    subscriber somewhere wants it); a QoS1/2 one is acknowledged to ``conn``
    with :meth:`Router.cluster_acked` once the archive stored it.
    """

    tenant: str
    topic: str
    payload: bytes
    """The encoded data element, as the publisher sent it."""
    flags: int = 0
    msg_id: bytes | None = None
    publisher: str = ""
    kept: bool = False
    conn: Connection | None = None
    """The publisher's connection, for the deferred ACK of a kept QoS1/2 publication."""


@dataclass(frozen=True, slots=True)
class InterestChanged:
    """The local components start (``present``) or stop wanting traffic from other brokers.

    ``kind``: ``"sub"`` (publications on a topic or pattern of ``tenant``),
    ``"rpc"`` (calls of a method exposed in ``tenant``) or ``"direct"``
    (calls addressed to the component named ``topic``).
    """

    kind: str
    tenant: str
    topic: str
    present: bool


@dataclass(frozen=True, slots=True)
class RemoteCall:
    """No local component can serve a request of ``conn``: ask the cluster, then answer
    with :meth:`Router.remote_reply` (or, when nobody serves it anywhere, with the
    ``missing`` status and ``missing_value``)."""

    conn: Connection
    msg_id: bytes
    tenant: str
    topic: str
    target: str | None
    data: bytes
    missing: int
    missing_value: str


@dataclass(frozen=True, slots=True)
class NeedLease:
    """Take the cluster-wide lease of ``name`` for ``conn`` and tell
    :meth:`Router.lease_found`; the input of ``conn`` waits until then."""

    conn: Connection
    name: str


@dataclass(frozen=True, slots=True)
class LeaseReleased:
    """The connection that held the lease of ``name`` is gone: give the lease up."""

    name: str


@dataclass(frozen=True, slots=True)
class TwinChanged:
    """The persistent part of the named twin ``name`` changed: store it in the cluster."""

    name: str


@dataclass(frozen=True, slots=True)
class SaveKey:
    """Register ``key`` for ``name`` unless the name is registered already (cluster-wide),
    then tell :meth:`Router.key_saved`; emitted instead of a synchronous save when the
    security port's writes are asynchronous (:meth:`Router.use_security`)."""

    conn: Connection
    msg_id: bytes
    name: str
    key: PublicKey


#: Orders for the cluster driver; :class:`NeedLease` and :class:`SaveKey` are answered
#: later, asynchronously.
ClusterOrder = (Forward | InterestChanged | RemoteCall | NeedLease | LeaseReleased
                | TwinChanged | SaveKey)
Order = Close | ShutdownRequested | PruneArchive | Skipped | ClusterOrder
Request = NeedReplay | NeedKey
Event = Order | Request

__all__ = ["Close", "ClusterOrder", "Event", "Forward", "InterestChanged", "LeaseReleased",
           "NeedKey", "NeedLease", "NeedReplay", "Order", "PruneArchive", "RemoteCall",
           "Request", "SaveKey", "ShutdownRequested", "Skipped", "TwinChanged"]
