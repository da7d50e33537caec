"""Configuration, states and local errors of :class:`~rembus_proto.client.ClientConnection`."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidState
from .messages import DEFAULT_LIMITS, DecodeLimits

OverflowPolicy = Literal["error", "drop_oldest", "drop_newest"]
_POLICIES = ("error", "drop_oldest", "drop_newest")


class ConnectionState(enum.Enum):
    """Where a client connection is in its life."""

    DISCONNECTED = "disconnected"
    """No transport. Publications go to the outbox, requests are refused."""
    HANDSHAKING = "handshaking"
    """Transport up, IDENTITY sent, waiting for the broker's answer."""
    CHALLENGED = "challenged"
    """The broker sent a challenge; waiting for ``attest()`` and its answer."""
    OPEN = "open"
    """Logged in (or anonymous): everything may be sent."""
    CLOSED = "closed"
    """The login was refused or ``close()`` was called. Nothing is sent until the
    driver calls ``connect()`` again with a new transport."""


class ClientError(RuntimeError):
    """Base class of the errors a client connection raises for local reasons."""


class NotConnected(InvalidState, ClientError):
    """A request needs an OPEN connection; wait for ``Connected`` and retry."""


class TooManyPending(ClientError):
    """Too many requests or unacknowledged publications in flight (see ``ClientConfig``)."""


class OutboxFull(ClientError):
    """The outbox of publications made while not connected is full."""


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ClientConfig.{name} must be a number of seconds, "
                        f"not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"ClientConfig.{name} must be a finite number of seconds > 0, "
                         f"not {value!r}")


def _count(name: str, value: int, minimum: int) -> None:
    if type(value) is not int:
        raise TypeError(f"ClientConfig.{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"ClientConfig.{name} must be >= {minimum}, not {value}")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Timeouts and limits of a client connection. Every queue is bounded by one of these."""

    request_timeout: float = 10.0
    """Seconds to wait for the RESPONSE to a request (and for the login)."""
    ack_timeout: float = 2.0
    """Seconds to wait for the ACK of a QoS1/QoS2 publication before resending it."""
    send_retries: int = 10
    """Resends of an unacknowledged publication before ``PublishFailed``."""
    max_pending_requests: int = 100_000
    """Requests of the application in flight; one more raises ``TooManyPending``.
    Also bounds incoming requests waiting for ``respond()``."""
    max_unacked_publishes: int = 10_000
    """QoS1/QoS2 publications not yet acknowledged (in the outbox included)."""
    outbox_size: int = 10_000
    """Publications kept while not connected, sent in order on the next connect."""
    outbox_overflow: OverflowPolicy = "error"
    """What a publication does when the outbox is full: ``"error"`` raises
    ``OutboxFull``, ``"drop_oldest"`` evicts the oldest queued publication,
    ``"drop_newest"`` discards the new one."""
    qos2_dedup_size: int = 100_000
    """Ids of QoS2 publications remembered to filter duplicates (oldest forgotten first)."""
    ack_on_receipt: bool = True
    """``True``: a received QoS1/QoS2 publication is acknowledged at once. ``False``:
    the driver acknowledges it with ``acknowledge(event.msg_id)`` once a handler got
    it (or ``release(event.msg_id)`` when it gives it up), so that a message no
    handler got is resent by the broker instead of being lost."""
    id_length: int = 8
    """Length of message ids: 8 for current peers, 16 for 0.1.x-era peers."""
    limits: DecodeLimits = DEFAULT_LIMITS
    """Size and nesting limits applied to every received message."""

    def __post_init__(self) -> None:
        _positive("request_timeout", self.request_timeout)
        _positive("ack_timeout", self.ack_timeout)
        _count("send_retries", self.send_retries, 0)
        _count("max_pending_requests", self.max_pending_requests, 1)
        _count("max_unacked_publishes", self.max_unacked_publishes, 1)
        _count("outbox_size", self.outbox_size, 0)
        _count("qos2_dedup_size", self.qos2_dedup_size, 1)
        _count("id_length", self.id_length, 1)
        if type(self.ack_on_receipt) is not bool:
            raise TypeError("ClientConfig.ack_on_receipt must be a bool")
        if self.outbox_overflow not in _POLICIES:
            raise ValueError(f"ClientConfig.outbox_overflow must be one of {_POLICIES}, "
                             f"not {self.outbox_overflow!r}")
        if not isinstance(self.limits, DecodeLimits):
            raise TypeError("ClientConfig.limits must be a DecodeLimits")


__all__ = [
    "ClientConfig",
    "ClientError",
    "ConnectionState",
    "InvalidState",
    "NotConnected",
    "OutboxFull",
    "OverflowPolicy",
    "TooManyPending",
]
