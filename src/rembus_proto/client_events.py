"""Events that :class:`~rembus_proto.client.ClientConnection` reports to its driver.

Every event is an immutable value (a named tuple equal only to events of
its own type). Request handles are the ints returned by
the actions of the connection; each one is reported exactly once by one of
``RequestCompleted``, ``RequestTimedOut`` or ``RequestAborted`` (requests),
or ``PublishAcked`` or ``PublishFailed`` (QoS1/QoS2 publications).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .payload import Payload
from .values import typed_equality


class Connected(NamedTuple):
    """The connection is open: the login succeeded (or none was needed).

    ``exports`` is the data of the broker's IDENTITY/ATTESTATION reply as
    sent: ``None``, or ``[[exposed topics...], [subscribed topics...]]`` from
    current brokers. It is always ``None`` for anonymous components.
    """

    exports: Any


class ChallengeRequested(NamedTuple):
    """The broker wants proof of identity: sign it and call ``attest()``.

    The bytes to sign are ``challenge_input(challenge, name)``.
    """

    challenge: bytes
    name: str


class LoginRefused(NamedTuple):
    """The broker refused the login (or it timed out); the state is now CLOSED.

    ``status`` is the RESPONSE status (``Status.TIMEOUT`` for a local
    timeout) and ``reason`` its data, usually a string or ``None``. The driver
    should close the transport.
    """

    status: int
    reason: Any


class PublicationReceived(NamedTuple):
    """A PUB arrived on a subscribed topic (QoS2 duplicates are filtered out).

    ``msg_id`` is the id to pass to ``acknowledge()`` (or ``release()``) when the
    connection leaves acknowledging to the driver (``ClientConfig.ack_on_receipt``
    false) and the message is QoS1/QoS2; otherwise ``None``.
    """

    topic: str
    data: Payload
    qos: int
    msg_id: bytes | None = None


class RequestReceived(NamedTuple):
    """An RPC arrived for an exposed topic; answer it with ``respond(request_id, ...)``."""

    request_id: bytes
    topic: str
    data: Payload
    target: str | None


class RequestCompleted(NamedTuple):
    """The RESPONSE to one of our requests (rpc, admin, subscribe, register, ...).

    ``status`` 0 means success and ``data`` is the result; any other status
    is an error (see ``Status``) and ``data`` usually holds a reason string.
    """

    handle: int
    status: int
    data: Payload


class RequestTimedOut(NamedTuple):
    """No RESPONSE arrived within the request timeout."""

    handle: int


class RequestAborted(NamedTuple):
    """The request cannot complete: the connection was lost or closed."""

    handle: int
    reason: str


class PublishAcked(NamedTuple):
    """The broker acknowledged a QoS1/QoS2 publication."""

    handle: int


class PublishFailed(NamedTuple):
    """A QoS1/QoS2 publication was given up (no ACK after every resend, dropped, closed)."""

    handle: int
    reason: str


class RestoreFailed(NamedTuple):
    """The broker refused (or did not answer) a command re-sent after a (re)connect.

    ``command`` is ``"subscribe"``, ``"expose"`` or ``"reactive"``; ``topic``
    the topic it was sent for (``"__config__"`` for reactive); ``status`` the
    RESPONSE status (``Status.TIMEOUT`` when no answer came) and ``reason``
    its data.
    """

    topic: str
    command: str
    status: int
    reason: Any


Event = (Connected | ChallengeRequested | LoginRefused | PublicationReceived | RequestReceived
         | RequestCompleted | RequestTimedOut | RequestAborted | PublishAcked | PublishFailed
         | RestoreFailed)
"""Any event of a client connection."""


__all__ = [
    "ChallengeRequested",
    "Connected",
    "Event",
    "LoginRefused",
    "PublicationReceived",
    "PublishAcked",
    "PublishFailed",
    "RequestAborted",
    "RequestCompleted",
    "RequestReceived",
    "RequestTimedOut",
    "RestoreFailed",
]


typed_equality(Connected, ChallengeRequested, LoginRefused, PublicationReceived, RequestReceived,
               RequestCompleted, RequestTimedOut, RequestAborted, PublishAcked, PublishFailed,
               RestoreFailed)
