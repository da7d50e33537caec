"""Our frame reader and writer against wsproto's frame layer (differential)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rembus_proto.errors import FrameError, MessageTooLarge
from rembus_proto.wsevents import WsMessage
from rembus_proto.wsframes import FrameReader, FrameWriter, mask
from ws_oracle import build_frame, check, ours, reference

KEY = b"\x01\x82\x33\xf4"

DATA_OPCODES = (0x0, 0x1, 0x2)
CONTROL_OPCODES = (0x8, 0x9, 0xA)
BAD_OPCODES = (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)


def _big(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


payloads = st.one_of(
    st.binary(max_size=140),
    st.text(max_size=60).map(lambda s: s.encode()),
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\xf0\x9f\x98\x80"]),
    st.integers(126, 600).map(_big),
    st.sampled_from([65535, 65536, 70000]).map(_big),
)

# Lengths around the limits of each length encoding.
edge_sizes = st.sampled_from([0, 1, 124, 125, 126, 127, 65535, 65536])

close_payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=3),
    st.tuples(
        st.one_of(
            st.sampled_from([999, 1000, 1004, 1005, 1006, 1014, 1015, 2999, 3000, 4999, 5000]),
            st.integers(0, 5100),
        ),
        st.one_of(st.text(max_size=20).map(str.encode), st.just(b"\xff")),
    ).map(lambda t: t[0].to_bytes(2, "big") + t[1]),
)


@st.composite
def frames(draw: st.DrawFn, client: bool) -> bytes:
    """One frame for the peer of a ``client``: valid, or with one kind of defect."""
    kind = draw(
        st.sampled_from(
            ["data", "data", "data", "control", "close", "length", "opcode", "rsv", "mask", "huge"]
        )
    )
    fin = draw(st.booleans())
    mask_key = None if client else draw(st.binary(min_size=4, max_size=4))
    rsv = 0
    length_form = 0
    if kind == "data":
        opcode = draw(st.sampled_from(DATA_OPCODES))
        payload = draw(payloads)
    elif kind == "control":
        opcode = draw(st.sampled_from((0x9, 0xA)))
        payload = draw(st.binary(max_size=130))
    elif kind == "close":
        opcode = 0x8
        payload = draw(close_payloads)
    elif kind == "length":  # extended length forms, shortest or not
        opcode = draw(st.sampled_from((*DATA_OPCODES, 0x9)))
        payload = _big(draw(edge_sizes))
        length_form = draw(st.sampled_from([0, 2, 8]))
    elif kind == "opcode":
        opcode = draw(st.sampled_from(BAD_OPCODES))
        payload = draw(st.binary(max_size=10))
    elif kind == "rsv":
        opcode = draw(st.sampled_from(DATA_OPCODES + CONTROL_OPCODES))
        payload = draw(st.binary(max_size=10))
        rsv = draw(st.integers(1, 7))
    elif kind == "mask":
        opcode = draw(st.sampled_from(DATA_OPCODES + CONTROL_OPCODES))
        payload = draw(st.binary(max_size=10))
        mask_key = b"\x00\x01\x02\x03" if client else None
    else:  # a header announcing any 64-bit length, and a few bytes of it
        opcode = draw(st.sampled_from(DATA_OPCODES))
        length = draw(st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from([1 << 63, 0xFFFF])))
        header = bytes((0x80 * fin | opcode, 127 | (0x80 if mask_key else 0)))
        return header + length.to_bytes(8, "big") + (mask_key or b"") + b"abc"
    return build_frame(
        opcode, payload, fin=fin, rsv=rsv, mask_key=mask_key, length_form=length_form
    )


@st.composite
def streams(draw: st.DrawFn) -> tuple[bool, bytes, list[int]]:
    client = draw(st.booleans())
    data = b"".join(draw(st.lists(frames(client), max_size=8)))
    edit = draw(st.sampled_from(["none", "none", "truncate", "flip", "insert", "delete"]))
    if data and edit != "none":
        at = draw(st.integers(0, len(data) - 1))
        if edit == "truncate":
            data = data[:at]
        elif edit == "flip":
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif edit == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        else:
            data = data[:at] + data[at + 1 :]
    cuts = draw(st.lists(st.integers(0, max(len(data), 1)), max_size=6))
    return client, data, cuts


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
@example((False, build_frame(0x1, b"\xff", fin=False) + build_frame(0x8, b""), []))
@example((True, build_frame(0x0, b"abc", mask_key=KEY), [1, 2, 3]))
def test_frame_reader_agrees_with_wsproto(case: tuple[bool, bytes, list[int]]) -> None:
    client, data, cuts = case
    check(data, client=client, cuts=cuts)


@settings(max_examples=300)
@given(st.booleans(), st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_frame_reader_agrees_on_random_bytes(client: bool, data: bytes, cuts: list[int]) -> None:
    check(data, client=client, cuts=cuts)


def test_fragmented_text_with_split_character_and_control_frames() -> None:
    snowman = "caf\u00e9 \u2603".encode()
    stream = (
        build_frame(0x1, snowman[:4], fin=False, mask_key=KEY)
        + build_frame(0x9, b"hi", mask_key=KEY)
        + build_frame(0x0, snowman[4:8], fin=False, mask_key=KEY)
        + build_frame(0xA, b"", mask_key=KEY)
        + build_frame(0x0, snowman[8:], mask_key=KEY)
        + build_frame(0x8, b"\x03\xe8bye", mask_key=KEY)
        + b"ignored after close"
    )
    outcome = check(stream, client=False, cuts=[1, 5, 9, 20])
    assert outcome.items == [
        ("ping", b"hi"),
        ("pong", b""),
        ("message", "caf\u00e9 \u2603"),
        ("close", 1000, "bye"),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        build_frame(0x3, b"", mask_key=KEY),  # reserved opcode
        build_frame(0x9, b"", fin=False, mask_key=KEY),  # fragmented ping
        build_frame(0x9, b"x" * 126, mask_key=KEY),  # long ping
        build_frame(0x2, b"x", mask_key=KEY, length_form=2),  # long form for a short length
        build_frame(0x2, b"x" * 125, mask_key=KEY, length_form=2),
        build_frame(0x2, b"x" * 200, mask_key=KEY, length_form=8),
        build_frame(0x2, b"x" * 65535, mask_key=KEY, length_form=8),
        build_frame(0x2, b"x", rsv=4, mask_key=KEY),  # compressed without deflate
        build_frame(0x2, b"x"),  # unmasked from a client
        build_frame(0x0, b"x", mask_key=KEY),  # continuation out of nowhere
        build_frame(0x2, b"x", fin=False, mask_key=KEY) + build_frame(0x2, b"y", mask_key=KEY),
        build_frame(0x8, b"\x03", mask_key=KEY),  # 1-byte close payload
        build_frame(0x8, b"\x03\xed", mask_key=KEY),  # close code 1005 on the wire
        build_frame(0x8, b"\x03\xe8\xff", mask_key=KEY),  # reason not UTF-8
        build_frame(0x1, b"\xc3(", mask_key=KEY),  # text not UTF-8
    ],
)
def test_bad_frames_fail_like_wsproto(frame: bytes) -> None:
    outcome = check(frame, client=False)
    assert outcome.error in (1002, 1007)
    assert outcome.items == []


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        (999, False),
        (1000, True),
        (1004, False),
        (1013, True),
        (1014, False),
        (2999, False),
        (3000, True),
        (4999, True),
        (5000, False),
    ],
)
def test_close_code_ranges_match_wsproto(code: int, valid: bool) -> None:
    outcome = check(build_frame(0x8, code.to_bytes(2, "big"), mask_key=KEY), client=False)
    assert (outcome.error is None) is valid


def test_msb_length_is_refused() -> None:
    frame = bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big")
    assert check(frame, client=False).error == 1002


def test_size_limit_counts_fragments_and_stops_at_the_header() -> None:
    reader = FrameReader(client=False, max_size=100)
    out: list[object] = []
    reader.feed(build_frame(0x2, b"a" * 60, fin=False, mask_key=KEY), out)  # type: ignore[arg-type]
    header_only = build_frame(0x0, b"b" * 41, mask_key=KEY)[:6]
    with pytest.raises(MessageTooLarge) as info:
        reader.feed(header_only, out)  # type: ignore[arg-type]
    assert (info.value.size, info.value.limit) == (101, 100)
    assert out == []


def test_size_limit_allows_exactly_the_limit() -> None:
    reader = FrameReader(client=False, max_size=100)
    out: list[object] = []
    reader.feed(build_frame(0x2, b"a" * 60, fin=False, mask_key=KEY), out)  # type: ignore[arg-type]
    reader.feed(build_frame(0x0, b"b" * 40, mask_key=KEY), out)  # type: ignore[arg-type]
    assert out == [WsMessage(b"a" * 60 + b"b" * 40)]


def test_announced_huge_frame_is_refused_from_its_header() -> None:
    reader = FrameReader(client=True, max_size=1 << 20)
    with pytest.raises(MessageTooLarge):
        reader.feed(bytes((0x82, 127)) + (1 << 40).to_bytes(8, "big"), [])


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 2047, 2048, 2049, 70001])
def test_mask_matches_a_naive_xor(n: int) -> None:
    data = os.urandom(n)
    expected = bytes(b ^ KEY[i % 4] for i, b in enumerate(data))
    assert mask(data, KEY) == expected
    assert mask(expected, KEY) == data


@settings(max_examples=200)
@given(
    st.booleans(),
    st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=100),
            st.sampled_from([65536, 70000]).map(_big),
        ),
        max_size=5,
    ),
)
def test_writer_output_is_read_back_by_wsproto(client: bool, messages: list[bytes | str]) -> None:
    writer = FrameWriter(client=client)
    out: list[bytes] = []
    for message in messages:
        writer.message(message, out)
    control = writer.control(0x9, b"ping") + writer.close(4000, "r" * 200)
    data = b"".join(out) + control
    expected = [("message", m) for m in messages] + [("ping", b"ping"), ("close", 4000, "r" * 123)]
    assert reference(data, client=not client).items == expected
    assert ours([data], client=not client).items == expected


def test_close_without_code_has_an_empty_payload() -> None:
    assert FrameWriter(client=False).close(None) == b"\x88\x00"
    with pytest.raises(ValueError):
        FrameWriter(client=False).control(0x9, b"x" * 126)


def test_reader_error_keeps_earlier_items() -> None:
    reader = FrameReader(client=False, max_size=100)
    out: list[object] = []
    stream = build_frame(0x2, b"ok", mask_key=KEY) + build_frame(0x3, b"", mask_key=KEY)
    with pytest.raises(FrameError):
        reader.feed(stream, out)  # type: ignore[arg-type]
    assert out == [WsMessage(b"ok")]
