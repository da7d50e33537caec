"""What the broker's server knows of the cluster driver (no NATS import)."""

from __future__ import annotations

from typing import Any, Protocol

from rembus_proto.broker import Connection
from rembus_proto.broker.actions import (
    ClusterOrder,
    Forward,
    InterestChanged,
    LeaseReleased,
    NeedKey,
    NeedLease,
    NeedReplay,
    RemoteCall,
    SaveKey,
    TwinChanged,
)


class ClusterPort(Protocol):
    """The cluster driver of a broker joined in a cluster (:mod:`.bridge`)."""

    def handle(self, order: ClusterOrder | NeedReplay) -> None:
        """Carry out a cluster order of the router."""

    def defer_key(self, request: NeedKey) -> bool:
        """Whether the driver answers this key lookup itself, later."""

    def status(self) -> dict[str, Any]:
        """What ``/status.json`` shows of the cluster."""

    def output(self, conn: Connection, frames: list[bytes]) -> None:
        """Frames the router queued for a pseudo-connection of the cluster."""


CLUSTER_ORDERS = (Forward, InterestChanged, RemoteCall, NeedLease, LeaseReleased, TwinChanged,
                  NeedReplay, SaveKey)
"""The router's actions the cluster driver carries out (replays read its archive)."""
