"""The JSON dialect of WebSocket text frames (spec 1.2), translated to and from messages.

Components that speak JSON send JSON-RPC-2.0-shaped objects; the broker
turns each into the :class:`Message` it stands for and routes it as CBOR,
and writes what it sends them back as JSON. Parsing accepts both
spellings in use: the type key ``"type"`` (Python peers) or ``"__type__"``
(Julia peers), ids as JSON integers or decimal strings (the 8 id bytes read
little-endian), and a payload under ``"params"`` or ``"data"``. Writing uses
the Python spelling with integer ids, and puts a publication's arguments
under ``"data"`` too, where Python peers read them.

JSON has no byte strings: bytes (challenges, signatures, keys) travel as
base64 text. Values JSON cannot hold are written lossily (bytes as base64,
tags as their content, anything else as its ``str``); reading never
produces them.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any

from .cbor import is_uint64
from .constants import FLAGS_MASK, Status
from .errors import MalformedMessage
from .messages import (
    Ack,
    Ack2,
    Admin,
    Attestation,
    Identity,
    Message,
    Pub,
    Register,
    Response,
    Rpc,
    Unregister,
    encode,
)
from .payload import NO_DATA, Payload

#: A RESPONSE with one of these statuses is written under "result", others under "error".
_RESULT_STATUSES = (Status.OK, Status.CHALLENGE)


def decode_json(text: str) -> Message:
    """The message a JSON text frame stands for; :class:`MalformedMessage` if none."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedMessage(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage("a JSON message must be an object")
    if "method" in obj:
        return _request(obj)
    for key in ("result", "error"):
        if key in obj:
            return _reply(obj, obj[key])
    raise MalformedMessage('a JSON message needs "method", "result" or "error"')


def _request(obj: dict[str, Any]) -> Message:
    method = obj["method"]
    if not isinstance(method, str):
        raise MalformedMessage('"method" must be a string')
    params = obj["params"] if "params" in obj else obj.get("data")
    if not isinstance(params, dict):
        args = _args(params)
        if "id" not in obj:
            return Pub(method, args)
        return Rpc(_id(obj), method, args)
    kind = _type(params)
    msg_id = _id(obj)
    if kind & FLAGS_MASK and kind & 0x0F in (0, 1):  # a QoS PUB: PY writes the flags alone
        return Pub(method, _args(params.get("data")), msg_id, kind & FLAGS_MASK)
    if kind == 0:
        return Identity(msg_id, _text(params, "cid"), params.get("meta") or None)
    if kind == 3:
        return Admin(msg_id, method, params.get("data"))
    if kind == 9:
        return Unregister(msg_id)
    if kind == 10:
        key_type = params.get("key_type", 1)
        if not is_uint64(key_type):
            raise MalformedMessage('"key_type" must be an unsigned integer')
        return Register(msg_id, method, _text(params, "pin"), _base64(params, "key_val"), key_type)
    if kind == 11:
        return Attestation(msg_id, method, _base64(params, "signature"),
                           params.get("meta") or None)
    raise MalformedMessage(f"unknown JSON message type {kind}")


def _reply(obj: dict[str, Any], body: Any) -> Message:
    if not isinstance(body, dict):
        raise MalformedMessage('"result" and "error" must be objects')
    kind = _type(body)
    msg_id = _id(obj)
    if kind == 4:
        status = body.get("sts", int(Status.OK))
        if not is_uint64(status):
            raise MalformedMessage('"sts" must be an unsigned integer')
        data = body.get("data")
        return Response(msg_id, status, NO_DATA if data is None else Payload.of(data))
    if kind == 5:
        return Ack(msg_id)
    if kind == 6:
        return Ack2(msg_id)
    raise MalformedMessage(f"unknown JSON reply type {kind}")


def _type(params: dict[str, Any]) -> int:
    kind = params.get("type", params.get("__type__"))
    if type(kind) is not int or not 0 <= kind <= 0xFF:
        raise MalformedMessage('"type" must be a message type number')
    return kind


def _id(obj: dict[str, Any]) -> bytes:
    raw = obj.get("id")
    if type(raw) is str and raw.isdecimal() and len(raw) <= 20:
        raw = int(raw)
    if not is_uint64(raw):
        raise MalformedMessage('"id" must be an unsigned 64-bit integer or its decimal string')
    return raw.to_bytes(8, "little")


def _args(value: Any) -> Payload:
    if value is None:
        return Payload.of([])
    return Payload.of(value if isinstance(value, list) else [value])


