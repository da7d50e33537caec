"""The broker's configuration and the close codes it asks drivers to use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..messages import DEFAULT_LIMITS, DecodeLimits
from ..topics import DEFAULT_NAME_LIMITS, NameLimits

Policy = Literal["first_up", "round_robin", "less_busy"]
POLICIES: tuple[Policy, ...] = ("first_up", "round_robin", "less_busy")

#: WebSocket close code used when a newer connection takes over a name.
CLOSE_OVERWRITTEN = 4000
#: WebSocket close code for a consumer that cannot keep up (policy violation).
CLOSE_SLOW_CONSUMER = 1008
#: WebSocket close code for a connection refused by the security rules (policy violation).
CLOSE_UNAUTHENTICATED = 1008
#: WebSocket close code for a peer that sent something we cannot accept.
CLOSE_PROTOCOL_ERROR = 1002
#: WebSocket close code for a message the broker failed to handle (internal error).
CLOSE_INTERNAL_ERROR = 1011
#: WebSocket close code when the broker stops.
CLOSE_GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Broker behaviour; every limit is explicit."""

    name: str = "broker"
    version: str = "0"
    policy: Policy = "first_up"
    overwrite_connection: bool = False
    authenticated: bool = False
    """Every connection must log in with a registered key (spec 5.4)."""
    challenge_timeout: float = 3.0
    """Seconds to answer a challenge; in authenticated mode, to log in at all."""
    pin_attempts: int = 5
    """Wrong PINs in a row for one tenant before its registrations are locked."""
    pin_lockout: float = 60.0
    """Seconds a tenant stays locked; doubled by every wrong PIN after that, up to an hour."""
    limits: DecodeLimits = DEFAULT_LIMITS
    names: NameLimits = DEFAULT_NAME_LIMITS
    """Bounds on component names, topics and patterns; beyond them a request is refused."""
    ack_timeout: float = 2.0
    """Seconds before a QoS1/2 delivery is sent again."""
    send_retries: int = 10
    max_inflight: int = 1_000
    """QoS1/2 deliveries awaiting ACK per subscriber; beyond it the subscriber is too slow."""
    max_queued: int = 100_000
    """Messages queued for one connection between two pulls; beyond it, it is too slow."""
    max_held: int = 1_000
    """Messages of one connection held while the driver looks up a key for it;
    beyond it the connection is closed."""
    replay_batch: int = 500
    """Stored messages sent to a returning subscriber before waiting for its socket to drain."""
    replay_batch_bytes: int | None = None
    """Payload bytes of one replay batch (one message at least; ``None``: no bound). A
    batch is read only when the subscriber's socket has drained, so this bounds what a
    replay holds: the broker sets a quarter of its backlog budget."""
    call_timeout: float = 120.0
    """Seconds after which a forwarded RPC nobody answered is forgotten."""
    max_pending_calls: int = 10_000
    """RPCs in flight per requesting connection; beyond it a request is refused."""
    max_pending_calls_total: int = 100_000
    """RPCs in flight in the whole broker; beyond it a request is refused."""
    legacy_max_message: int = 1 << 20
    """Largest message sent to a 0.1.x peer (16-byte ids): its WebSocket client closes
    the connection on anything larger, so larger ones are never sent to it."""
    qos2_dedup_size: int = 100_000
    """QoS2 message ids remembered per publisher to drop its resends; the oldest go first."""
    qos2_dedup_age: float = 3_600.0
    """Seconds a QoS2 message id is remembered (its ACK2 forgets it earlier)."""
    retention_max_age: float = 7 * 86_400.0
    retention_max_per_topic: int = 100_000
    retention_max_bytes: int = 1024 * 1024 * 1024
    """Payload bytes stored per topic; the oldest go first."""
    retention_max_total_bytes: int = 8 * 1024 * 1024 * 1024
    """Payload bytes stored for all topics together; the oldest go first."""
    prune_interval: float = 60.0
    twin_retention: float = 30 * 86_400.0
    """Seconds after which a named component that left, owes nothing (no retroactive
    subscription behind the archive) and is not registered is forgotten."""
    stats_max_labels: int = 100
    """Topics (and methods) counted one by one in the statistics; the others are
    counted together under ``other``."""


__all__ = ["CLOSE_GOING_AWAY", "CLOSE_INTERNAL_ERROR", "CLOSE_OVERWRITTEN", "CLOSE_PROTOCOL_ERROR",
           "CLOSE_SLOW_CONSUMER", "CLOSE_UNAUTHENTICATED", "POLICIES", "Policy", "RouterConfig"]
