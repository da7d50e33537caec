"""Names and topics from the network: what check_name and check_topic refuse, and why."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rembus_proto as rp
from rembus_proto.jsonrpc import decode_json, encode_json
from rembus_proto.sublist import SubList
from rembus_proto.topics import DEFAULT_NAME_LIMITS, NameLimits, check_name, check_topic

ACCEPTED = ["alice", "dev.acme", "café/température", "sensor/*/temp", "a/**", "🚀",
            "a b", "a\u00a0b", "\ue000", "x" * 256]


@pytest.mark.parametrize("value", ACCEPTED)
def test_ordinary_names_and_topics_pass(value: str) -> None:
    assert check_name(value) is None
    assert check_topic(value) is None


REFUSED = [
    ("", "is empty"),
    ("x\u202eecila", "U+202E RIGHT-TO-LEFT OVERRIDE (format character, category Cf)"),
    ("a\u200bb", "U+200B ZERO WIDTH SPACE (format character"),
    ("a\u200db", "U+200D ZERO WIDTH JOINER"),
    ("\ufeffalice", "U+FEFF"),
    ("a\u2066b", "U+2066 LEFT-TO-RIGHT ISOLATE"),
    ("a\nb", "U+000A (control character, category Cc)"),
    ("a\x00", "U+0000 (control"),
    ("a\x1b[31m", "U+001B"),
    ("a\x7f", "U+007F"),
    ("a\x85", "U+0085"),
    ("a\ud800", "U+D800 (surrogate, category Cs)"),
    ("a\u2028b", "U+2028 LINE SEPARATOR (line separator, category Zl)"),
    ("a\u2029b", "U+2029 PARAGRAPH SEPARATOR (paragraph separator, category Zp)"),
]


@pytest.mark.parametrize(("value", "reason"), REFUSED)
def test_refused_characters_are_named_in_the_reason(value: str, reason: str) -> None:
    assert reason in (check_name(value) or "")
    assert reason in (check_topic(value) or "")
    assert (check_name(value) or "").startswith("name ")
    assert (check_topic(value) or "").startswith("topic ")


def test_lengths_are_bounded() -> None:
    limits = DEFAULT_NAME_LIMITS
    assert check_name("n" * limits.max_name_length) is None
    assert check_name("n" * 257) == "name is 257 characters long, the limit is 256"
    assert check_topic("t" * 1024) is None
    assert check_topic("t" * 1025) == "topic is 1025 characters long, the limit is 1024"
    assert check_name("n" * (20 << 20)) == f"name is {20 << 20} characters long, the limit is 256"
    small = NameLimits(max_name_length=3, max_topic_length=4)
    assert check_name("abcd", small) == "name is 4 characters long, the limit is 3"
    assert check_topic("abcde", small) == "topic is 5 characters long, the limit is 4"


def test_patterns_have_a_bounded_number_of_segments() -> None:
    assert check_topic("/".join(["*"] * 32)) is None
    assert check_topic("/".join(["*"] * 33)) == "pattern has 33 segments, the limit is 32"
    assert check_topic("/".join(["x"] * 33)) is None  # not a pattern: matched by equality
    assert check_topic("a/**/b", NameLimits(max_pattern_segments=2)) == (
        "pattern has 3 segments, the limit is 2")


def test_the_printable_shortcut_covers_every_refused_character() -> None:
    refused = {"Cc", "Cf", "Cs", "Zl", "Zp"}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) in refused:
            assert not char.isprintable(), hex(code)
            assert check_name(char) is not None, hex(code)


@given(st.text(max_size=60))
@settings(deadline=None)
def test_whatever_check_topic_accepts_round_trips(topic: str) -> None:
    if check_topic(topic) is not None:
        return
    pub = rp.Pub(topic, rp.Payload.of([1]))
    assert rp.decode(pub.encode()).topic == topic  # type: ignore[union-attr]
    assert decode_json(encode_json(pub)) == pub
    qos1 = rp.Pub(topic, rp.Payload.of([1]), bytes(8), rp.QOS1)
    assert rp.decode(qos1.encode()) == qos1
    sublist: SubList[str] = SubList()
    sublist.insert(topic, "v")  # a pattern matches its own text too
    assert sublist.match(topic) == ("v",)


@given(st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=3),
       st.text(max_size=10), st.text(max_size=10))
@settings(deadline=None)
def test_one_refused_character_anywhere_is_enough(bad: str, before: str, after: str) -> None:
    assert check_name(before + bad + after) is not None
    assert check_topic(before + bad + after) is not None
