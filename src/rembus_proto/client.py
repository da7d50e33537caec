"""The component side of the Rembus protocol as a sans-IO state machine.

A driver owns the transport and the clock and feeds a :class:`ClientConnection`:

* ``connect(now)`` when the WebSocket is up, ``connection_lost(now)`` when it
  is gone, ``receive_message(data, now)`` for every binary message,
  ``handle_timer(now)`` when ``next_deadline()`` is reached;
* after each of these calls (and after each action) it sends every item of
  ``data_to_send()`` as one binary message, hands ``events()`` to the
  application and re-arms its timer with ``next_deadline()``.

Actions (``publish``, ``rpc``, ``subscribe``, ...) only queue output. Requests
return an int handle that exactly one later event reports on. Nothing here
does I/O, reads a clock or starts a thread.
"""

from __future__ import annotations

import heapq
from typing import Any

from .client_config import (
    ClientConfig,
    ClientError,
    ConnectionState,
    InvalidState,
    NotConnected,
    OutboxFull,
    TooManyPending,
)
from .client_events import (
    ChallengeRequested,
    Connected,
    LoginRefused,
    PublishFailed,
    RequestAborted,
    RequestCompleted,
    RequestTimedOut,
    RestoreFailed,
)
from .client_publish import _Publishing
from .client_requests import _Requests
from .client_state import (
    _CHALLENGED,
    _CLOSED,
    _DISCONNECTED,
    _HANDSHAKING,
    _OPEN,
    _REMOVAL,
    _RESTORE,
    _USER,
    _BytesLike,
    _publication,
    _QosPub,
    _Request,
    _type_name,
)
from .constants import CONFIG_TOPIC, CONNECTION_ID, QOS_MASK, Status
from .errors import MalformedMessage
from .messages import Ack, Ack2, Admin, Attestation, Identity, Pub, Response, Rpc, decode
from .payload import NO_DATA


