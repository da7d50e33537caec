"""What every driver shares: handler registries, argument and result conversion."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rembus.client import dataframes
from rembus.client.dataframes import TAG_HEAD
from rembus.client.options import DataFrameKind
from rembus.errors import LoginFailed, RembusConnectionClosed, RembusError, RembusTimeout, error_for
from rembus.security import keys
from rembus_proto import EncodeError, Payload, ProtocolError, Status, challenge_input
from rembus_proto.client_events import (
    ChallengeRequested,
    PublishAcked,
    PublishFailed,
    RequestAborted,
    RequestCompleted,
    RequestReceived,
    RequestTimedOut,
)

log = logging.getLogger("rembus")

Handler = Callable[..., Any]


def topic_of(fn_or_topic: Any, topic: str | None, what: str) -> str:
    """The topic of a handler: ``topic`` if given, else the function's name."""
    if topic is not None:
        return check_topic(topic, what)
    if isinstance(fn_or_topic, str):
        return check_topic(fn_or_topic, what)
    if not callable(fn_or_topic):
        raise TypeError(f"{what}() takes a function (or a topic string), "
                        f"not {type(fn_or_topic).__name__}")
    name = getattr(fn_or_topic, "__name__", None)
    if not isinstance(name, str) or not name or name == "<lambda>":
        raise ValueError(f"{what}() needs a topic for a function without a name: "
                         f"{what}(fn, topic='mytopic')")
    return name


#: What each call takes first, for the error that a wrong value raises.
_FIRST_ARGUMENT = {
    "publish": ("topic", "publish(topic, *args) takes the topic first"),
    "rpc": ("method name", "rpc(method, *args) takes the name of the method first"),
    "direct": ("method name",
               "direct(target, method, *args) takes the name of the method second"),
    "admin": ("topic", "admin(topic, command) takes the topic first"),
}


def check_topic(topic: Any, what: str) -> str:
    """Return ``topic`` if it is a non-empty str, else raise an error naming the call ``what``."""
    if topic.__class__ is str and topic:  # the usual case: no lookup, no message built
        return topic
    noun, usage = _FIRST_ARGUMENT.get(
        what, ("topic", f"{what}() takes a function or a topic"))
    if not isinstance(topic, str):
        raise TypeError(f"the {noun} must be a str, not {type(topic).__name__} ({usage})")
    if not topic:
        raise ValueError(f"the {noun} must not be empty ({usage})")
    return topic


def check_qos(qos: Any) -> None:
    """Raise a clear error unless ``qos`` is the int 0, 1 or 2."""
    if qos.__class__ is not int or not 0 <= qos <= 2:
        raise (TypeError if qos.__class__ is not int else ValueError)(
            f"qos must be the int 0, 1 or 2, not {qos!r} (publish(topic, *args, qos=1))")


