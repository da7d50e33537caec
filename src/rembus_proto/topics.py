"""Topic patterns (key spaces), tenants and component names."""

from __future__ import annotations

import re

from .cbor import head, read_head, text
from .errors import MalformedMessage


def is_pattern(topic: str) -> bool:
    """Whether a subscription topic is a key-space pattern (contains ``*``)."""
    return "*" in topic


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``*`` matches one ``/``-separated segment, ``**`` any sequence."""
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
