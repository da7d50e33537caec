"""Hypothesis strategies for Rembus: names, topics, patterns, values and messages.

Defaults draw what a broker accepts (see :mod:`rembus_proto.topics`); every
function takes the strategies of its parts, so a test can widen or narrow them::

    from hypothesis import given
    from rembus.testing import strategies as rst

    @given(rst.topics(), rst.values())
    def test_round_trip(topic, value): ...
"""

from __future__ import annotations

from typing import Any, Literal

from hypothesis import strategies as st

from rembus_proto import Payload
from rembus_proto.messages import (
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
)
from rembus_proto.topics import DEFAULT_NAME_LIMITS

#: Unicode categories a broker refuses in names and topics.
REFUSED_CATEGORIES: tuple[Literal["Cc", "Cf", "Cs", "Zl", "Zp"], ...] = (
    "Cc", "Cf", "Cs", "Zl", "Zp")
#: QoS flags of a PUB that carries an id.
PUB_FLAGS = (0x10, 0x30, 0x40, 0x50, 0x70)

_CHARS = st.characters(exclude_categories=REFUSED_CATEGORIES, exclude_characters="*")
_SEGMENT_CHARS = st.characters(exclude_categories=REFUSED_CATEGORIES, exclude_characters="*/")


def names(max_size: int = 40) -> st.SearchStrategy[str]:
    """Component names a broker accepts (no ``*``, no URL)."""
    size = min(max_size, DEFAULT_NAME_LIMITS.max_name_length)
    return st.text(_CHARS, min_size=1, max_size=size).filter(lambda n: "://" not in n)


def topics(max_size: int = 40) -> st.SearchStrategy[str]:
    """Topics (not patterns) a broker accepts: publish, subscribe, expose."""
    return st.text(_CHARS, min_size=1, max_size=min(max_size, DEFAULT_NAME_LIMITS.max_topic_length))


def patterns(max_segments: int = 6, segment_size: int = 6) -> st.SearchStrategy[str]:
    """Subscription patterns: ``/``-separated segments of text, ``*``, ``**``, or
    text with a ``*`` inside; always at least one ``*``."""
    literal = st.text(_SEGMENT_CHARS, min_size=1, max_size=segment_size)
    segment = st.one_of(st.sampled_from(["*", "**"]), literal,
                        st.builds("{}*{}".format, literal, literal))
    size = min(max_segments, DEFAULT_NAME_LIMITS.max_pattern_segments)
    return st.lists(segment, min_size=1, max_size=size).map("/".join).filter(lambda p: "*" in p)


def scalars(*, allow_nan: bool = False, max_size: int = 20) -> st.SearchStrategy[Any]:
    """CBOR scalars: null, booleans, integers (bignums included), floats, text, bytes."""
    return st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=allow_nan), st.text(max_size=max_size),
                     st.binary(max_size=max_size))


def values(*, scalar: st.SearchStrategy[Any] | None = None, allow_nan: bool = False,
           max_leaves: int = 20, max_size: int = 5) -> st.SearchStrategy[Any]:
    """What a payload carries: ``scalar`` (default :func:`scalars`) nested in lists and
    text-keyed maps of at most ``max_size`` items."""
    return st.recursive(
        scalars(allow_nan=allow_nan) if scalar is None else scalar,
        lambda inner: st.lists(inner, max_size=max_size)
        | st.dictionaries(st.text(max_size=max_size), inner, max_size=max_size),
        max_leaves=max_leaves)


def payloads(value: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Payload]:
    """Payloads of one value (a list of values is the argument list of a call)."""
    return (values() if value is None else value).map(Payload.of)


def dataframes(max_rows: int = 5) -> st.SearchStrategy[Any]:
    """pyarrow Tables of integer, float and text columns, as components send them
    (DataFrames travel as CBOR tag 80); needs ``pyarrow`` (``rembus[dataframe]``)."""
    import pyarrow as pa

    def table(n: int) -> st.SearchStrategy[Any]:
        def column(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
            return st.lists(elements, min_size=n, max_size=n)

        return st.builds(lambda i, f, s: pa.table({"i": i, "f": f, "s": s}),
                         column(st.integers(-(2**63), 2**63 - 1)),
                         column(st.floats(allow_nan=False)), column(st.text(max_size=8)))

    return st.integers(0, max_rows).flatmap(table)


def message_ids() -> st.SearchStrategy[bytes]:
    """Message ids: 8 or 16 bytes as components make them, or any short byte string."""
    return st.one_of(st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16),
                     st.binary(max_size=40))


def messages(*, topic: st.SearchStrategy[str] | None = None,
             name: st.SearchStrategy[str] | None = None,
             value: st.SearchStrategy[Any] | None = None,
             ids: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[Message]:
    """Messages of every type of :mod:`rembus_proto.messages`."""
    topic = topics() if topic is None else topic
    name = names() if name is None else name
    value = values() if value is None else value
    ids = message_ids() if ids is None else ids
    data = payloads(value)
    text = st.text(max_size=40)
    return st.one_of(
        st.builds(Identity, ids, name, st.none() | st.dictionaries(text, st.integers(0, 65535))),
        st.builds(Pub, topic, data, st.none(), st.just(0)),
        st.builds(Pub, topic, data, ids, st.sampled_from(PUB_FLAGS)),
        st.builds(Rpc, ids, topic, data, st.none() | name),
        st.builds(Admin, ids, topic, st.dictionaries(text, value, max_size=4)),
        st.builds(Response, ids, st.integers(0, 255), data),
        st.builds(Ack, ids),
        st.builds(Ack2, ids),
        st.builds(Unregister, ids, st.none() | name),
        st.builds(Register, ids, name, text, st.binary(max_size=64),
                  st.none() | st.integers(0, 2**64 - 1)),
        st.builds(Attestation, ids, name, st.binary(max_size=64), st.none() | st.just({})),
    )


__all__ = ["PUB_FLAGS", "REFUSED_CATEGORIES", "dataframes", "message_ids", "messages",
           "names", "patterns", "payloads", "scalars", "topics", "values"]
