"""Lazily decoded and lazily encoded CBOR payloads."""

from __future__ import annotations

from typing import Any

from . import cbor
from .constants import DEFAULT_MAX_DEPTH

_UNSET: Any = object()
_new = object.__new__


class Payload:
    """The ``data`` element of a message, as raw CBOR bytes and/or a value.

    A payload received from the network keeps its bytes untouched, so a broker
    can forward it without decoding it; :attr:`value` decodes on first use.
    A payload built by the application encodes on first use of :attr:`raw`.
    """

    __slots__ = ("_max_depth", "_raw", "_value")

    def __init__(self, raw: bytes | None = None, value: Any = _UNSET,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if raw is None and value is _UNSET:
            raise ValueError("a Payload needs raw bytes or a value")
        self._raw = raw
        self._value = value
        self._max_depth = max_depth

    @staticmethod
    def of(value: Any) -> Payload:
        """Wrap an application value; it is encoded when first needed."""
        payload: Payload = _new(Payload)
        payload._raw = None
        payload._value = value
        payload._max_depth = DEFAULT_MAX_DEPTH
        return payload

    @staticmethod
    def of_args(args: tuple[Any, ...] | list[Any]) -> Payload:
        """Wrap positional arguments as the CBOR array that PUB and RPC carry."""
        return Payload.of(list(args))

    @property
    def raw(self) -> bytes:
        """The CBOR encoding (raises :class:`EncodeError` for unencodable values)."""
        raw = self._raw
        if raw is None:
            raw = self._raw = cbor.dumps(self._value)
        return raw

    @property
    def value(self) -> Any:
        """The decoded value (raises :class:`ProtocolError` for malformed bytes)."""
        value = self._value
        if value is _UNSET:
            assert self._raw is not None
            value = self._value = cbor.loads_exact(self._raw, self._max_depth)
        return value

    @property
    def args(self) -> tuple[Any, ...]:
        """The value as positional arguments.

        An array gives its elements, ``null`` gives no arguments and any other
        value is one argument (the tolerant reading of spec section 2.5).
        """
        value = self._value
        if value is _UNSET:
            assert self._raw is not None
            value = self._value = cbor.loads_exact(self._raw, self._max_depth)
        if type(value) is list:
            return tuple(value)
        if value is None:
            return ()
        return (value,)

    def validate(self) -> None:
        """Decode now, so that malformed bytes raise here and not later."""
        self.value  # noqa: B018

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Payload):
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        if self._value is not _UNSET:
            return f"Payload({self._value!r})"
        assert self._raw is not None
        return f"Payload(raw={self._raw[:32].hex()}{'...' if len(self._raw) > 32 else ''})"


def raw_payload(raw: bytes, max_depth: int) -> Payload:
    """A payload of bytes received from the network (fast path of the decoder)."""
    payload: Payload = _new(Payload)
    payload._raw = raw
    payload._value = _UNSET
    payload._max_depth = max_depth
    return payload


NO_DATA = Payload(raw=cbor.NULL, value=None)
NO_ARGS = Payload(raw=b"\x80", value=[])