class ClientConnection(_Requests, _Publishing):
    """Protocol state of one component: handshake, requests, QoS, restore after reconnect.

    ``name`` is the component name (``None`` for an anonymous component, which
    sends no IDENTITY). ``id_factory(n)`` returns ``n`` fresh random bytes for
    message ids (default: from ``os.urandom``, 4 KiB per system call).
    ``meta`` (a CBOR-encodable map such as ``{"ws": 9000}``) is sent as the
    4th IDENTITY element and 5th ATTESTATION element when given.

    Subscriptions, exposures and the reactive flag are the application's
    intent: they are recorded whether or not the connection is open and are
    re-sent after every connect. Publications made while not connected wait in
    a bounded outbox; QoS1/QoS2 publications are resent until acknowledged.
    """

    # ------------------------------------------------------------------ lifecycle

    def connect(self, now: float) -> None:
        """A transport is up: log in (named) or open at once (anonymous).

        Allowed in the DISCONNECTED and CLOSED states; call it before feeding
        the first received message (input is ignored until then). An anonymous
        component becomes OPEN, reports ``Connected(None)`` and restores its
        state; a named one sends IDENTITY and waits (HANDSHAKING).
        """
        if self._state is not _DISCONNECTED and self._state is not _CLOSED:
            raise InvalidState(f"connect() called in state {self._state.name}; "
                               f"call connection_lost() first")
        name = self._name
        if name is None:
            self._open(None, now)
            return
        msg_id = self._new_id()
        self._out.append(Identity(msg_id, name, self._meta).encode())
        self._identity_id = msg_id
        self._attest_id = None
        self._login_deadline = now + self._config.request_timeout
        self._state = _HANDSHAKING

    def attest(self, signature: _BytesLike, now: float) -> None:
        """Answer the challenge of the last ``ChallengeRequested`` with its signature."""
        if self._state is not _CHALLENGED or self._name is None:
            raise InvalidState(f"attest() is only valid after ChallengeRequested, not in state "
                               f"{self._state.name}")
        if self._attest_id is not None:
            raise InvalidState("attest() was already called for this challenge")
        if not isinstance(signature, (bytes, bytearray, memoryview)):
            raise TypeError(f"signature must be bytes, not {_type_name(signature)}")
        msg_id = CONNECTION_ID if self._challenge_unsolicited else self._new_id()
        self._out.append(Attestation(msg_id, self._name, bytes(signature), self._meta).encode())
        self._attest_id = msg_id
        self._login_deadline = now + self._config.request_timeout

    def connection_lost(self, now: float) -> None:
        """The transport is gone.

        Every request in flight ends with ``RequestAborted``; unacknowledged
        QoS publications are kept and resent (same id) after the next connect.
        The state becomes DISCONNECTED (CLOSED stays CLOSED). Idempotent.
        """
        if self._state is _DISCONNECTED or self._state is _CLOSED:
            return
        self._drop_connection("connection lost")
        self._state = _DISCONNECTED

    def close(self) -> int:
        """End everything for good: the application is shutting the component down.

        Requests in flight end with ``RequestAborted``, unacknowledged and
        queued QoS publications with ``PublishFailed``; the outbox and unsent
        output are discarded; the state becomes CLOSED. Subscriptions and
        exposures stay recorded should ``connect()`` be called again. Returns
        how many publications were discarded (QoS ones not acknowledged and
        QoS0 ones still in the outbox).
        """
        self._drop_connection("connection closed")
        events = self._events
        dropped = len(self._unacked) + sum(1 for item in self._outbox if type(item) is bytes)
        for rec in self._unacked.values():
            events.append(PublishFailed(rec.handle, "connection closed"))
        self._unacked.clear()
        self._outbox.clear()
        self._out.clear()
        self._state = _CLOSED
        return dropped

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or ``None`` if no timer runs."""
        heap = self._timers
        while heap:
            deadline, _, rec = heap[0]
            if rec.deadline == deadline:
                break
            heapq.heappop(heap)
        best = heap[0][0] if heap else None
        login = self._login_deadline
        if login is not None and (best is None or login < best):
            best = login
        return best

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``: request and login timeouts, QoS resends."""
        login = self._login_deadline
        if login is not None and now >= login:
            timeout = self._config.request_timeout
            self._login_failed(Status.TIMEOUT, f"no answer to the login within {timeout} s")
        heap = self._timers
        config = self._config
        events = self._events
        while heap and heap[0][0] <= now:
            deadline, _, rec = heapq.heappop(heap)
            if rec.deadline != deadline:
                continue
            if type(rec) is _QosPub:
                if rec.retries >= config.send_retries:
                    rec.deadline = None
                    del self._unacked[rec.id]
                    events.append(PublishFailed(
                        rec.handle, f"no ACK after {config.send_retries} resends"))
                else:
                    rec.retries += 1
                    self._arm(rec, now + config.ack_timeout)
                    self._out.append(rec.frame)
                continue
            assert type(rec) is _Request
            rec.deadline = None
            if rec.kind == _USER:
                del self._requests[rec.id]
                events.append(RequestTimedOut(rec.handle))
            else:
                del self._internal[rec.id]
                if rec.kind == _RESTORE:
                    events.append(RestoreFailed(rec.topic, rec.cmd, Status.TIMEOUT,
                                                "no answer within the request timeout"))

    # ------------------------------------------------------------------ input

    def receive_message(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one whole message received from the broker.

        Raises :class:`ProtocolError` for malformed input (the driver should
        close the connection) and nothing else. Well-formed but unexpected
        input (a RESPONSE with an unknown id, an IDENTITY, ...) is ignored.
        Input is ignored entirely in the DISCONNECTED and CLOSED states.
        """
        state = self._state
        if state is _DISCONNECTED or state is _CLOSED:
            return
        msg = decode(data, self._config.limits)
        if isinstance(msg, Pub):
            flags = msg.flags & QOS_MASK
            if not flags:
                self._events.append(_publication(msg.topic, msg.data, 0))
            else:
                self._on_qos_pub(msg, flags)
        elif isinstance(msg, Response):
            self._on_response(msg, now)
        elif isinstance(msg, Ack):
            self._on_ack(msg.id)
        elif isinstance(msg, Ack2):
            self._qos2_seen.pop(msg.id, None)
        elif isinstance(msg, Rpc):
            self._on_rpc(msg)
        elif isinstance(msg, Admin):
            # Mesh flooding (subscribe/expose relayed by the broker): acknowledge.
            self._out.append(Response(msg.id, Status.OK, NO_DATA).encode())

    def _on_response(self, msg: Response, now: float) -> None:
        msg_id = msg.id
        rec = self._requests.pop(msg_id, None)
        if rec is not None:
            rec.deadline = None
            self._events.append(RequestCompleted(rec.handle, msg.status, msg.data))
            return
        state = self._state
        if state is not _OPEN:
            if (msg_id == self._identity_id or msg_id == self._attest_id
                    or (msg_id == CONNECTION_ID and msg.status == Status.CHALLENGE)):
                self._on_login_response(msg, now)
            return
        rec = self._internal.get(msg_id)
        if rec is not None:
            status = msg.status
            if status != Status.OK and rec.kind == _RESTORE:
                reason = msg.data.value  # may raise ProtocolError: decode before changing state
                self._events.append(RestoreFailed(rec.topic, rec.cmd, status, reason))
            rec.deadline = None
            del self._internal[msg_id]
        elif (msg_id == CONNECTION_ID and msg.status == Status.CHALLENGE
              and self._name is None and not self._registering()):
            self._login_failed(Status.CHALLENGE, "the broker requires authentication, "
                               "which an anonymous component cannot provide")

    def _registering(self) -> bool:
        # REGISTER is allowed before the challenge is answered: keep waiting for its answer.
        return any(rec.cmd == "register" for rec in self._requests.values())

    def _on_login_response(self, msg: Response, now: float) -> None:
        status = msg.status
        value = msg.data.value  # may raise ProtocolError: decode before changing state
        if status == Status.OK:
            self._open(value, now)
        elif status == Status.CHALLENGE:
            if not isinstance(value, bytes):
                raise MalformedMessage(
                    f"challenge must be a byte string, not {_type_name(value)}")
            assert self._name is not None
            self._challenge_unsolicited = msg.id == CONNECTION_ID
            self._attest_id = None
            self._login_deadline = now + self._config.request_timeout
            self._state = _CHALLENGED
            self._events.append(ChallengeRequested(value, self._name))
        else:
            self._login_failed(status, value)

    # ------------------------------------------------------------------ state changes

    def _open(self, exports: Any, now: float) -> None:
        self._state = _OPEN
        self._identity_id = self._attest_id = None
        self._login_deadline = None
        self._events.append(Connected(exports))
        self._restore(now)

    def _login_failed(self, status: int, reason: Any) -> None:
        self._events.append(LoginRefused(status, reason))
        self._drop_connection("login failed")
        self._state = _CLOSED

    def _drop_connection(self, reason: str) -> None:
        events = self._events
        for rec in self._requests.values():
            rec.deadline = None
            events.append(RequestAborted(rec.handle, reason))
        self._requests.clear()
        for rec in self._internal.values():
            rec.deadline = None
        self._internal.clear()
        for qos in self._unacked.values():
            qos.deadline = None
        self._timers.clear()
        self._incoming.clear()
        self._identity_id = self._attest_id = None
        self._login_deadline = None

    def _restore(self, now: float) -> None:
        """Re-send the recorded state, then unacknowledged publications (in publish
        order), then the outbox: one publisher's messages keep their order."""
        resend = [rec for rec in self._unacked.values() if rec.sent]
        deadline = now + self._config.request_timeout
        for cmd, topic in self._removals:
            self._send_internal(_REMOVAL, topic, cmd, {"cmd": cmd}, deadline)
        self._removals.clear()
        for topic, msg_from in self._subscriptions.items():
            self._send_internal(_RESTORE, topic, "subscribe",
                                {"cmd": "subscribe", "msg_from": msg_from}, deadline)
        for topic in self._exposed:
            self._send_internal(_RESTORE, topic, "expose", {"cmd": "expose"}, deadline)
        if self._reactive:
            self._send_internal(_RESTORE, CONFIG_TOPIC, "reactive",
                                self._reactive_command(True, self._reactive_from), deadline)
        out = self._out
        ack_deadline = now + self._config.ack_timeout
        # Oldest first: what was sent before the loss goes again before the outbox.
        for rec in resend:
            self._arm(rec, ack_deadline)
            out.append(rec.frame)
        outbox = self._outbox
        while outbox:
            item = outbox.popleft()
            if type(item) is bytes:
                out.append(item)
            else:
                assert isinstance(item, _QosPub)
                item.sent = True
                self._arm(item, ack_deadline)
                out.append(item.frame)

    def _send_internal(self, kind: int, topic: str, cmd: str, command: dict[str, Any],
                       deadline: float) -> None:
        msg_id = self._new_id()
        self._out.append(Admin(msg_id, topic, command).encode())
        rec = _Request(msg_id, next(self._handles), deadline, kind, topic, cmd)
        self._internal[msg_id] = rec
        self._push(deadline, rec)

    def __repr__(self) -> str:
        return (f"<ClientConnection {self._name or '(anonymous)'} {self._state.name} "
                f"pending={len(self._requests)} unacked={len(self._unacked)} "
                f"outbox={len(self._outbox)}>")


__all__ = [
    "ClientConfig",
    "ClientConnection",
    "ClientError",
    "ConnectionState",
    "InvalidState",
    "NotConnected",
    "OutboxFull",
    "TooManyPending",
]
