"""Topic patterns (key spaces), tenants and component names, and their limits.

What a pattern matches is described in :mod:`rembus_proto.wildcard`.

Names and topics come from the network, so a broker checks them before it
keeps them (:func:`check_name`, :func:`check_topic`, with the bounds of
:class:`NameLimits`). Refused are: the empty string; more characters than the
limit; control characters (Unicode category Cc: NUL, newline, escape...),
format characters (Cf: bidi overrides such as U+202E, zero-width spaces and
joiners, the BOM), lone surrogates (Cs) and the line and paragraph separators
(Zl, Zp) — characters that make one name look like another or forge lines
in logs. A pattern (a topic with ``*``) also has a bound on its segments.
Both checks return the reason as text, or ``None`` when the value is fine.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .cbor import head, read_head, text
from .errors import MalformedMessage


@dataclass(frozen=True, slots=True)
class NameLimits:
    """Bounds on component names, topics and patterns (lengths in characters)."""

    max_name_length: int = 256
    """Characters of a component name."""
    max_topic_length: int = 1024
    """Characters of a topic, pattern or not."""
    max_pattern_segments: int = 32
    """``/``-separated segments of a pattern."""


DEFAULT_NAME_LIMITS = NameLimits()

_REFUSED = {"Cc": "control character", "Cf": "format character", "Cs": "surrogate",
            "Zl": "line separator", "Zp": "paragraph separator"}


def _check_text(value: str, what: str, limit: int) -> str | None:
    if not value:
        return f"{what} is empty"
    if len(value) > limit:
        return f"{what} is {len(value)} characters long, the limit is {limit}"
    if value.isprintable():  # False for every refused category: the usual case ends here
        return None
    for char in value:
        category = unicodedata.category(char)
        kind = _REFUSED.get(category)
        if kind is not None:
            described = unicodedata.name(char, "")
            described = f" {described}" if described else ""
            return f"{what} contains U+{ord(char):04X}{described} ({kind}, category {category})"
    return None


def check_name(name: str, limits: NameLimits = DEFAULT_NAME_LIMITS) -> str | None:
    """Why ``name`` cannot be a component name, or ``None`` if it can.

    Check the name as the broker keeps it (after :func:`normalize_name`).
    """
    return _check_text(name, "name", limits.max_name_length)


def check_topic(topic: str, limits: NameLimits = DEFAULT_NAME_LIMITS) -> str | None:
    """Why ``topic`` cannot be published, subscribed or exposed, or ``None`` if it can."""
    reason = _check_text(topic, "topic", limits.max_topic_length)
    if reason is None and is_pattern(topic):
        segments = topic.count("/") + 1
        if segments > limits.max_pattern_segments:
            return (f"pattern has {segments} segments, "
                    f"the limit is {limits.max_pattern_segments}")
    return reason


def is_pattern(topic: str) -> bool:
    """Whether a subscription topic is a key-space pattern (contains ``*``)."""
    return "*" in topic


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression upstream brokers build for ``pattern``.

    ``*`` becomes ``[^/]+``, ``**`` ``.*``. It states the meaning of a
    pattern but backtracks: some patterns take time exponential in their
    number of ``**`` to fail on a long topic. Match with
    :class:`rembus_proto.wildcard.Wildcard` or
    :class:`rembus_proto.sublist.SubList` instead.
    """
    parts = []
    for segment in re.split(r"(\*\*|\*)", pattern):
        if segment == "**":
            parts.append(".*")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("".join(parts))


def tenant(name: str) -> str:
    """The tenant of a component: the text after the first ``.``, else ``"."``."""
    _, dot, rest = name.partition(".")
    return rest if dot else "."


def normalize_name(cid: str) -> str:
    """A component name as sent by any client: JL clients send a whole URL."""
    if "://" in cid:
        path = cid.split("://", 1)[1].partition("/")[2]
        return path.split("?", 1)[0].rstrip("/")
    return cid


def pattern_payload(topic: str, payload: bytes) -> bytes:
    """The payload of a key-space delivery: ``[topic, *args]`` built from raw bytes.

    The original argument bytes are kept as they are; only the array head is
    rewritten.
    """
    first = payload[0] if payload else 0
    if 0x80 <= first <= 0x9B:
        try:
            _, count, pos = read_head(payload, 0)
        except MalformedMessage:
            pass
        else:
            return head(4, count + 1) + text(topic) + payload[pos:]
    if first == 0xF6:
        return head(4, 1) + text(topic)
    return head(4, 2) + text(topic) + payload