def check_timeout(timeout: Any, what: str) -> None:
    """Raise a clear error unless ``timeout`` is ``None`` or a positive number of seconds."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what}(..., timeout=) takes a number of seconds, not "
                        f"{type(timeout).__name__}")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"{what}(..., timeout=) takes a positive number of seconds, "
                         f"not {timeout!r}")


def check_handler(fn: Any, what: str) -> Handler:
    """Return ``fn`` if it can be called, else raise a clear ``TypeError``."""
    if not callable(fn):
        raise TypeError(f"{what}() takes a function, not {type(fn).__name__}")
    return fn  # type: ignore[no-any-return]


class Registry:
    """Handlers by topic, and the count of messages dropped for a bad payload."""

    def __init__(self) -> None:
        self.subscribers: dict[str, Handler] = {}
        self.exposed: dict[str, Handler] = {}
        self.dropped = 0

    def call_args(self, data: Payload, kind: DataFrameKind, topic: str
                  ) -> tuple[Any, ...] | None:
        """Positional arguments for a handler of ``topic``, or ``None`` (counted in
        :attr:`dropped`, logged) when the payload is malformed or holds a bad DataFrame."""
        try:
            args = data.args
            raw = data.encoded
            if raw is not None and TAG_HEAD not in raw:  # from_payload's test, one call less
                return args
            return dataframes.from_payload(data, args, kind)  # type: ignore[no-any-return]
        except (ProtocolError, dataframes.BadDataFrame) as exc:
            self.dropped += 1
            log.warning("dropping a message on %s with a bad payload: %s", topic, exc)
            return None


wire_args = dataframes.to_wire_args
"""Outgoing arguments as the protocol core takes them (DataFrames become tag 80); the
function of :mod:`rembus.client.dataframes` itself, one call less on every publish."""


def wire_payload(args: tuple[Any, ...]) -> Payload:
    """Outgoing arguments encoded now (encoding errors are raised here)."""
    data = dataframes.to_wire_args(args)
    if isinstance(data, Payload):
        return data
    payload = Payload.of_args(data)
    payload.raw  # noqa: B018 - encode now: errors belong to the caller
    return payload


def response_for_result(result: Any) -> tuple[int, Any]:
    """Status and value answering a request whose handler returned ``result``."""
    if type(result) in dataframes.SCALAR_TYPES:
        return Status.OK, result
    try:
        return Status.OK, dataframes.encode(result)
    except EncodeError as exc:
        return Status.METHOD_EXCEPTION, f"the result cannot be sent: {exc}"


def response_for_error(exc: BaseException) -> tuple[int, Any]:
    """Status and value answering a request whose handler raised ``exc``."""
    if isinstance(exc, RembusError):
        return exc.status, exc.message if exc.message is not None else str(exc)
    return Status.METHOD_EXCEPTION, str(exc) or type(exc).__name__


def result_of(status: int, data: Payload, kind: DataFrameKind) -> Any:
    """The value of a successful response; raise the matching error otherwise."""
    try:
        value = data.value
    except ProtocolError as exc:
        raise RembusError(f"malformed response: {exc}") from None
    if status != Status.OK:
        raise error_for(status, value)
    try:
        return dataframes.from_payload(data, value, kind)
    except dataframes.BadDataFrame as exc:
        raise RembusError(f"malformed response: {exc}") from None


Outcome = tuple[int, Any, BaseException | None]
"""How a request ended: its handle, its value and the error to raise (or ``None``)."""

Calls = dict[int, tuple[str, float]]
"""What each request in flight is (e.g. ``rpc 'add'``) and its timeout, by handle."""


def request_outcome(event: object, kind: DataFrameKind, calls: Calls,
                    timeout: float) -> Outcome | None:
    """The outcome an event reports for a request or QoS publication, else ``None``.

    ``calls`` describes the requests whose timeout error must name them (the
    entry of a request that ended is removed); others report ``timeout``.
    """
    cls = event.__class__
    if cls is RequestCompleted:
        assert isinstance(event, RequestCompleted)
        if calls:
            calls.pop(event.handle, None)
        try:
            return event.handle, result_of(event.status, event.data, kind), None
        except RembusError as exc:
            return event.handle, None, exc
    if cls is PublishAcked:
        assert isinstance(event, PublishAcked)
        return event.handle, None, None
    if cls is RequestTimedOut:
        assert isinstance(event, RequestTimedOut)
        what, wait = calls.pop(event.handle, ("the request", timeout))
        return event.handle, None, RembusTimeout(f"{what}: no answer within {wait:g} s")
    if cls is RequestAborted:
        assert isinstance(event, RequestAborted)
        if calls:
            calls.pop(event.handle, None)
        return event.handle, None, RembusConnectionClosed(event.reason)
    if cls is PublishFailed:
        assert isinstance(event, PublishFailed)
        return event.handle, None, RembusTimeout(event.reason)
    return None


def exposer_call(registry: Registry, event: RequestReceived, kind: DataFrameKind
                 ) -> tuple[Handler, tuple[Any, ...]] | tuple[None, tuple[int, str]]:
    """The exposed handler and its arguments, or ``None`` and the error response to send."""
    handler = registry.exposed.get(event.topic)
    if handler is None:
        return None, (Status.METHOD_NOT_FOUND, event.topic)
    args = registry.call_args(event.data, kind, event.topic)
    if args is None:
        return None, (Status.METHOD_ARGS_ERROR, "malformed arguments")
    return handler, args


def challenge_signature(event: ChallengeRequested) -> bytes:
    """Sign the broker's challenge with the component's key; LoginFailed without one."""
    try:
        return keys.sign(event.name, challenge_input(event.challenge, event.name))
    except keys.KeyNotFound as exc:
        raise LoginFailed(str(exc), Status.CHALLENGE) from None
