"""Rembus topics and patterns as NATS subjects: reversible, and never narrower than Rembus."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker_process import WAIT
from nats_cluster import NatsCluster, nats_client
from rembus.broker.cluster.subjects import (
    EMPTY,
    SAFE,
    Interest,
    SubjectError,
    SubjectSpace,
    decode_segment,
    decode_topic,
    encode_segment,
    encode_topic,
)
from rembus_proto.topics import compile_pattern

# Any text a topic can carry on the wire (CBOR text is UTF-8: no lone surrogates).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
# Few distinct segments, so that generated topics and patterns often match.
TOPIC_SEGMENTS = ["a", "b", "ab", "x.y", "", "é", "*", ">", "a b", "_5F", "**"]
PATTERN_SEGMENTS = [*TOPIC_SEGMENTS, "*", "**", "a*", "*b", "a**", "**b", "***"]
topics = st.lists(st.sampled_from(TOPIC_SEGMENTS), min_size=1, max_size=5).map("/".join)
patterns = st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=5).map("/".join)
SPACE = SubjectSpace("test cluster.1")


def nats_matches(subscription: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    wanted, tokens = subscription.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def valid_subject(subject: str) -> bool:
    return all(token and set(token) <= SAFE | {"_"} for token in subject.split("."))


@given(texts)
@example("")
@example("_")
@example(".")
@example("a b\t*>")
def test_a_segment_round_trips_through_one_safe_token(segment: str) -> None:
    token = encode_segment(segment.replace("/", ""))
    assert valid_subject(token) and "." not in token
    assert decode_segment(token) == segment.replace("/", "")


@given(texts)
@example("/")
@example("a//b/")
def test_a_topic_round_trips(topic: str) -> None:
    tokens = encode_topic(topic)
    assert valid_subject(tokens)
    assert tokens.count(".") == topic.count("/")
    assert decode_topic(tokens) == topic


# Escapes, hex digits (upper and lower case) and plain characters, often enough to collide.
@given(st.text(st.sampled_from([*"____0123456789ABCDEFaez-"]), min_size=1, max_size=12))
@example("_5F")
@example("_41")
@example("_e9")
@example("_C3")
@example("__")
def test_a_token_decodes_only_if_it_is_the_one_spelling_of_its_segment(token: str) -> None:
    try:
        segment = decode_segment(token)
    except SubjectError:
        return
    assert encode_segment(segment) == token


@given(texts, texts, st.booleans())
def test_a_publication_subject_gives_back_tenant_and_topic(tenant: str, topic: str,
                                                           kept: bool) -> None:
    subject = SPACE.publish(tenant, topic, kept)
    assert valid_subject(subject)
    assert SPACE.parse_publish(subject) == (tenant, topic, kept)
    assert nats_matches(SPACE.archive(), subject) == kept


@given(texts, texts)
def test_tenants_and_topics_never_share_a_subject(tenant: str, topic: str) -> None:
    other = SubjectSpace("other")
    assert other.publish(tenant, topic) != SPACE.publish(tenant, topic)
    assert SPACE.publish(tenant + "x", topic) != SPACE.publish(tenant, topic)
    assert SPACE.rpc(tenant, topic) != SPACE.publish(tenant, topic)


@given(topics, patterns, st.booleans())
@example("a/b/c", "a/**", False)
@example("a/b", "a/**/b", True)
@example("a", "a/**", False)
def test_nats_delivers_every_topic_the_pattern_matches(topic: str, pattern: str,
                                                       kept: bool) -> None:
    interest = SPACE.subscription("t", pattern)
    subject = SPACE.publish("t", topic, kept)
    if compile_pattern(pattern).fullmatch(topic):
        assert nats_matches(interest.subject, subject)


@given(topics, patterns, st.booleans())
def test_an_exact_interest_delivers_only_matching_topics(topic: str, pattern: str,
                                                         kept: bool) -> None:
    interest = SPACE.subscription("t", pattern)
    if not interest.exact or "" in topic.split("/"):
        return
    subject = SPACE.publish("t", topic, kept)
    assert nats_matches(interest.subject, subject) == bool(
        compile_pattern(pattern).fullmatch(topic))


@given(topics, patterns, st.booleans(), st.booleans())
def test_a_live_or_kept_interest_sees_only_its_kind(topic: str, pattern: str, kept: bool,
                                                    wanted: bool) -> None:
    both = SPACE.subscription("t", pattern)
    one = SPACE.subscription("t", pattern, kept=wanted)
    subject = SPACE.publish("t", topic, kept)
    assert nats_matches(one.subject, subject) == (
        nats_matches(both.subject, subject) and kept == wanted)


@given(topics, patterns, st.booleans())
def test_other_tenants_never_match(topic: str, pattern: str, kept: bool) -> None:
    assert not nats_matches(SPACE.subscription("t", pattern).subject,
                            SPACE.publish("u", topic, kept))
    assert not nats_matches(SPACE.subscription("t", pattern).subject,
                            SPACE.rpc("t", topic))


@pytest.mark.parametrize(("pattern", "tokens", "exact"), [
    ("a/b", "a.b", True),
    ("*", "*", True),
    ("a/*/c", "a.*.c", True),
    ("**", ">", True),
    ("a/**", "a.>", True),
    ("a/**/b", "a.>", False),
    ("a**", ">", False),
    ("a/x*", "a.*", False),
    ("a/*/**", "a.*.>", True),
    ("x.y/*", "x_2Ey.*", True),
])
def test_patterns_nats_can_and_cannot_express(pattern: str, tokens: str, exact: bool) -> None:
    root = "rembus.test_20cluster_2E1.pub.*.t."
    assert SPACE.subscription("t", pattern) == Interest(root + tokens, exact)


def test_an_empty_segment_is_the_one_case_an_exact_star_lets_through() -> None:
    interest = SPACE.subscription("t", "a/*")
    assert interest.exact
    assert nats_matches(interest.subject, SPACE.publish("t", "a/"))
    assert nats_matches(interest.subject, SPACE.publish("t", "a/b", kept=True))
    assert not compile_pattern("a/*").fullmatch("a/")


def test_subjects_are_bounded() -> None:
    space = SubjectSpace("c", max_subject=64)
    space.publish("t", "x" * 40)
    with pytest.raises(SubjectError):
        space.publish("t", "é" * 10)  # 6 characters a letter once escaped
    with pytest.raises(SubjectError):
        SubjectSpace("c" * 100, max_subject=64)


def test_what_is_not_ours_is_refused() -> None:
    for subject in ("rembus.other.pub.live.t.a", "rembus.test_20cluster_2E1.pub.live.t",
                    "rembus.test_20cluster_2E1.pub.live.t.a_2",
                    "rembus.test_20cluster_2E1.pub.t.a", "rembus.test_20cluster_2E1.rpc.t.a"):
        with pytest.raises(SubjectError):
            SPACE.parse_publish(subject)
    with pytest.raises(SubjectError):
        encode_segment("\ud800")
    with pytest.raises(SubjectError):
        SubjectSpace("")


def test_names_and_buckets_use_the_safe_alphabet() -> None:
    assert encode_topic("a//x.y/") == f"a.{EMPTY}.x_2Ey.{EMPTY}"
    assert SPACE.direct("comp.tenant") == "rembus.test_20cluster_2E1.direct.comp_2Etenant"
    assert SPACE.broker("b-1") == "rembus.test_20cluster_2E1.broker.b-1"
    assert SPACE.rpc(".", "my/method") == "rembus.test_20cluster_2E1.rpc._2E.my.method"
    bucket = SPACE.bucket("names")
    assert set(bucket) <= SAFE | {"_"}


def test_a_nats_server_matches_as_the_model_does(nats_node: NatsCluster) -> None:
    """The matcher the properties above rely on agrees with a real server."""
    patterns = ["a/b", "*", "a/*", "a/**", "**", "a/**/b", "a*", "x.y/*", "*/*", "é/**", "a/*/b"]
    topics = ["a", "a/b", "a/b/c", "a/", "a/x/b", "ab", "x.y/z", "é/1", "", "a b/c", "b", "a//b"]

    async def scenario() -> None:
        async with nats_client(*nats_node.urls) as nc:
            interests = {p: SPACE.subscription("t", p).subject for p in patterns}
            subs = {p: await nc.subscribe(subject) for p, subject in interests.items()}
            sent = [(topic, kept) for kept in (False, True) for topic in topics]
            for topic, kept in sent:
                await nc.publish(SPACE.publish("t", topic, kept), topic.encode())
            await nc.publish(SPACE.publish("u", "a/b"), b"another tenant")
            # One server handles the PUBs of a connection in order and writes each
            # copy for that same connection at once: when the last one's copy is
            # in, every earlier copy is too.
            last = await nc.subscribe(SPACE.broker("end"))
            await nc.publish(SPACE.broker("end"), b"")
            await last.next_msg(timeout=WAIT)
            for pattern, sub in subs.items():
                got = [(await sub.next_msg(timeout=WAIT)).data.decode()
                       for _ in range(sub.pending_msgs)]
                assert got == [topic for topic, kept in sent
                               if nats_matches(interests[pattern],
                                               SPACE.publish("t", topic, kept))], pattern
                wanted = {topic for topic in topics if compile_pattern(pattern).fullmatch(topic)}
                assert wanted <= set(got), pattern

    asyncio.run(asyncio.wait_for(scenario(), WAIT))
