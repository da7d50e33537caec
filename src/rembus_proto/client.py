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
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, overload

from . import cbor
from .client_config import (
    ClientConfig,
    ClientError,
    ConnectionState,
    InvalidState,
    NotConnected,
    OutboxFull,
    OverflowPolicy,
    TooManyPending,
)
from .client_events import (
    ChallengeRequested,
    Connected,
    Event,
    LoginFailed,
    PublicationReceived,
    PublishAcked,
    PublishFailed,
    RequestAborted,
    RequestCompleted,
    RequestReceived,
    RequestTimedOut,
    RestoreFailed,
)
from .constants import CONFIG_TOPIC, CONNECTION_ID, NOW, QOS1, QOS2, QOS_MASK, Status
from .entropy import RandomPool
from .errors import MalformedMessage
from .messages import (
    Ack,
    Ack2,
    Admin,
    Attestation,
    Identity,
    Pub,
    Register,
    Response,
    Rpc,
    Unregister,
    decode,
)
from .payload import NO_DATA, Payload

_DISCONNECTED = ConnectionState.DISCONNECTED
_HANDSHAKING = ConnectionState.HANDSHAKING
_CHALLENGED = ConnectionState.CHALLENGED
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED

# Kinds of request records.
_USER = 0  # made by the application: reported with RequestCompleted/TimedOut/Aborted
_RESTORE = 1  # subscribe/expose/reactive re-sent after a connect: errors -> RestoreFailed
_REMOVAL = 2  # unsubscribe/unexpose made while offline: the outcome does not matter

_DEFAULT_CONFIG = ClientConfig()
_dumps = cbor.dumps

_tuple_new = tuple.__new__


def _publication(topic: str, data: Payload, qos: int) -> PublicationReceived:
    # received PUBs are the hottest input: skip the generated __new__
    return _tuple_new(PublicationReceived, (topic, data, qos))


class _Request:
    """A request in flight, keyed by its id."""

    __slots__ = ("cmd", "deadline", "handle", "id", "kind", "topic")

    def __init__(self, msg_id: bytes, handle: int, deadline: float, kind: int,
                 topic: str, cmd: str) -> None:
        self.id = msg_id
        self.handle = handle
        self.deadline: float | None = deadline  # None once finished
        self.kind = kind
        self.topic = topic
        self.cmd = cmd


class _QosPub:
    """A QoS1/QoS2 publication not yet acknowledged."""

    __slots__ = ("deadline", "frame", "handle", "id", "qos", "retries", "sent")

    def __init__(self, msg_id: bytes, handle: int, frame: bytes, qos: int) -> None:
        self.id = msg_id
        self.handle = handle
        self.frame = frame
        self.qos = qos
        self.retries = 0
        self.sent = False  # False while in the outbox
        self.deadline: float | None = None  # resend time; None when not connected


_Timed = _Request | _QosPub
_Args = tuple[Any, ...] | list[Any] | Payload
_BytesLike = bytes | bytearray | memoryview


def _type_name(value: object) -> str:
    return type(value).__name__


def _topic_error(topic: object) -> TypeError:
    return TypeError(f"topic must be a str, not {_type_name(topic)}; pass the topic name as text")


def _args_error(args: object) -> TypeError:
    return TypeError(f"args must be a tuple or list of positional arguments (or a Payload), "
                     f"not {_type_name(args)}; wrap a single value as (value,)")


def _check_topic(topic: object) -> None:
    if type(topic) is not str:
        raise _topic_error(topic)


def _check_msg_from(msg_from: object) -> None:
    if isinstance(msg_from, bool) or not isinstance(msg_from, (int, float)):
        raise TypeError(f"msg_from must be a number, not {_type_name(msg_from)}; use NOW, "
                        f"LAST_RECEIVED or a window in nanoseconds")
    if math.isnan(msg_from) or msg_from < 0:
        raise ValueError(f"msg_from must be NOW (0.0), LAST_RECEIVED (inf) or a window in "
                         f"nanoseconds >= 0, not {msg_from!r}")


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {_type_name(timeout)}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
    return float(timeout)


