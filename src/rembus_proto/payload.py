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

    __slots__ = ("decoded", "encoded", "max_depth")

    def __init__(self, raw: bytes | None = None, value: Any = _UNSET,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if raw is None and value is _UNSET:
            raise ValueError("a Payload needs raw bytes or a value")
        self.encoded: bytes | None = raw
        """The CBOR bytes when known (received, or already encoded); else ``None``."""
        self.decoded: Any = value
        """The value when known (built, or already decoded); else an internal marker."""
        self.max_depth = max_depth
        """Nesting limit applied when the bytes are decoded."""

    @staticmethod
    def of(value: Any) -> Payload:
        """Wrap an application value; it is encoded when first needed."""
        payload: Payload = _new(Payload)
        payload.encoded = None
        payload.decoded = value
        payload.max_depth = DEFAULT_MAX_DEPTH
        return payload

    @staticmethod
    def of_args(args: tuple[Any, ...] | list[Any]) -> Payload:
        """Wrap positional arguments as the CBOR array that PUB and RPC carry."""
        return Payload.of(list(args))

    @property
    def raw(self) -> bytes:
        """The CBOR encoding (raises :class:`EncodeError` for unencodable values)."""
        raw = self.encoded
        if raw is None:
            raw = self.encoded = cbor.dumps(self.decoded)
        return raw

    @property
    def value(self) -> Any:
        """The decoded value (raises :class:`ProtocolError` for malformed bytes)."""
        value = self.decoded
        if value is _UNSET:
            assert self.encoded is not None
            value = self.decoded = cbor.loads_exact(self.encoded, self.max_depth)
        return value

    @property
    def args(self) -> tuple[Any, ...]:
        """The value as positional arguments.

        An array gives its elements, ``null`` gives no arguments and any other
        value is one argument (the tolerant reading of spec section 2.5).
        """
        value = self.decoded
        if value is _UNSET:
            assert self.encoded is not None
            value = self.decoded = cbor.loads_exact(self.encoded, self.max_depth)
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
        if self.decoded is not _UNSET:
            return f"Payload({self.decoded!r})"
        assert self.encoded is not None
        return f"Payload(raw={self.encoded[:32].hex()}{'...' if len(self.encoded) > 32 else ''})"

    @staticmethod
    def received(raw: bytes, max_depth: int) -> Payload:
        """A payload of bytes received from the network (fast path of the decoder)."""
        payload: Payload = _new(Payload)
        payload.encoded = raw
        payload.decoded = _UNSET
        payload.max_depth = max_depth
        return payload


raw_payload = Payload.received


NO_DATA = Payload(raw=cbor.NULL, value=None)
NO_ARGS = Payload(raw=b"\x80", value=[])
