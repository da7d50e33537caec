"""What every driver shares: handler registries, argument and result conversion."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rembus.client import dataframes
from rembus.client.options import DataFrameKind
from rembus.errors import LoginFailed, RembusConnectionClosed, RembusError, RembusTimeout, error_for
from rembus.security import keys
from rembus_proto import EncodeError, Payload, ProtocolError, Status, challenge_input
from rembus_proto.client_events import (
    ChallengeRequested,
    PublicationReceived,
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
        return check_topic(topic)
    if isinstance(fn_or_topic, str):
        return check_topic(fn_or_topic)
    if not callable(fn_or_topic):
        raise TypeError(f"{what}() takes a function (or a topic string), "
                        f"not {type(fn_or_topic).__name__}")
    name = getattr(fn_or_topic, "__name__", None)
    if not isinstance(name, str) or not name or name == "<lambda>":
        raise ValueError(f"{what}() needs a topic for a function without a name: "
                         f"{what}(fn, topic='mytopic')")
    return name


def check_topic(topic: Any) -> str:
    """Return ``topic`` if it is a non-empty str, else raise a clear error."""
    if not isinstance(topic, str):
        raise TypeError(f"the topic must be a str, not {type(topic).__name__} "
                        f"(publish(topic, *args) takes the topic first)")
    if not topic:
        raise ValueError("the topic must not be empty")
    return topic


def check_handler(fn: Any, what: str) -> Handler:
    """Return ``fn`` if it can be called, else raise a clear ``TypeError``."""
    if not callable(fn):
        raise TypeError(f"{what}() takes a function, not {type(fn).__name__}")
    return fn  # type: ignore[no-any-return]


class Registry:
    """Handlers by topic: subscribers and exposed methods."""

    def __init__(self) -> None:
        self.subscribers: dict[str, Handler] = {}
        self.exposed: dict[str, Handler] = {}


def call_args(data: Payload, kind: DataFrameKind) -> tuple[Any, ...] | None:
    """Positional arguments for a handler, or ``None`` when the payload is malformed."""
    try:
        args = data.args
    except ProtocolError as exc:
        log.warning("dropping a message with a malformed payload: %s", exc)
        return None
    return dataframes.from_wire_args(args, kind)


def wire_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Outgoing arguments as the protocol core takes them (DataFrames become tag 80)."""
    return dataframes.to_wire_args(args)


def response_for_result(result: Any) -> tuple[int, Any]:
    """Status and value answering a request whose handler returned ``result``."""
    payload = Payload.of(dataframes.to_wire(result))
    try:
        payload.raw  # noqa: B018 - encode now to report failures as errors
    except EncodeError as exc:
        return Status.METHOD_EXCEPTION, f"the result cannot be sent: {exc}"
    return Status.OK, payload


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
    return dataframes.from_wire(value, kind)


Outcome = tuple[int, Any, BaseException | None]
"""How a request ended: its handle, its value and the error to raise (or ``None``)."""


def request_outcome(event: object, kind: DataFrameKind, timeout: float) -> Outcome | None:
    """The outcome an event reports for a request or QoS publication, else ``None``."""
    cls = event.__class__
    if cls is RequestCompleted:
        assert isinstance(event, RequestCompleted)
        try:
            return event.handle, result_of(event.status, event.data, kind), None
        except RembusError as exc:
            return event.handle, None, exc
    if cls is PublishAcked:
        assert isinstance(event, PublishAcked)
        return event.handle, None, None
    if cls is RequestTimedOut:
        assert isinstance(event, RequestTimedOut)
        return event.handle, None, RembusTimeout(f"no answer within {timeout} s")
    if cls is RequestAborted:
        assert isinstance(event, RequestAborted)
        return event.handle, None, RembusConnectionClosed(event.reason)
    if cls is PublishFailed:
        assert isinstance(event, PublishFailed)
        return event.handle, None, RembusTimeout(event.reason)
    return None


def subscriber_call(registry: Registry, event: PublicationReceived,
                    kind: DataFrameKind) -> tuple[Handler, tuple[Any, ...]] | None:
    """The subscriber and its arguments for a publication (``None``: nothing to call)."""
    handler = registry.subscribers.get(event.topic)
    if handler is None:
        return None
    args = call_args(event.data, kind)
    if args is None:
        return None
    return handler, args


def exposer_call(registry: Registry, event: RequestReceived, kind: DataFrameKind
                 ) -> tuple[Handler, tuple[Any, ...]] | tuple[None, tuple[int, str]]:
    """The exposed handler and its arguments, or ``None`` and the error response to send."""
    handler = registry.exposed.get(event.topic)
    if handler is None:
        return None, (Status.METHOD_NOT_FOUND, event.topic)
    args = call_args(event.data, kind)
    if args is None:
        return None, (Status.METHOD_ARGS_ERROR, "malformed arguments")
    return handler, args


def challenge_signature(event: ChallengeRequested) -> bytes:
    """Sign the broker's challenge with the component's key; LoginFailed without one."""
    try:
        return keys.sign(event.name, challenge_input(event.challenge, event.name))
    except keys.KeyNotFound as exc:
        raise LoginFailed(str(exc), Status.CHALLENGE) from None
