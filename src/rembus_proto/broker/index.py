"""The subscription index: which twins listen to a topic.

Exact topics are a dict lookup. Patterns (``*`` one segment, ``**`` any
sequence) live behind :class:`PatternMatcher`, a three-method interface
(``insert``/``remove``/``match``); the default is the segment trie
:class:`~rembus_proto.sublist.SubList`, whose cost is linear in the topic
and pattern (a regular expression backtracks exponentially on some
patterns), with results cached per topic. The index also
counts retroactive subscriptions, which decide whether a publication is
archived.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Protocol

from ..sublist import SubList
from ..topics import compile_pattern, is_pattern
from .state import Twin


class PatternMatcher(Protocol):
    """Topic patterns and the values stored under them."""

    def insert(self, pattern: str, value: str) -> object:
        """Store ``value`` under ``pattern``."""

    def remove(self, pattern: str, value: str) -> object:
        """Forget ``value`` under ``pattern`` (nothing if it is not there)."""

    def match(self, topic: str) -> Iterable[str]:
        """The values of every pattern that matches ``topic``."""


class RegexMatcher:
    """A :class:`PatternMatcher` that tries one compiled expression per pattern.

    It backtracks: some patterns cost time exponential in their ``**`` to
    fail on a long topic. Kept as the reference meaning of patterns.

    The index stores each pattern under itself, so ``match`` yields patterns,
    in the order they were first inserted.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[re.Pattern[str], set[str]]] = {}

    def insert(self, pattern: str, value: str) -> None:
        """Store ``value`` under ``pattern``."""
        entry = self._entries.get(pattern)
        if entry is None:
            entry = self._entries[pattern] = (compile_pattern(pattern), set())
        entry[1].add(value)

    def remove(self, pattern: str, value: str) -> None:
        """Forget ``value`` under ``pattern``."""
        entry = self._entries.get(pattern)
        if entry is not None:
            entry[1].discard(value)
            if not entry[1]:
                del self._entries[pattern]

    def match(self, topic: str) -> list[str]:
        """The values of every pattern that matches ``topic``."""
        return [value for regex, values in self._entries.values() if regex.fullmatch(topic)
                for value in values]


class SubscriptionIndex:
    """Topic or pattern -> subscribed twins, with counts of the retroactive ones."""

    def __init__(self, matcher: PatternMatcher | None = None) -> None:
        # The three dicts below are public for the fan-out hot path, read-only
        # there; they are never replaced, so a reference to them stays valid.
        self.exact: dict[str, dict[Twin, None]] = {}
        """Topic -> twins subscribed to exactly that topic."""
        self.patterns: dict[str, dict[Twin, None]] = {}
        """Pattern -> twins subscribed to it."""
        self.retro: dict[str, int] = {}
        """Exact topic -> how many retroactive subscriptions it has."""
        self._matcher: PatternMatcher = matcher if matcher is not None else SubList[str]()
        self._retro_patterns: dict[str, int] = {}
        self.listener: Callable[[Twin, str, bool], object] | None = None
        """Told of every subscription actually added (``True``) or removed (a cluster)."""

    def add(self, topic: str, twin: Twin, retro: bool) -> None:
        """Index the subscription of ``twin`` to ``topic`` (a pattern or not)."""
        if is_pattern(topic):
            twins = self.patterns.get(topic)
            if twins is None:
                twins = self.patterns[topic] = {}
                self._matcher.insert(topic, topic)
            counts = self._retro_patterns
        else:
            twins = self.exact.setdefault(topic, {})
            counts = self.retro
        if self.listener is not None and twin not in twins:
            self.listener(twin, topic, True)
        twins[twin] = None
        if retro:
            counts[topic] = counts.get(topic, 0) + 1

    def remove(self, topic: str, twin: Twin, retro: bool) -> None:
        """Undo :meth:`add` (same ``retro``)."""
        if is_pattern(topic):
            twins = self.patterns.get(topic)
            if twins is not None:
                self._removed(twins, twin, topic)
                if not twins:
                    del self.patterns[topic]
                    self._matcher.remove(topic, topic)
            counts = self._retro_patterns
        else:
            exact = self.exact.get(topic)
            if exact is not None:
                self._removed(exact, twin, topic)
                if not exact:
                    del self.exact[topic]
            counts = self.retro
        if retro:
            left = counts.get(topic, 0) - 1
            if left > 0:
                counts[topic] = left
            else:
                counts.pop(topic, None)

    def _removed(self, twins: dict[Twin, None], twin: Twin, topic: str) -> None:
        if twin in twins:
            del twins[twin]
            if self.listener is not None:
                self.listener(twin, topic, False)

    def add_twin(self, twin: Twin) -> None:
        """Index every subscription of ``twin``."""
        for topic in twin.subs:
            self.add(topic, twin, twin.retroactive(topic))

    def remove_twin(self, twin: Twin) -> None:
        """Remove every subscription of ``twin``."""
        for topic in twin.subs:
            self.remove(topic, twin, twin.retroactive(topic))

    def match(self, topic: str) -> list[str]:
        """The subscribed patterns that match ``topic``."""
        return list(self._matcher.match(topic)) if self.patterns else []

    def pattern_subscribers(self, pattern: str) -> dict[Twin, None]:
        """Twins subscribed to ``pattern``."""
        return self.patterns.get(pattern) or {}

    def archived(self, topic: str, patterns: Iterable[str]) -> bool:
        """Whether a publication on ``topic`` (matching ``patterns``) must be stored."""
        retro = self.retro
        if not retro:
            return False
        if topic in retro:
            return True
        retro_patterns = self._retro_patterns
        return any(pattern in retro_patterns for pattern in patterns)

    def snapshot(self) -> dict[str, list[str]]:
        """Every topic and pattern with the sorted names of its subscribers."""
        out = {topic: sorted(t.name for t in twins) for topic, twins in self.exact.items()}
        out.update((p, sorted(t.name for t in twins)) for p, twins in self.patterns.items())
        return out


__all__ = ["PatternMatcher", "RegexMatcher", "SubscriptionIndex"]
