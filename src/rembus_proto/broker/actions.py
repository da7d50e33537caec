"""What the router asks of its driver: the values :meth:`Router.events` returns.

:class:`Close`, :class:`ShutdownRequested`, :class:`PruneArchive` and
:class:`Skipped` are orders; :class:`NeedReplay` and :class:`NeedKey` are data requests that the
driver answers between two turns with :meth:`Router.replay_batch` and
:meth:`Router.key_found`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

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


Order = Close | ShutdownRequested | PruneArchive | Skipped
Request = NeedReplay | NeedKey
Event = Order | Request

__all__ = ["Close", "Event", "NeedKey", "NeedReplay", "Order", "PruneArchive", "Request",
           "ShutdownRequested", "Skipped"]
