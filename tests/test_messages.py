"""The message codec against the golden vectors, captured frames and hostile input."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rembus_proto as rp
from rembus.testing import strategies as rst
from rembus_proto import (
    NO_DATA,
    Ack,
    Ack2,
    Admin,
    Attestation,
    Identity,
    Payload,
    ProtocolError,
    Pub,
    Register,
    Response,
    Rpc,
    Unregister,
)
from rembus_proto import cbor as rp_cbor

DATA = Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "golden_vectors.json").read_text())
NOT_MESSAGES = {"signed_plain_challenge_mycomp", "tcp_frame_pub_qos0_anonymous"}
ID8 = bytes(range(1, 9))
ID16 = bytes(range(16))


def captured_frames() -> list[str]:
    frames = set()
    for line in (DATA / "captured_frames.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "hex" in record:
            frames.add(record["hex"])
    return sorted(frames)


@pytest.mark.parametrize("name", sorted(set(GOLDEN) - NOT_MESSAGES))
def test_golden_vector_round_trips_byte_exact(name: str) -> None:
    raw = bytes.fromhex(GOLDEN[name]["hex"])
    message = rp.decode(raw)
    assert rp.encode(message) == raw
    # the payload decodes to the same value cbor2 sees in the whole frame
    whole = cbor2.loads(raw)
    if isinstance(message, (Pub, Rpc, Response)):
        assert message.data.value == whole[-1]


@pytest.mark.parametrize("frame", captured_frames())
def test_captured_upstream_frames_round_trip(frame: str) -> None:
    raw = bytes.fromhex(frame)
    assert rp.encode(rp.decode(raw)) == raw


def test_signed_challenge_vector() -> None:
    expected = bytes.fromhex(GOLDEN["signed_plain_challenge_mycomp"]["hex"])
    assert rp.challenge_input(b"\x01\x02\x03\x04", "mycomp") == expected


def test_decoded_fields() -> None:
    pub = rp.decode(bytes.fromhex(GOLDEN["pub_qos2_id8"]["hex"]))
    assert isinstance(pub, Pub)
    assert (pub.topic, pub.id, pub.qos, pub.data.args) == ("mytopic", ID8, 2, (1, "a"))
    slot = rp.decode(bytes.fromhex(GOLDEN["pub_slot_qos0"]["hex"]))
    assert isinstance(slot, Pub) and slot.qos == 0 and slot.slot == 0x11223344
    rpc = rp.decode(bytes.fromhex(GOLDEN["rpc_direct_id8"]["hex"]))
    assert rpc == Rpc(ID8, "add", Payload.of([1, 2]), "calc")
    julia = rp.decode(bytes.fromhex(GOLDEN["res_ok_3_id8_julia_int64"]["hex"]))
    assert isinstance(julia, Response) and julia.data.value == 3
    g0 = rp.decode(bytes.fromhex(GOLDEN["g0_admin_add_interest_id16"]["hex"]))
    assert isinstance(g0, Admin) and g0.id == ID16 and g0.cmd == "add_interest"


def test_tolerant_forms_of_every_generation() -> None:
    # RPC without target (4 elements), RESPONSE without data (3 elements)
    rpc = rp.decode(cbor2.dumps([2, ID16, "add", [1, 2]]))
    assert rpc == Rpc(ID16, "add", Payload.of([1, 2]))
    res = rp.decode(cbor2.dumps([4, ID8, 0]))
    assert isinstance(res, Response) and res.data.value is None
    # UNREGISTER with cid (0.1.x), legacy REGISTER without key type
    assert rp.decode(cbor2.dumps([9, ID16, "me"])) == Unregister(ID16, "me")
    legacy = rp.decode(cbor2.dumps([10, ID16, "me", "user", b"key"]))
    assert legacy == Register(ID16, "me", "user", b"key", None)
    # a Julia peer may wrap the key in a tag; ATTESTATION with and without meta
    tagged = rp.decode(cbor2.dumps([10, ID8, "me", "1234", cbor2.CBORTag(40, b"k"), 2]))
    assert isinstance(tagged, Register) and tagged.pubkey == b"k" and tagged.keytype == 2
    assert rp.decode(cbor2.dumps([11, ID8, "me", b"sig"])) == Attestation(ID8, "me", b"sig")
    att = rp.decode(cbor2.dumps([11, ID8, "me", b"sig", {}]))
    assert att == Attestation(ID8, "me", b"sig", {})
    # non-shortest type byte and array header are accepted
    assert rp.decode(b"\x98\x02\x18\x05" + cbor2.dumps(ID8)[0:]) == Ack(ID8)
    # a 3-element PUB with flags in the type byte (0.1.x "ack" flag) is a QoS0 PUB
    old = rp.decode(b"\x83\x18\x81" + cbor2.dumps("t") + b"\x80")
    assert isinstance(old, Pub) and old.qos == 0 and old.id is None


def test_payload_argument_conventions() -> None:
    assert Payload(raw=b"\xf6").args == ()
    assert Payload(raw=b"\x05").args == (5,)
    assert Payload(raw=b"\x82\x01\x02").args == (1, 2)
    assert Payload(raw=b"\xa1\x61a\x01").args == ({"a": 1},)


HOSTILE = [
    b"",
    b"\x80",
    b"\x81\x01",
    b"\xa1\x01\x02",
    b"\x83\x01",
    b"\x83\x01\x63ab",  # truncated topic
    b"\x83\x01\x61a",  # no data element
    b"\x83\x01\x62\xff\xfe\x80",  # invalid UTF-8 topic
    b"\x83\x01\x41a\x80",  # bytes topic in the QoS0 form
    b"\x84\x11\x61a\x61b\x80",  # text id
    b"\x83\x0c\x41a\x80",  # ZMQ-only PING
    b"\x83\x07\x41a\x80",  # unknown type
    b"\x9f\x01\x61a\x80\xff",  # indefinite array
    b"\x83\x1a\x00\x01\x00\x00\x61a\x80",  # type byte out of range
    b"\x82\x05\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # id longer than the input
    b"\x84\x04\x41a\x20\x80",  # negative status
    b"\x82\x05\x41a\x00",  # trailing byte after ACK
    b"\x84\x03\x41a\x61t\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # admin map claims 2^64 items
    b"\x84\x00\x41a\x61n" + b"\x81" * 10000,  # deep nesting in IDENTITY meta
    b"\x86\x0a\x41a\x61n\x01\x41k\x01",  # REGISTER pin not text
    b"\x84\x0b\x41a\x61n\x01",  # ATTESTATION signature not bytes
    b"\x86\x0a\x41a\x61n\x61p\x41k\x20",  # negative REGISTER key type
    b"\x86\x0a\x41a\x61n\x61p\x41k\xc2\x49\x01" + bytes(8),  # key type >= 2**64
]


@pytest.mark.parametrize("frame", HOSTILE, ids=lambda f: f[:12].hex() or "empty")
def test_hostile_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        rp.decode(frame)


@pytest.mark.parametrize(
    "payload",
    [b"\x01\x02", b"\x01\xff\x02", b"\x80\xff", b"\x9f\x01", b"\x81\x01\xff",
     b"\x81" * 5000 + b"\x01", b"\xc1\xfb\x7f\xf0" + b"\x00" * 6,
     b"\x62\xff\xfe", b"\xd8\x1d\x00", b"\x5b\x00\x00\x00\xff\xff\xff\xff\xff"],
)
def test_malformed_payload_raises_protocol_error_on_use(payload: bytes) -> None:
    message = rp.decode(b"\x83\x01\x61t" + payload)
    assert isinstance(message, Pub)
    with pytest.raises(ProtocolError):
        message.data.validate()
    with pytest.raises(ProtocolError):
        _ = message.data.args


def test_message_size_limit() -> None:
    limits = rp.DecodeLimits(max_message_size=100)
    frame = rp.encode(Pub("t", Payload.of(b"x" * 200)))
    with pytest.raises(rp.MessageTooLarge) as info:
        rp.decode(frame, limits)
    assert info.value.limit == 100 and info.value.size == len(frame)
    assert rp.decode(frame[:0] + rp.encode(Pub("t", Payload.of(1))), limits)


def test_depth_limit_is_configurable() -> None:
    nested: Any = 1
    for _ in range(50):
        nested = [nested]
    frame = rp.encode(Pub("t", Payload.of(nested)))
    assert isinstance(rp.decode(frame, rp.DecodeLimits(max_depth=60)), Pub)
    shallow = rp.decode(frame, rp.DecodeLimits(max_depth=10))
    with pytest.raises(ProtocolError, match="depth"):
        shallow.data.validate()  # type: ignore[union-attr]


def _with_id(msg_id: bytes) -> list[rp.Message]:
    return [Identity(msg_id, "n"), Pub("t", Payload.of(1), msg_id, rp.QOS1),
            Rpc(msg_id, "t", Payload.of(1)), Admin(msg_id, "t", {}), Response(msg_id, 0),
            Ack(msg_id), Ack2(msg_id), Unregister(msg_id), Register(msg_id, "n", "p", b"k"),
            Attestation(msg_id, "n", b"s")]


@pytest.mark.parametrize("message", _with_id(b"\x01" * 65), ids=lambda m: type(m).__name__)
def test_an_id_over_the_limit_is_malformed(message: rp.Message) -> None:
    frame = message.encode()
    with pytest.raises(rp.MalformedMessage, match="id of 65 bytes is longer than the limit of 64"):
        rp.decode(frame)
    assert rp.decode(frame, rp.DecodeLimits(max_id_length=65)) == message
    with pytest.raises(rp.MalformedMessage, match="limit of 8 bytes"):
        rp.decode(message._replace(id=b"\x01" * 9).encode(), rp.DecodeLimits(max_id_length=8))


def test_a_megabyte_id_is_refused() -> None:
    with pytest.raises(rp.MalformedMessage, match="RPC id of 1048576 bytes"):
        rp.decode(Rpc(bytes(1 << 20), "t", Payload.of(1)).encode())


@pytest.mark.parametrize("message", _with_id(b"\x01" * 64) + _with_id(b""),
                         ids=lambda m: f"{type(m).__name__}-{len(m.id or b'')}")
def test_ids_up_to_the_limit_are_accepted(message: rp.Message) -> None:
    assert rp.decode(message.encode()) == message


def test_encode_rejects_bad_fields_with_clear_errors() -> None:
    with pytest.raises(TypeError, match="topic must be a str"):
        Pub({"name": 1}, Payload.of([])).encode()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="id must be bytes"):
        Ack("abc").encode()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an id"):
        Pub("t", Payload.of([]), None, rp.QOS1).encode()
    with pytest.raises(rp.EncodeError, match="cannot encode"):
        Pub("t", Payload.of([object()])).encode()
    with pytest.raises(ValueError, match="keytype must be an unsigned 64-bit integer"):
        Register(b"12345678", "n", "p", b"k", -1).encode()
    with pytest.raises(ValueError, match="status must be an unsigned 64-bit integer"):
        Response(b"12345678", 1 << 64).encode()


# -- property tests ---------------------------------------------------------

texts = st.text(max_size=40)
messages = rst.messages(topic=texts, name=texts)


@given(messages)
@settings(max_examples=400)
def test_round_trip(message: rp.Message) -> None:
    raw = rp.encode(message)
    assert raw == cbor2.dumps(cbor2.loads(raw)) or _has_float(cbor2.loads(raw))
    decoded = rp.decode(raw)
    assert decoded == message
    assert rp.encode(decoded) == raw


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


def _decode_fully(raw: bytes) -> None:
    """Whatever decodes also re-encodes to a frame that decodes to the same message."""
    try:
        message = rp.decode(raw)
    except ProtocolError:
        return
    assert rp.decode(rp.encode(message)) == message
    data = getattr(message, "data", None)
    if data is not None:
        try:
            data.validate()
        except ProtocolError:
            return


@given(st.binary(max_size=200))
@settings(max_examples=2000)
def test_arbitrary_bytes_raise_only_protocol_error(raw: bytes) -> None:
    _decode_fully(raw)


@given(messages, st.data())
@settings(max_examples=1000)
def test_mutated_frames_raise_only_protocol_error(message: rp.Message, data: st.DataObject) -> None:
    raw = bytearray(rp.encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        choice = data.draw(st.integers(0, 2))
        pos = data.draw(st.integers(0, len(raw)))
        if choice == 0 and pos < len(raw):
            raw[pos] = data.draw(st.integers(0, 255))
        elif choice == 1:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del raw[pos : pos + data.draw(st.integers(1, 4))]
    _decode_fully(bytes(raw))


def test_nan_and_infinity_use_half_floats() -> None:
    frame = rp.encode(Admin(ID8, "mytopic", {"cmd": "subscribe", "msg_from": math.inf}))
    assert frame.hex() == GOLDEN["admin_subscribe_lastreceived_id8"]["hex"]


def test_messages_are_immutable_values_of_their_own_type() -> None:
    ack = Ack(ID8)
    assert ack == Ack(ID8) and hash(ack) == hash(Ack(ID8))
    assert ack != Ack2(ID8) and not ack == Ack2(ID8)  # noqa: SIM201
    assert ack != (ID8,) and Pub("t", NO_DATA) != ("t", NO_DATA, None, 0)
    with pytest.raises(AttributeError):
        ack.id = b"other"  # type: ignore[misc]
    assert {Ack(ID8), Ack2(ID8), Ack(ID8)} == {Ack(ID8), Ack2(ID8)}


def _fast_read_agrees_with_decode(frame: bytes) -> None:
    from rembus_proto.messages import split_ack, split_qos0_pub
    ack = split_ack(frame)
    if ack is not None:
        is_ack2, msg_id = ack
        assert rp.decode(frame) == (rp.Ack2(msg_id) if is_ack2 else rp.Ack(msg_id))
    try:
        quick = split_qos0_pub(frame)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            rp.decode(frame)
        return
    if quick is not None:
        try:
            message = rp.decode(frame)
        except ProtocolError:
            return  # the quick reader leaves the rest of the frame to decode
        assert isinstance(message, rp.Pub) and message.topic == quick[0]
        assert message.data.raw == frame[quick[1]:] and not message.flags


@given(st.one_of(messages.map(rp.encode), st.binary(max_size=40)), st.data())
@settings(max_examples=2000)
def test_fast_readers_agree_with_decode(frame: bytes, data: st.DataObject) -> None:
    """The router's shortcuts for QoS0 PUB and ACK/ACK2 never disagree with decode."""
    raw = bytearray(frame)
    if raw and data.draw(st.booleans()):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _fast_read_agrees_with_decode(bytes(raw))


