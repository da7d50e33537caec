"""The JSON dialect of text frames (spec 1.2): both spellings in, the Python spelling out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rembus_proto as rp
from rembus_proto import (
    Ack,
    Ack2,
    Admin,
    Attestation,
    Identity,
    Payload,
    Pub,
    Register,
    Response,
    Rpc,
    Unregister,
)
from rembus_proto.jsonrpc import decode_json, encode_json, to_cbor

N = 0x0102030405060708
ID = N.to_bytes(8, "little")


def args(*values: Any) -> Payload:
    return Payload.of(list(values))


@pytest.mark.parametrize(("text", "message"), [
    ('{"jsonrpc":"2.0","method":"t","params":[1,"a"]}', Pub("t", args(1, "a"))),
    ('{"jsonrpc":"2.0","method":"t","data":[1]}', Pub("t", args(1))),  # PY's misreading
    ('{"jsonrpc":"2.0","method":"t"}', Pub("t", args())),
    (f'{{"jsonrpc":"2.0","id":{N},"method":"t","params":{{"type":16,"data":[1]}}}}',
     Pub("t", args(1), ID, rp.QOS1)),
    (f'{{"id":"{N}","method":"t","params":{{"__type__":48,"data":[1]}}}}',
     Pub("t", args(1), ID, rp.QOS2)),
    (f'{{"jsonrpc":"2.0","id":{N},"method":"add","params":[1,2]}}', Rpc(ID, "add", args(1, 2))),
    (f'{{"id":"{N}","method":"add","params":[]}}', Rpc(ID, "add", args())),
    (f'{{"id":{N},"method":"t","params":{{"type":3,"data":{{"cmd":"subscribe"}}}}}}',
     Admin(ID, "t", {"cmd": "subscribe"})),
    (f'{{"id":{N},"method":"__identity__","params":{{"type":0,"cid":"me","meta":{{}}}}}}',
     Identity(ID, "me")),
    (f'{{"id":{N},"method":"me","params":{{"type":11,"signature":"AAE=","meta":{{}}}}}}',
     Attestation(ID, "me", b"\x00\x01")),
    (f'{{"id":{N},"method":"me","params":{{"type":10,"pin":"1234","key_val":"AAE=",'
     f'"key_type":2}}}}', Register(ID, "me", "1234", b"\x00\x01", 2)),
    (f'{{"id":{N},"method":"__unregister__","params":{{"type":9}}}}', Unregister(ID)),
    (f'{{"id":{N},"result":{{"type":4,"sts":0,"data":3}}}}', Response(ID, 0, Payload.of(3))),
    (f'{{"id":{N},"error":{{"__type__":4,"sts":42,"data":"no"}}}}',
     Response(ID, 42, Payload.of("no"))),
    (f'{{"id":{N},"result":{{"type":4,"data":3}}}}', Response(ID, 0, Payload.of(3))),
    (f'{{"id":{N},"result":{{"type":5}}}}', Ack(ID)),
    (f'{{"id":{N},"result":{{"type":6}}}}', Ack2(ID)),
])
def test_both_spellings_are_read(text: str, message: rp.Message) -> None:
    assert decode_json(text) == message
    assert rp.decode(to_cbor(text)) == message


@pytest.mark.parametrize("message", [
    Pub("t", args(1, "a", None, 2.5, [True], {"k": -3})),
    Pub("t", args(1), ID, rp.QOS1),
    Pub("t", args(), ID, rp.QOS2),
    Rpc(ID, "add", args(1, 2)),
    Response(ID, 0, Payload.of({"x": [1]})),
    Response(ID, 43, Payload.of("method exception")),
    Ack(ID),
    Ack2(ID),
    Admin(ID, "t", {"cmd": "subscribe", "msg_from": 0}),
])
def test_what_the_broker_writes_reads_back(message: rp.Message) -> None:
    text = encode_json(message)
    assert '"type"' in text or '"params"' in text
    assert decode_json(text) == message


def test_writing_uses_the_python_spelling() -> None:
    assert json.loads(encode_json(Response(ID, 42, Payload.of("x")))) == {
        "jsonrpc": "2.0", "id": N, "error": {"type": 4, "sts": 42, "data": "x"}}
    assert json.loads(encode_json(Pub("t", args(1), ID, rp.QOS1))) == {
        "jsonrpc": "2.0", "id": N, "method": "t", "params": {"type": 16, "data": [1]},
        "data": [1]}
    assert json.loads(encode_json(Pub("t", args(1)))) == {
        "jsonrpc": "2.0", "method": "t", "params": [1], "data": [1]}


def test_values_json_cannot_hold_are_written_lossily() -> None:
    message = Response(ID, 11, Payload.of({"raw": b"\x00\x01", 1: rp.Payload}))
    body = json.loads(encode_json(message))["result"]
    assert body["sts"] == 11 and body["data"]["raw"] == "AAE=" and list(body["data"]) == [
        "raw", "1"]


def test_a_malformed_payload_cannot_be_written() -> None:
    broken = rp.decode(b"\x83\x01\x61t\x82\x01")  # the array lacks an element
    with pytest.raises(rp.ProtocolError):
        encode_json(broken)


@pytest.mark.parametrize("text", [
    "", "[]", "nope", '"text"', "{}", '{"method":1}', '{"method":"t","id":-1,"params":[]}',
    '{"method":"t","id":18446744073709551616,"params":[]}', '{"method":"t","id":"x"}',
    '{"method":"t","id":1,"params":{"type":"0"}}', '{"method":"t","id":1,"params":{"type":7}}',
    '{"method":"t","id":1,"params":{"type":11,"signature":"***"}}',
    '{"method":"t","id":1,"params":{"type":10,"pin":1,"key_val":""}}',
    '{"method":"t","id":1,"params":{"type":0}}', '{"id":1,"result":3}',
    '{"id":1,"result":{"type":4,"sts":-1}}', '{"id":1,"result":{"type":9}}',
    "[" * 100_000 + "]" * 100_000,
])
def test_bad_json_raises_protocol_error(text: str) -> None:
    with pytest.raises(rp.ProtocolError):
        to_cbor(text)


def translate_both_ways(text: str) -> None:
    """JSON in: only ProtocolError; what is routed and sent back out reads the same."""
    try:
        message = rp.decode(to_cbor(text))
    except rp.ProtocolError:
        return
    if isinstance(message, (Pub, Rpc, Response, Ack, Ack2, Admin)):  # what a broker sends
        assert decode_json(encode_json(message)) == message


@given(st.text(max_size=300))
@settings(max_examples=1000)
def test_arbitrary_text_raises_only_protocol_error(text: str) -> None:
    translate_both_ways(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15)


@given(st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params", "data", "result",
                                        "error", "type", "__type__", "sts", "cid"]),
                       json_values | st.dictionaries(
                           st.sampled_from(["type", "__type__", "data", "sts", "cid", "pin",
                                            "key_val", "signature", "meta", "key_type"]),
                           json_values | st.integers(0, 60)), max_size=5))
@settings(max_examples=1000)
def test_json_shaped_objects_raise_only_protocol_error(obj: dict[str, Any]) -> None:
    translate_both_ways(json.dumps(obj))


def test_shared_references_cannot_expand_json_without_bound() -> None:
    """2**30 values stood for by a few hundred bytes of CBOR: refused, quickly."""
    items = [b"\xd8\x1c\x80"]
    for i in range(1, 31):
        ref = b"\xd8\x1d" + (bytes([i - 1]) if i - 1 < 24 else bytes([24, i - 1]))
        items.append(b"\xd8\x1c\x82" + ref + ref)
    bomb = bytes([0x80 | 24, 31]) + b"".join(items)
    with pytest.raises(rp.MalformedMessage, match="too large"):
        encode_json(Pub("t", Payload(bomb)))