def _text(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f'"{key}" must be a string')
    return value


def _base64(params: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_text(params, key), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage(f'"{key}" must be base64 text') from None


# -- writing --------------------------------------------------------------------

#: JSON written for a message may cost this many units per byte of its CBOR (a unit: one
#: value, or one character of text); any payload without shared references fits.
EXPANSION = 64
_SLACK = 4096


class _Budget:
    """What is left of the work a JSON translation may do (see :data:`EXPANSION`)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            # CBOR shared references (tags 28/29) can stand for exponentially much JSON.
            raise MalformedMessage("its JSON form would be too large "
                                   f"(more than {EXPANSION} times its CBOR)")


def encode_json(message: Message) -> str:
    """The JSON text frame for a message the broker sends (the Python spelling).

    Raises :class:`MalformedMessage` if the payload is malformed CBOR, too
    large a number for JSON text, or expands past :data:`EXPANSION` times its
    CBOR size (shared references).
    """
    budget = _Budget(_limit(message))
    try:
        return json.dumps(_object(message, budget), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"cannot be written as JSON: {exc}") from None


def _limit(message: Message) -> int:
    """The budget of a message: bounded when its payload came as CBOR bytes (from a peer)."""
    data = getattr(message, "data", None)
    if isinstance(data, Payload) and data.encoded is not None:
        return EXPANSION * len(data.encoded) + _SLACK
    return sys.maxsize


def _object(message: Message, budget: _Budget) -> dict[str, Any]:
    if isinstance(message, Pub):
        args = _value(message.data, budget)
        # "data" repeats the arguments where Python peers read them (spec 1.2)
        if message.id is None or not message.flags:
            return {"jsonrpc": "2.0", "method": message.topic, "params": args, "data": args}
        return {"jsonrpc": "2.0", "id": _number(message.id), "method": message.topic,
                "params": {"type": message.flags, "data": args}, "data": args}
    if isinstance(message, Rpc):
        return {"jsonrpc": "2.0", "id": _number(message.id), "method": message.topic,
                "params": _value(message.data, budget)}
    if isinstance(message, Response):
        key = "result" if message.status in _RESULT_STATUSES else "error"
        return {"jsonrpc": "2.0", "id": _number(message.id),
                key: {"type": 4, "sts": message.status,
                      "data": _jsonable(message.data.value, budget)}}
    if isinstance(message, (Ack, Ack2)):
        return {"jsonrpc": "2.0", "id": _number(message.id),
                "result": {"type": 5 if isinstance(message, Ack) else 6}}
    if isinstance(message, Admin):
        return {"jsonrpc": "2.0", "id": _number(message.id), "method": message.topic,
                "params": {"type": 3, "data": _jsonable(message.command, budget)}}
    raise ValueError(f"a broker does not send {type(message).__name__} messages")


def _value(data: Payload, budget: _Budget) -> list[Any]:
    value = _jsonable(data.value, budget)
    return value if isinstance(value, list) else [value]


def _number(msg_id: bytes) -> int:
    return int.from_bytes(msg_id, "little")


def _jsonable(value: Any, budget: _Budget) -> Any:
    """``value`` with what JSON cannot hold replaced (bytes become base64 text)."""
    budget.spend(1)
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        budget.spend(len(value))
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, budget) for item in value]
    if isinstance(value, dict):
        return {key if isinstance(key, str) else str(_jsonable(key, budget)):
                _jsonable(item, budget) for key, item in value.items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        budget.spend(len(value) * 4 // 3)
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "tag") and hasattr(value, "value"):
        return _jsonable(value.value, budget)
    text = str(value)
    budget.spend(len(text))
    return text


def jsonable(data: Payload) -> Any:
    """The value of a payload as JSON can hold it (bytes as base64 text, tags as their
    content); :class:`MalformedMessage` past the :data:`EXPANSION` budget."""
    limit = EXPANSION * len(data.encoded) + _SLACK if data.encoded is not None else sys.maxsize
    return _jsonable(data.value, _Budget(limit))


def to_cbor(text: str) -> bytes:
    """The CBOR frame a JSON text frame stands for; :class:`MalformedMessage` if none."""
    message = decode_json(text)
    try:
        return encode(message)
    except (TypeError, ValueError, RecursionError) as exc:  # EncodeError is a TypeError
        raise MalformedMessage(f"cannot be routed: {exc}") from None


__all__ = ["decode_json", "encode_json", "jsonable", "to_cbor"]