@pytest.mark.parametrize("message", [rp.Ack(b"\x01" * 8), rp.Ack2(b"\x02" * 16), rp.Ack(b"x" * 23)])
def test_the_ack_shortcut_reads_every_usual_ack(message: rp.Ack | rp.Ack2) -> None:
    from rembus_proto.messages import split_ack
    assert split_ack(message.encode()) == (isinstance(message, rp.Ack2), message.id)


_CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64) + 1, (1 << 64) - 1) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=30)


@settings(max_examples=400)
@given(value=_CBOR_VALUES, more=st.lists(_CBOR_VALUES, max_size=3),
       tail=st.binary(max_size=6), junk=st.binary(max_size=40))
def test_one_item_check_agrees_with_the_stream_decoder(value: Any, more: list[Any],
                                                       tail: bytes, junk: bytes) -> None:
    """loads_exact reads the heads of a payload to prove it is one item; whatever the
    bytes (a value, values, a value with bytes after it, noise), it must accept and refuse
    exactly what decoding with a stream and checking its position does."""
    one = cbor2.dumps(value)
    many = one + b"".join(map(cbor2.dumps, more))
    assert rp_cbor._item_end(many, 0) in (-1, len(one))
    for raw in (one, many, one + tail, junk):
        try:
            stream = io.BytesIO(raw)
            expected: Any = cbor2.load(stream, max_depth=16)
            if stream.tell() != len(raw):
                expected = rp.MalformedMessage
        except Exception:
            expected = rp.MalformedMessage
        try:
            got: Any = rp_cbor.loads_exact(raw, 16)
        except rp.MalformedMessage:
            got = rp.MalformedMessage
        if expected is rp.MalformedMessage or got is rp.MalformedMessage:
            assert got is expected, raw
        else:
            assert cbor2.dumps(got) == cbor2.dumps(expected), raw
