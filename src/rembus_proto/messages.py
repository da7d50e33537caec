"""One immutable value type per Rembus message, and the codec.

``decode(bytes) -> Message`` reads every generation of the protocol
(16-byte ids of 0.1.x peers, 8-byte ids of current ones, 3/4-element
IDENTITY, 4/5-element RPC, ...). ``encode(message) -> bytes`` writes
shortest-form CBOR that matches the upstream implementations byte for byte.
The ``data`` element of PUB, RPC and RESPONSE stays raw until it is used
(see :class:`Payload`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import cbor
from .cbor import (
    byte_string,
    head,
    is_uint64,
    loads_exact,
    loads_items,
    read_bytes,
    read_head,
    read_optional_text,
    read_text,
    read_uint,
    text,
)
from .constants import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ID_LENGTH,
    DEFAULT_MAX_MESSAGE_SIZE,
    FLAGS_MASK,
    QOS_MASK,
    SLOT,
    MessageType,
    Status,
)
from .errors import MalformedMessage, MessageTooLarge, UnknownMessageType
from .payload import NO_DATA, Payload, raw_payload
from .values import typed_equality

_TYPE_HEAD = [head(0, t) for t in range(256)]


def _check_id(msg_id: object) -> bytes:
    if type(msg_id) is not bytes:
        raise TypeError(f"message id must be bytes, not {type(msg_id).__name__}")
    return msg_id


def _check_uint(value: object, what: str) -> int:
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not is_uint64(value):
        raise ValueError(f"{what} must be an unsigned 64-bit integer, not {value}")
    return value


def _check_str(value: object, what: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


class Identity(NamedTuple):
    """``[0, id, cid(, meta)]``: a named component introduces itself."""

    id: bytes
    cid: str
    meta: Any = None
    """Listeners of the sender (``{"ws": 9000}``); ``None`` means the 3-element form."""

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        parts = [b"\x84" if self.meta is not None else b"\x83", b"\x00",
                 byte_string(_check_id(self.id)), text(_check_str(self.cid, "cid"))]
        if self.meta is not None:
            parts.append(cbor.dumps(self.meta))
        return b"".join(parts)


class Pub(NamedTuple):
    """``[1, topic, data]`` or ``[1|flags, id, topic, data]``: a publication.

    ``flags`` holds the QoS and SLOT bits of the type byte; ``id`` is
    required when any flag is set.
    """

    topic: str
    data: Payload
    id: bytes | None = None
    flags: int = 0

    @property
    def qos(self) -> int:
        """0, 1 or 2."""
        bits = self.flags & QOS_MASK
        return 0 if bits == 0 else (2 if bits == QOS_MASK else 1)

    @property
    def slot(self) -> int | None:
        """The time slot carried in the id, when the SLOT flag is set."""
        if self.flags & SLOT and self.id is not None and len(self.id) >= 4:
            return int.from_bytes(self.id[:4], "little")
        return None

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        topic, data, msg_id, flags = self
        if type(topic) is not str:
            _check_str(topic, "topic")
        if msg_id is None:
            if flags:
                raise ValueError("a PUB with QoS or SLOT flags needs an id")
            if data.encoded is None:
                return cbor.dumps([1, topic, data.decoded])
            return b"\x83\x01" + text(topic) + data.encoded
        type_byte = 1 | (flags & FLAGS_MASK)
        if type(msg_id) is not bytes:
            _check_id(msg_id)
        if data.encoded is None:
            return cbor.dumps([type_byte, msg_id, topic, data.decoded])
        return b"".join((b"\x84", _TYPE_HEAD[type_byte], byte_string(msg_id), text(topic),
                         data.encoded))


class Rpc(NamedTuple):
    """``[2, id, topic, target, data]``: a request; ``target`` set for direct calls."""

    id: bytes
    topic: str
    data: Payload
    target: str | None = None

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        msg_id, topic, data, target = self
        if type(msg_id) is not bytes or type(topic) is not str:
            _check_id(msg_id)
            _check_str(topic, "topic")
        if target is not None:
            _check_str(target, "target")
        if data.encoded is None:
            return cbor.dumps([2, msg_id, topic, target, data.decoded])
        return b"".join((b"\x85\x02", byte_string(msg_id), text(topic),
                         cbor.NULL if target is None else text(target), data.encoded))


class Admin(NamedTuple):
    """``[3, id, topic, command]``: a subscribe/expose/reactive/... command."""

    id: bytes
    topic: str
    command: Any
    """Normally a map with a ``"cmd"`` key; anything else is answered with status 10."""

    @property
    def cmd(self) -> str | None:
        """The command name, or ``None`` when the command is not a map with a text ``cmd``."""
        command = self.command
        if isinstance(command, dict):
            name = command.get("cmd")
            if isinstance(name, str):
                return name
        return None

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        return b"".join((b"\x84\x03", byte_string(_check_id(self.id)),
                         text(_check_str(self.topic, "topic")), cbor.dumps(self.command)))


class Response(NamedTuple):
    """``[4, id, status, data]``: the answer to any request."""

    id: bytes
    status: int
    data: Payload = NO_DATA

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        msg_id, status, data = self
        if not is_uint64(status):
            status = _check_uint(int(status), "status")
        if type(msg_id) is not bytes:
            _check_id(msg_id)
        if data.encoded is None:
            return cbor.dumps([4, msg_id, status, data.decoded])
        return b"".join((b"\x84\x04", byte_string(msg_id), head(0, status), data.encoded))


class Ack(NamedTuple):
    """``[5, id]``: a QoS1/QoS2 publication was received."""

    id: bytes

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        return b"\x82\x05" + byte_string(_check_id(self.id))


class Ack2(NamedTuple):
    """``[6, id]``: third leg of QoS2; the receiver may forget the id."""

    id: bytes

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        return b"\x82\x06" + byte_string(_check_id(self.id))


class Unregister(NamedTuple):
    """``[9, id]`` (``[9, id, cid]`` from 0.1.x peers): drop my registered key."""

    id: bytes
    cid: str | None = None

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        if self.cid is None:
            return b"\x82\x09" + byte_string(_check_id(self.id))
        return b"\x83\x09" + byte_string(_check_id(self.id)) + text(_check_str(self.cid, "cid"))


class Register(NamedTuple):
    """``[10, id, cid, pin, pubkey, keytype]``: register a public key for a name.

    ``keytype`` is 1 for RSA and 2 for ECDSA; ``None`` stands for the legacy
    5-element form whose ``pin`` field holds a user id.
    """

    id: bytes
    cid: str
    pin: str
    pubkey: bytes
    keytype: int | None = 1

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        parts = [b"\x86\x0a" if self.keytype is not None else b"\x85\x0a",
                 byte_string(_check_id(self.id)), text(_check_str(self.cid, "cid")),
                 text(_check_str(self.pin, "pin")), byte_string(bytes(self.pubkey))]
        if self.keytype is not None:
            parts.append(head(0, _check_uint(self.keytype, "keytype")))
        return b"".join(parts)


class Attestation(NamedTuple):
    """``[11, id, cid, signature(, meta)]``: the signed answer to a challenge."""

    id: bytes
    cid: str
    signature: bytes
    meta: Any = None

    def encode(self) -> bytes:
        """The message as the bytes of one WebSocket binary message."""
        parts = [b"\x85\x0b" if self.meta is not None else b"\x84\x0b",
                 byte_string(_check_id(self.id)), text(_check_str(self.cid, "cid")),
                 byte_string(bytes(self.signature))]
        if self.meta is not None:
            parts.append(cbor.dumps(self.meta))
        return b"".join(parts)


Message = (Identity | Pub | Rpc | Admin | Response | Ack | Ack2 | Unregister | Register
           | Attestation)
"""Any Rembus message."""

#: Messages that carry a request id and expect a RESPONSE.
Request = Identity | Rpc | Admin | Register | Unregister | Attestation


def encode(message: Message) -> bytes:
    """Encode a message to the bytes of one WebSocket binary message."""
    return message.encode()


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Limits applied while decoding input from the network.

    A message over a limit raises :class:`MessageTooLarge` (size) or
    :class:`MalformedMessage` (the others).
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    """Bytes of one message."""
    max_depth: int = DEFAULT_MAX_DEPTH
    """Nesting of arrays and maps in one message."""
    max_id_length: int = DEFAULT_MAX_ID_LENGTH
    """Bytes of a message id. Peers send 8 (current) or 16 (0.1.x era) bytes;
    ids are opaque and some peers echo any length, so other lengths pass up to
    this bound, which keeps every table keyed by ids small."""


DEFAULT_LIMITS = DecodeLimits()


# Messages are built for every frame: named tuples cost a fraction of a frozen
# dataclass to build (see values.py).
typed_equality(Identity, Pub, Rpc, Admin, Response, Ack, Ack2, Unregister, Register, Attestation)

_tuple_new = tuple.__new__


def _pub(topic: str, data: Payload, msg_id: bytes | None, flags: int) -> Pub:
    return _tuple_new(Pub, (topic, data, msg_id, flags))


def _count_error(kind: str, count: int, allowed: str) -> MalformedMessage:
    return MalformedMessage(f"{kind} message with {count} elements (expected {allowed})")


def _read_id(buf: bytes, pos: int, what: str, limits: DecodeLimits) -> tuple[bytes, int]:
    msg_id, pos = read_bytes(buf, pos, what)
    if len(msg_id) > limits.max_id_length:
        raise MalformedMessage(f"{what} of {len(msg_id)} bytes is longer than the limit of "
                               f"{limits.max_id_length} bytes (ids are 8 or 16 bytes)")
    return msg_id, pos


def _payload(buf: bytes, pos: int, max_depth: int) -> Payload:
    if pos >= len(buf):
        raise MalformedMessage("message is truncated: the data element is missing")
    return raw_payload(buf[pos:], max_depth)


def _decode_pub(buf: bytes, count: int, type_byte: int, pos: int, limits: DecodeLimits) -> Pub:
    if count == 3:
        if pos >= len(buf):
            raise MalformedMessage("message is truncated: the PUB topic is missing")
        topic, pos = read_text(buf, pos, "PUB topic")
        return _pub(topic, _payload(buf, pos, limits.max_depth), None, 0)
    if count == 4:
        msg_id, pos = _read_id(buf, pos, "PUB id", limits)
        topic, pos = read_text(buf, pos, "PUB topic")
        return _pub(topic, _payload(buf, pos, limits.max_depth), msg_id, type_byte & FLAGS_MASK)
    raise _count_error("PUB", count, "3 or 4")


def _decode_rpc(buf: bytes, count: int, _type: int, pos: int,
                limits: DecodeLimits) -> Rpc:
    if count not in (4, 5):
        raise _count_error("RPC", count, "4 or 5")
    msg_id, pos = _read_id(buf, pos, "RPC id", limits)
    topic, pos = read_text(buf, pos, "RPC topic")
    target = None
    if count == 5:
        target, pos = read_optional_text(buf, pos, "RPC target")
    return _tuple_new(Rpc, (msg_id, topic, _payload(buf, pos, limits.max_depth), target))


def _decode_response(buf: bytes, count: int, _type: int, pos: int,
                     limits: DecodeLimits) -> Response:
    if count not in (3, 4):
        raise _count_error("RESPONSE", count, "3 or 4")
    msg_id, pos = _read_id(buf, pos, "RESPONSE id", limits)
    status, pos = read_uint(buf, pos, "RESPONSE status")
    if count == 3:
        if pos != len(buf):
            raise MalformedMessage("trailing bytes after a 3-element RESPONSE")
        return Response(msg_id, status)
    return _tuple_new(Response, (msg_id, status, _payload(buf, pos, limits.max_depth)))


def _decode_admin(buf: bytes, count: int, _type: int, pos: int,
                  limits: DecodeLimits) -> Admin:
    if count != 4:
        raise _count_error("ADMIN", count, "4")
    msg_id, pos = _read_id(buf, pos, "ADMIN id", limits)
    topic, pos = read_text(buf, pos, "ADMIN topic")
    return Admin(msg_id, topic, loads_exact(bytes(buf[pos:]), limits.max_depth))


def _decode_identity(buf: bytes, count: int, _type: int, pos: int,
                     limits: DecodeLimits) -> Identity:
    if count not in (3, 4):
        raise _count_error("IDENTITY", count, "3 or 4")
    msg_id, pos = _read_id(buf, pos, "IDENTITY id", limits)
    cid, pos = read_text(buf, pos, "IDENTITY cid")
    if count == 3:
        _expect_end(buf, pos)
        return Identity(msg_id, cid)
    return Identity(msg_id, cid, loads_exact(bytes(buf[pos:]), limits.max_depth))


def _id_only(buf: bytes, count: int, pos: int, kind: str, limits: DecodeLimits,
             extra: int = 0) -> tuple[bytes, int]:
    if not 2 <= count <= 2 + extra:
        raise _count_error(kind, count, "2" if not extra else f"2 to {2 + extra}")
    return _read_id(buf, pos, f"{kind} id", limits)


def _expect_end(buf: bytes, pos: int) -> None:
    if pos != len(buf):
        raise MalformedMessage(f"{len(buf) - pos} trailing bytes after the message")


def _decode_ack(buf: bytes, count: int, type_byte: int, pos: int,
                limits: DecodeLimits) -> Ack | Ack2:
    ack2 = type_byte & 0x0F == 6  # ACK2
    msg_id, pos = _id_only(buf, count, pos, "ACK2" if ack2 else "ACK", limits)
    _expect_end(buf, pos)
    return Ack2(msg_id) if ack2 else Ack(msg_id)


def _decode_unregister(buf: bytes, count: int, _type: int, pos: int,
                       limits: DecodeLimits) -> Unregister:
    msg_id, pos = _id_only(buf, count, pos, "UNREGISTER", limits, extra=1)
    cid = None
    if count == 3:
        cid, pos = read_text(buf, pos, "UNREGISTER cid")
    _expect_end(buf, pos)
    return Unregister(msg_id, cid)


def _unwrap_bytes(value: Any, what: str) -> bytes:
    if hasattr(value, "tag") and hasattr(value, "value"):
        value = value.value  # Julia peers may wrap keys in a CBOR tag
    if not isinstance(value, bytes):
        raise MalformedMessage(f"{what} must be a byte string")
    return value


def _decode_register(buf: bytes, count: int, _type: int, pos: int,
                     limits: DecodeLimits) -> Register:
    if count not in (5, 6):
        raise _count_error("REGISTER", count, "5 or 6")
    msg_id, pos = _read_id(buf, pos, "REGISTER id", limits)
    cid, pos = read_text(buf, pos, "REGISTER cid")
    rest = loads_items(buf, pos, count - 3, limits.max_depth)
    pin = rest[0]
    if not isinstance(pin, str):
        raise MalformedMessage("REGISTER pin must be a text string")
    pubkey = _unwrap_bytes(rest[1], "REGISTER public key")
    keytype = None
    if count == 6:
        keytype = rest[2]
        if not is_uint64(keytype):
            raise MalformedMessage(
                f"REGISTER key type must be an unsigned 64-bit integer, not {keytype!r}")
    return Register(msg_id, cid, pin, pubkey, keytype)


def _decode_attestation(buf: bytes, count: int, _type: int, pos: int,
                        limits: DecodeLimits) -> Attestation:
    if count not in (4, 5):
        raise _count_error("ATTESTATION", count, "4 or 5")
    msg_id, pos = _read_id(buf, pos, "ATTESTATION id", limits)
    cid, pos = read_text(buf, pos, "ATTESTATION cid")
    rest = loads_items(buf, pos, count - 3, limits.max_depth)
    signature = _unwrap_bytes(rest[0], "ATTESTATION signature")
    return Attestation(msg_id, cid, signature, rest[1] if count == 5 else None)


_Decoder = Callable[[bytes, int, int, int, DecodeLimits], Message]
#: The decoder of each message kind (the low 4 bits of the type byte).
_DECODERS: tuple[_Decoder | None, ...] = (
    _decode_identity, _decode_pub, _decode_rpc, _decode_admin, _decode_response,  # 0-4
    _decode_ack, _decode_ack, None, None, _decode_unregister, _decode_register,  # 5-10
    _decode_attestation, None, None, None, None,  # 11-15
)


def split_qos0_pub(frame: bytes) -> tuple[str, int] | None:
    """Topic and payload offset of a QoS0 PUB with a topic under 24 bytes, else ``None``.

    The hottest message, read without building anything: a broker that only
    forwards it needs nothing else. ``None`` also means "not this shape"; the
    full :func:`decode` then judges the frame. Size limits are the caller's.
    """
    if len(frame) > 3 and frame[0] == 0x83 and frame[1] == 0x01 and 0x60 <= frame[2] <= 0x77:
        end = frame[2] - 0x5D
        if end < len(frame):
            try:
                return frame[3:end].decode("utf-8"), end
            except UnicodeDecodeError:
                raise MalformedMessage("PUB topic is not valid UTF-8") from None
    return None


def split_ack(frame: bytes) -> tuple[bool, bytes] | None:
    """``(is_ack2, id)`` of an ACK or ACK2 whose id is 1 to 23 bytes, else ``None``.

    The message a QoS1/2 subscriber sends for every delivery, read without
    building anything. ``None`` also means "not this shape"; the full
    :func:`decode` then judges the frame. The id length limit is the caller's.
    """
    if (len(frame) > 3 and frame[0] == 0x82 and (frame[1] == 0x05 or frame[1] == 0x06)
            and 0x40 < frame[2] < 0x58 and len(frame) == frame[2] - 0x3D):
        return frame[1] == 0x06, frame[3:]
    return None


def decode(data: bytes | bytearray | memoryview, limits: DecodeLimits = DEFAULT_LIMITS) -> Message:
    """Decode one message; raise :class:`ProtocolError` if it is not one.

    The payload of PUB, RPC and RESPONSE is not decoded here: its first use
    (``message.data.value``) decodes it, and raises ``ProtocolError`` then if
    it is malformed. Call ``message.data.validate()`` to check it eagerly.
    """
    buf = data if type(data) is bytes else bytes(data)
    size = len(buf)
    if size > limits.max_message_size:
        raise MessageTooLarge(size, limits.max_message_size)
    quick = split_qos0_pub(buf)
    if quick is not None:
        return _tuple_new(Pub, (quick[0], raw_payload(buf[quick[1]:], limits.max_depth), None, 0))
    if size < 2:
        raise MalformedMessage("message is too short" if size else "empty message")
    first = buf[0]
    if 0x82 <= first <= 0x97:  # definite array, inline length: every real message
        count = first - 0x80
        pos = 1
    else:
        major, count, pos = read_head(buf, 0)
        if major != 4:
            raise MalformedMessage(f"a message must be a CBOR array, got major type {major}")
        if count < 2 or pos >= size:
            raise MalformedMessage(f"a message needs at least 2 elements, got {count}")
    type_byte = buf[pos]
    if type_byte < 24:
        pos += 1
    else:
        type_byte, pos = read_uint(buf, pos, "message type")
        if type_byte > 0xFF:
            raise MalformedMessage(f"message type byte {type_byte} out of range")
    decoder = _DECODERS[type_byte & 0x0F]
    if decoder is not None:
        return decoder(buf, count, type_byte, pos, limits)
    raise UnknownMessageType(type_byte)


def response_for(request_id: bytes, status: int = Status.OK, value: Any = None) -> Response:
    """A RESPONSE carrying ``value`` for the request ``request_id``."""
    return Response(request_id, int(status), NO_DATA if value is None else Payload.of(value))


def challenge_input(challenge: bytes, name: str) -> bytes:
    """The bytes a component signs to answer ``challenge`` (spec 5.3)."""
    return b"\x82" + byte_string(challenge) + text(name)


__all__ = [
    "DEFAULT_LIMITS",
    "Ack",
    "Ack2",
    "Admin",
    "Attestation",
    "DecodeLimits",
    "Identity",
    "Message",
    "MessageType",
    "Pub",
    "Register",
    "Request",
    "Response",
    "Rpc",
    "Unregister",
    "challenge_input",
    "decode",
    "encode",
    "response_for",
]
