"""State, records and argument checks shared by the parts of the client machine.

:class:`_ClientState` holds everything a :class:`~rembus_proto.ClientConnection`
knows (requests in flight, QoS records, the outbox, the recorded intent, the
timer heap) and the helpers every part uses; the parts add behaviour:
:mod:`.client_publish` (publications, QoS, outbox), :mod:`.client_requests`
(requests and the recorded intent) and :mod:`.client` (lifecycle, login,
input, timers, restore).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from . import cbor
from .client_config import ClientConfig, ClientError, ConnectionState
from .client_events import Event, PublicationReceived
from .constants import CONNECTION_ID
from .entropy import RandomPool
from .payload import Payload

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


def _publication(topic: str, data: Payload, qos: int,
                 msg_id: bytes | None = None) -> PublicationReceived:
    # received PUBs are the hottest input: skip the generated __new__
    return _tuple_new(PublicationReceived, (topic, data, qos, msg_id))


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


class _ClientState:
    """What the parts of the client machine share (see the module doc)."""

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
        self.published_bytes = 0
        """Bytes of publications queued since the last :meth:`data_to_send` (a driver
        writes early once they are many: large messages would otherwise pile up)."""
        self._events: list[Event] = []
        self._handles = itertools.count(1)
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _Timed]] = []
        self._requests: dict[bytes, _Request] = {}
        self._internal: dict[bytes, _Request] = {}
        self._unacked: dict[bytes, _QosPub] = {}
        self._outbox: deque[bytes | _QosPub] = deque()
        self._incoming: dict[bytes, None] = {}
        # QoS2 ids received -> whether they were acknowledged (duplicates are filtered)
        self._qos2_seen: OrderedDict[bytes, bool] = OrderedDict()
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
        self.published_bytes = 0
        return out

    def events(self) -> list[Event]:
        """Take the queued events, oldest first."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

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
