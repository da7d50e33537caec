"""How a broker joins its cluster, and what the cluster driver needs of the broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rembus_proto.broker import Router

from .names import DEFAULT_TTL


@dataclass(frozen=True)
class ClusterConfig:
    """How a broker joins its cluster."""

    servers: tuple[str, ...]
    """NATS URLs (any node of the NATS cluster; the client fails over between them)."""
    name: str = "rembus"
    """The Rembus cluster: several may share one NATS system."""
    lease_ttl: int = DEFAULT_TTL
    """Seconds a name stays taken after its broker stopped renewing it."""
    replicas: int = 1
    """Replicas of the key-value buckets created by the first broker (3 on 3 nodes)."""
    max_outbox: int = 100_000
    """Messages waiting to be written to NATS; beyond it publications are dropped."""
    op_timeout: float = 5.0
    """Seconds a lease operation may take before the connection is refused."""
    load_interval: float = 1.0
    """Seconds between two load reports of a broker (policy ``less_busy``)."""


class BrokerPort(Protocol):
    """What the bridge needs of the broker that runs it."""

    router: Router
    cluster: Any
    security: Any
    """The broker's security port; the cluster's shared one once joined."""

    def schedule_flush(self) -> None:
        """Write pending output at the end of this event-loop turn."""


def parse_servers(text: str) -> tuple[str, ...]:
    """``nats://h1:4222,nats://h2:4222`` as a tuple of URLs (``ValueError`` when empty)."""
    servers = tuple(url.strip() for url in text.split(",") if url.strip())
    if not servers:
        raise ValueError("--cluster needs at least one NATS URL")
    return servers


__all__ = ["BrokerPort", "ClusterConfig", "parse_servers"]
