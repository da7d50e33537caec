"""Exceptions raised by the Rembus client API."""

from __future__ import annotations

from typing import Any

from rembus_proto import Status


class RembusError(Exception):
    """A request failed; ``status`` is the Rembus status code, ``message`` the reason."""

    status: int = Status.GENERIC_ERROR

    def __init__(self, message: Any = None, status: int | None = None) -> None:
        if status is not None:
            self.status = status
        self.message = message
        text = message if isinstance(message, str) else (
            "" if message is None else repr(message))
        super().__init__(f"{text} (status {self.status})" if text else f"status {self.status}")


class RembusTimeout(RembusError, TimeoutError):
    """No answer within the request timeout."""

    status = Status.TIMEOUT


class RembusConnectionClosed(RembusError, ConnectionError):
    """The connection to the broker is not there (or was lost during the request)."""

    def __str__(self) -> str:
        # No broker sent a status: the message alone says what happened.
        return self.message if isinstance(self.message, str) and self.message else (
            super().__str__())


CLOSE_OVERWRITTEN = 4000
"""Close code of a connection whose name another connection took over."""


class ConnectionOverwritten(RembusConnectionClosed):
    """Another connection took over this component's name (a broker run with
    ``--overwrite-connection`` closed this one with code 4000). The component
    does not reconnect by itself: two holders of one name would take it from
    each other forever."""


def overwritten(code: int | None, reason: str) -> ConnectionOverwritten | None:
    """The error for a connection closed with ``code``, if that code means overwritten."""
    if code != CLOSE_OVERWRITTEN:
        return None
    why = f": {reason}" if reason else ""
    return ConnectionOverwritten(f"closed by the broker (code 4000{why}); another connection "
                                 "took the name, not reconnecting")


class MethodNotFound(RembusError):
    """Nobody exposes the method (status 42)."""

    status = Status.METHOD_NOT_FOUND


class MethodException(RembusError):
    """The exposer's handler raised (status 40); ``message`` is its error text."""

    status = Status.METHOD_EXCEPTION


class MethodUnavailable(RembusError):
    """The method is exposed but no exposer can serve it now (status 43)."""

    status = Status.METHOD_UNAVAILABLE


class MethodLoopback(RembusError):
    """The only exposer of the method is the caller itself (status 44)."""

    status = Status.METHOD_LOOPBACK


class TargetNotFound(RembusError):
    """A direct call named an unknown component (status 45)."""

    status = Status.TARGET_NOT_FOUND


class TargetDown(RembusError):
    """A direct call named a component that is not connected (status 46)."""

    status = Status.TARGET_DOWN


class UnknownCommand(RembusError):
    """The broker does not know the admin command (status 47)."""

    status = Status.UNKNOWN_ADMIN_CMD


class NameAlreadyTaken(RembusError):
    """The name is already registered (status 60)."""

    status = Status.NAME_ALREADY_TAKEN


class LoginFailed(RembusError):
    """The broker refused the component's name or its signature."""


_BY_STATUS: dict[int, type[RembusError]] = {
    cls.status: cls
    for cls in (MethodNotFound, MethodException, MethodUnavailable, MethodLoopback,
                TargetNotFound, TargetDown, UnknownCommand, NameAlreadyTaken)
}


def error_for(status: int, message: Any) -> RembusError:
    """The exception for a non-OK RESPONSE status."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return RembusError(message, status)
    return cls(message)


__all__ = [
    "ConnectionOverwritten",
    "LoginFailed",
    "MethodException",
    "MethodLoopback",
    "MethodNotFound",
    "MethodUnavailable",
    "NameAlreadyTaken",
    "RembusConnectionClosed",
    "RembusError",
    "RembusTimeout",
    "TargetDown",
    "TargetNotFound",
    "UnknownCommand",
    "error_for",
]