class ClientConnection:
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

    def __init__(self, name: str | None, config: ClientConfig = _DEFAULT_CONFIG, *,
                 id_factory: Callable[[int], bytes] | None = None, meta: Any = None) -> None:
        if name is not None:
            if type(name) is not str:
                raise TypeError(f"name must be a str or None (anonymous), not {_type_name(name)}")
            if not name:
                raise ValueError("name must not be empty; use None for an anonymous component")
        if not isinstance(config, ClientConfig):
            raise TypeError(f"config must be a ClientConfig, not {_type_name(config)}")
        if id_factory is None:
            id_factory = RandomPool()
        elif not callable(id_factory):
            raise TypeError("id_factory must be a callable taking a length and returning bytes")
        if meta is not None:
            _dumps(meta)  # raise EncodeError now rather than at connect()
        self._name = name
        self._config = config
        self._id_factory = id_factory
        self._meta = meta
        self._state = _DISCONNECTED
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._handles = itertools.count(1)
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _Timed]] = []
        self._requests: dict[bytes, _Request] = {}
        self._internal: dict[bytes, _Request] = {}
        self._unacked: dict[bytes, _QosPub] = {}
        self._outbox: deque[bytes | _QosPub] = deque()
        self._incoming: dict[bytes, None] = {}
        self._qos2_seen: OrderedDict[bytes, None] = OrderedDict()
        self._subscriptions: dict[str, float] = {}
        self._exposed: dict[str, None] = {}
        self._removals: dict[tuple[str, str], None] = {}
        self._reactive = False
        self._reactive_from: float | None = None
        self._identity_id: bytes | None = None
        self._attest_id: bytes | None = None
        self._challenge_unsolicited = False
        self._login_deadline: float | None = None

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str | None:
        """The component name, ``None`` when anonymous."""
        return self._name

    @property
    def config(self) -> ClientConfig:
        """The configuration given at creation."""
        return self._config

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState`."""
        return self._state

    @property
    def subscriptions(self) -> Mapping[str, float]:
        """Subscribed topics and their ``msg_from`` (a read-only live view)."""
        return MappingProxyType(self._subscriptions)

    @property
    def exposed(self) -> frozenset[str]:
        """Exposed topics."""
        return frozenset(self._exposed)

    @property
    def is_reactive(self) -> bool:
        """Whether the application asked for reactive mode."""
        return self._reactive

    @property
    def pending_count(self) -> int:
        """Requests of the application waiting for a RESPONSE."""
        return len(self._requests)

    @property
    def unacked_count(self) -> int:
        """QoS1/QoS2 publications not yet acknowledged (the queued ones included)."""
        return len(self._unacked)

    @property
    def outbox_len(self) -> int:
        """Publications waiting in the outbox for the next connect."""
        return len(self._outbox)

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> list[bytes]:
        """Take the queued output; each item is one message (one WebSocket binary message)."""
        out = self._out
        if not out:
            return []
        self._out = []
        return out

    def events(self) -> list[Event]:
        """Take the queued events, oldest first."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

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

    def close(self) -> None:
        """End everything for good: the application is shutting the component down.

        Requests in flight end with ``RequestAborted``, unacknowledged and
        queued QoS publications with ``PublishFailed``; the outbox and unsent
        output are discarded; the state becomes CLOSED. Subscriptions and
        exposures stay recorded should ``connect()`` be called again.
        """
        self._drop_connection("connection closed")
        events = self._events
        for rec in self._unacked.values():
            events.append(PublishFailed(rec.handle, "connection closed"))
        self._unacked.clear()
        self._outbox.clear()
        self._out.clear()
        self._state = _CLOSED

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

    def _on_qos_pub(self, msg: Pub, flags: int) -> None:
        msg_id = msg.id
        assert msg_id is not None
        self._out.append(Ack(msg_id).encode())
        if flags == QOS_MASK:
            seen = self._qos2_seen
            if msg_id in seen:
                return
            seen[msg_id] = None
            if len(seen) > self._config.qos2_dedup_size:
                seen.popitem(last=False)
            self._events.append(_publication(msg.topic, msg.data, 2))
        else:
            self._events.append(_publication(msg.topic, msg.data, 1))

    def _on_ack(self, msg_id: bytes) -> None:
        rec = self._unacked.get(msg_id)
        if rec is None or not rec.sent:
            return
        del self._unacked[msg_id]
        rec.deadline = None
        if rec.qos == 2:
            self._out.append(Ack2(msg_id).encode())
        self._events.append(PublishAcked(rec.handle))

    def _on_rpc(self, msg: Rpc) -> None:
        topic = msg.topic
        if topic not in self._exposed:
            self._out.append(
                Response(msg.id, Status.METHOD_NOT_FOUND, Payload.of(topic)).encode())
            return
        incoming = self._incoming
        if len(incoming) >= self._config.max_pending_requests:
            self._out.append(Response(msg.id, Status.GENERIC_ERROR,
                                      Payload.of("too many requests in progress")).encode())
            return
        incoming[msg.id] = None
        self._events.append(RequestReceived(msg.id, topic, msg.data, msg.target))

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
        self._events.append(LoginFailed(status, reason))
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
        """Re-send the recorded state, then the outbox, then unacknowledged publications."""
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
        for rec in resend:
            self._arm(rec, ack_deadline)
            out.append(rec.frame)

    def _send_internal(self, kind: int, topic: str, cmd: str, command: dict[str, Any],
                       deadline: float) -> None:
        msg_id = self._new_id()
        self._out.append(Admin(msg_id, topic, command).encode())
        rec = _Request(msg_id, next(self._handles), deadline, kind, topic, cmd)
        self._internal[msg_id] = rec
        self._push(deadline, rec)

    # ------------------------------------------------------------------ helpers

    def _new_id(self) -> bytes:
        length = self._config.id_length
        factory = self._id_factory
        for _ in range(16):
            msg_id = factory(length)
            if type(msg_id) is not bytes or len(msg_id) != length:
                raise TypeError(f"id_factory({length}) must return {length} bytes, "
                                f"not {msg_id!r}")
            if (msg_id not in self._requests and msg_id not in self._unacked
                    and msg_id not in self._internal and msg_id != CONNECTION_ID
                    and msg_id != self._identity_id):
                return msg_id
        raise ClientError("id_factory keeps returning ids that are in use; "
                          "it must return random bytes")

    def _push(self, deadline: float, rec: _Timed) -> None:
        heap = self._timers
        heapq.heappush(heap, (deadline, next(self._seq), rec))
        size = len(heap)
        if size > 64 and size > 2 * (len(self._requests) + len(self._internal)
                                     + len(self._unacked)):
            self._rebuild_timers()

    def _rebuild_timers(self) -> None:
        seq = self._seq
        live: list[tuple[float, int, _Timed]] = []
        for group in (self._requests.values(), self._internal.values(), self._unacked.values()):
            for rec in group:
                if rec.deadline is not None:
                    live.append((rec.deadline, next(seq), rec))
        heapq.heapify(live)
        self._timers = live

    def _arm(self, rec: _QosPub, deadline: float) -> None:
        rec.deadline = deadline
        self._push(deadline, rec)

    def _check_can_request(self) -> None:
        if self._state is not _OPEN:
            raise NotConnected(f"cannot send a request in state {self._state.name}; "
                               f"wait for the Connected event")
        if len(self._requests) >= self._config.max_pending_requests:
            raise TooManyPending(f"{len(self._requests)} requests are already waiting for an "
                                 f"answer (ClientConfig.max_pending_requests)")

    def _track(self, msg_id: bytes, frame: bytes, deadline: float, topic: str, cmd: str) -> int:
        handle = next(self._handles)
        rec = _Request(msg_id, handle, deadline, _USER, topic, cmd)
        self._requests[msg_id] = rec
        self._push(deadline, rec)
        self._out.append(frame)
        return handle

    def _user_admin(self, topic: str, command: dict[str, Any], now: float) -> int:
        self._check_can_request()
        msg_id = self._new_id()
        frame = Admin(msg_id, topic, command).encode()
        return self._track(msg_id, frame, now + self._config.request_timeout, topic,
                           str(command.get("cmd")))

    @staticmethod
    def _reactive_command(on: bool, msg_from: float | None) -> dict[str, Any]:
        command: dict[str, Any] = {"cmd": "reactive", "status": on}
        if msg_from is not None:
            command["msg_from"] = msg_from
        return command

    def _enqueue(self, item: bytes | _QosPub) -> None:
        outbox = self._outbox
        config = self._config
        if len(outbox) >= config.outbox_size:
            policy: OverflowPolicy = config.outbox_overflow
            if policy == "error":
                raise OutboxFull(f"the outbox already holds {len(outbox)} publications waiting "
                                 f"for a connection (ClientConfig.outbox_size); reconnect, "
                                 f"publish less or choose another outbox_overflow policy")
            if policy == "drop_newest" or not outbox:
                if type(item) is _QosPub:
                    self._events.append(PublishFailed(item.handle, "outbox full"))
                return
            old = outbox.popleft()
            if type(old) is _QosPub:
                del self._unacked[old.id]
                self._events.append(PublishFailed(old.handle, "dropped from the full outbox"))
        outbox.append(item)
        if type(item) is _QosPub:
            self._unacked[item.id] = item

    # ------------------------------------------------------------------ actions

    @overload
    def publish(self, topic: str, args: _Args, *, qos: Literal[0] = 0, now: float) -> None: ...
    @overload
    def publish(self, topic: str, args: _Args, *, qos: Literal[1, 2], now: float) -> int: ...
    @overload
    def publish(self, topic: str, args: _Args, *, qos: int, now: float) -> int | None: ...

    def publish(self, topic: str, args: _Args, *, qos: int = 0, now: float) -> int | None:
        """Publish ``args`` (the positional arguments) on ``topic``.

        QoS0 returns ``None``. QoS1/QoS2 return a handle reported later by
        ``PublishAcked`` or ``PublishFailed``; the publication is resent every
        ``ack_timeout`` until acknowledged, at most ``send_retries`` times (the
        resend that follows a reconnect is not counted).
        When not OPEN the publication goes to the outbox and is sent after the
        next connect; a full outbox follows ``ClientConfig.outbox_overflow``.
        Raises ``TooManyPending`` when ``max_unacked_publishes`` QoS
        publications are pending, ``EncodeError`` for unencodable args.
        """
        if type(topic) is not str:
            raise _topic_error(topic)
        kind = type(args)
        if kind is not tuple and kind is not list:
            if isinstance(args, Payload):
                return self._publish_payload(topic, args, qos, now)
            if not isinstance(args, (tuple, list)):
                raise _args_error(args)
        if qos == 0 and type(qos) is int:
            frame = _dumps([1, topic, args])
            if self._state is _OPEN:
                self._out.append(frame)
            else:
                self._enqueue(frame)
            return None
        flags = self._qos_flags(qos)
        msg_id = self._new_id()
        return self._publish_qos(msg_id, _dumps([1 | flags, msg_id, topic, args]), qos, now)

    def _publish_payload(self, topic: str, data: Payload, qos: int, now: float) -> int | None:
        if qos == 0 and type(qos) is int:
            frame = Pub(topic, data).encode()
            if self._state is _OPEN:
                self._out.append(frame)
            else:
                self._enqueue(frame)
            return None
        flags = self._qos_flags(qos)
        msg_id = self._new_id()
        return self._publish_qos(msg_id, Pub(topic, data, msg_id, flags).encode(), qos, now)

    def _qos_flags(self, qos: object) -> int:
        if type(qos) is not int:
            raise TypeError(f"qos must be the int 0, 1 or 2, not {_type_name(qos)}")
        if qos == 1:
            flags = QOS1
        elif qos == 2:
            flags = QOS2
        else:
            raise ValueError(f"qos must be 0, 1 or 2, not {qos}")
        if len(self._unacked) >= self._config.max_unacked_publishes:
            raise TooManyPending(f"{len(self._unacked)} QoS publications are already waiting "
                                 f"for an ACK (ClientConfig.max_unacked_publishes)")
        return flags

    def _publish_qos(self, msg_id: bytes, frame: bytes, qos: int, now: float) -> int:
        handle = next(self._handles)
        rec = _QosPub(msg_id, handle, frame, qos)
        if self._state is _OPEN:
            rec.sent = True
            self._unacked[msg_id] = rec
            self._arm(rec, now + self._config.ack_timeout)
            self._out.append(frame)
        else:
            self._enqueue(rec)
        return handle

    def rpc(self, topic: str, args: _Args, *,
            target: str | None = None, now: float, timeout: float | None = None) -> int:
        """Call ``topic`` with positional ``args``; return the request handle.

        ``target`` names the component for a direct call (``None``: the broker
        picks an exposer). ``timeout`` overrides ``ClientConfig.request_timeout``.
        Raises ``NotConnected`` unless OPEN, ``TooManyPending`` beyond
        ``max_pending_requests``, ``EncodeError`` for unencodable args.
        """
        if type(topic) is not str:
            raise _topic_error(topic)
        if target is not None and type(target) is not str:
            raise TypeError(f"target must be a component name (str) or None, "
                            f"not {_type_name(target)}")
        if isinstance(args, Payload):
            data = args
        elif isinstance(args, (tuple, list)):
            data = Payload.of_args(args)
        else:
            raise _args_error(args)
        wait = self._config.request_timeout if timeout is None else _check_timeout(timeout)
        self._check_can_request()
        msg_id = self._new_id()
        frame = Rpc(msg_id, topic, data, target).encode()
        return self._track(msg_id, frame, now + wait, topic, "rpc")

    def admin(self, topic: str, command: dict[str, Any], *, now: float) -> int:
        """Send a generic admin command ``[3, id, topic, command]``; return its handle.

        ``command`` is a map with a text ``"cmd"`` key. Nothing is recorded for
        restore: use ``subscribe``/``expose``/``reactive`` for that.
        """
        _check_topic(topic)
        if not isinstance(command, dict) or not isinstance(command.get("cmd"), str):
            raise ValueError('command must be a dict with a text "cmd" key, '
                             'e.g. {"cmd": "broker_config"}')
        return self._user_admin(topic, command, now)

    def subscribe(self, topic: str, *, msg_from: float = NOW, now: float) -> int | None:
        """Subscribe to ``topic``; ``msg_from`` is NOW, LAST_RECEIVED or a window in ns.

        Recorded and re-sent after every connect. Returns the request handle
        when OPEN, else ``None`` (it is sent on the next connect).
        """
        _check_topic(topic)
        _check_msg_from(msg_from)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(topic, {"cmd": "subscribe", "msg_from": msg_from}, now)
        self._subscriptions[topic] = msg_from
        self._removals.pop(("unsubscribe", topic), None)
        return handle

    def unsubscribe(self, topic: str, *, now: float) -> int | None:
        """Stop the subscription to ``topic``; a handle when OPEN, else ``None``.

        When not OPEN a named component sends the unsubscribe on the next
        connect (the broker remembers a named component's subscriptions).
        """
        return self._remove(topic, "unsubscribe", self._subscriptions, now)

    def expose(self, topic: str, *, now: float) -> int | None:
        """Expose the RPC method ``topic``; a handle when OPEN, else ``None``.

        Recorded and re-sent after every connect. Incoming requests for it
        become ``RequestReceived`` events; others are answered with 42.
        """
        _check_topic(topic)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(topic, {"cmd": "expose"}, now)
        self._exposed[topic] = None
        self._removals.pop(("unexpose", topic), None)
        return handle

    def unexpose(self, topic: str, *, now: float) -> int | None:
        """Stop exposing ``topic``; a handle when OPEN, else ``None`` (as ``unsubscribe``)."""
        return self._remove(topic, "unexpose", self._exposed, now)

    def _remove(self, topic: str, cmd: str, record: dict[str, Any], now: float) -> int | None:
        _check_topic(topic)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(topic, {"cmd": cmd}, now)
        elif self._name is not None:
            self._removals[(cmd, topic)] = None
        record.pop(topic, None)
        return handle

    def reactive(self, on: bool, *, msg_from: float | None = None, now: float) -> int | None:
        """Turn delivery of publications on or off (admin ``reactive`` on ``__config__``).

        ``msg_from`` (ns), when given, is sent along: Julia brokers replay
        stored messages only within that window. Recorded and re-sent after
        every connect when on. A handle when OPEN, else ``None``.
        """
        if type(on) is not bool:
            raise TypeError(f"on must be True or False, not {_type_name(on)}")
        if msg_from is not None:
            _check_msg_from(msg_from)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(CONFIG_TOPIC, self._reactive_command(on, msg_from), now)
        self._reactive = on
        self._reactive_from = msg_from
        return handle

    def respond(self, request_id: bytes, status: int = Status.OK, value: Any = None) -> None:
        """Answer the incoming request ``request_id`` of a ``RequestReceived`` event.

        ``value`` is the result (status 0) or the error reason; a ``Payload``
        is sent as is. A request received on an earlier connection, or already
        answered, is silently dropped: the broker no longer waits for it.
        """
        if type(request_id) is not bytes:
            raise TypeError(f"request_id must be the bytes of RequestReceived.request_id, "
                            f"not {_type_name(request_id)}")
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int (see Status), not {_type_name(status)}")
        if isinstance(value, Payload):
            data = value
        else:
            data = NO_DATA if value is None else Payload.of(value)
        frame = Response(request_id, status, data).encode()
        incoming = self._incoming
        if request_id in incoming:
            del incoming[request_id]
            self._out.append(frame)

    def register(self, name: str, pin: str, pubkey: _BytesLike, keytype: int, *,
                 now: float) -> int:
        """Register ``pubkey`` for ``name`` (REGISTER ``[10, id, name, pin, pubkey, keytype]``).

        ``keytype`` is 1 for RSA, 2 for ECDSA. Send it on an anonymous
        connection: Julia brokers ignore it on a named one. While it waits for
        its answer, the unsolicited challenge of a broker in authenticated mode
        is ignored (registering needs no login). Returns a handle.
        """
        if type(name) is not str:
            raise TypeError(f"name must be a str, not {_type_name(name)}")
        if not name:
            raise ValueError("name must not be empty")
        if type(pin) is not str:
            raise TypeError(f"pin must be a str, not {_type_name(pin)}")
        if not isinstance(pubkey, (bytes, bytearray, memoryview)):
            raise TypeError(f"pubkey must be bytes (PEM or DER), not {_type_name(pubkey)}")
        if type(keytype) is not int:
            raise TypeError(f"keytype must be the int 1 (RSA) or 2 (ECDSA), not "
                            f"{_type_name(keytype)}")
        if keytype not in (1, 2):
            raise ValueError(f"keytype must be 1 (RSA) or 2 (ECDSA), not {keytype!r}")
        self._check_can_request()
        msg_id = self._new_id()
        frame = Register(msg_id, name, pin, bytes(pubkey), keytype).encode()
        return self._track(msg_id, frame, now + self._config.request_timeout, name, "register")

    def unregister(self, *, now: float) -> int:
        """Drop the registered key of this (authenticated) component; returns a handle."""
        self._check_can_request()
        msg_id = self._new_id()
        return self._track(msg_id, Unregister(msg_id).encode(),
                           now + self._config.request_timeout, self._name or "", "unregister")

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
