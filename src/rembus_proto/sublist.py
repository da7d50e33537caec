"""A subscription index: which values subscribed to patterns matching a topic.

:class:`SubList` is a trie of ``/``-separated segments, as in NATS. A node
has a child per literal segment, one ``*`` child and one ``**`` child; a
``**`` node also loops on itself. Patterns mean what
:mod:`rembus_proto.wildcard` says (``*`` one non-empty segment, ``**`` one or
more segments). A segment mixing ``*`` with other characters, or with three
or more stars (``se*``, ``a**b``, ``***``), ends the trie path: the rest of the
pattern from that segment on is a *tail*, matched by a
:class:`~rembus_proto.wildcard.Wildcard` against the rest of the topic, and
filed at its node under its literal prefix (the text before its first ``*``).

Cost of :meth:`SubList.match` for a topic of ``n`` segments, proved here.
Matching keeps the set ``A_j`` of nodes whose path matches the first ``j``
segments, and builds ``A_{j+1}`` from it with at most three dict/attribute
reads per node (literal child, ``*`` child, ``**`` child, plus the self-loop of
a ``**`` node). ``A_j`` is a set, so it never holds a node twice, and only
nodes whose path matches a prefix of the topic ever enter it: patterns that
cannot match are not visited, however many there are. For one pattern of
``s`` segments of which ``d`` are ``**``, its path holds one node per segment,
and between two ``**`` segments the number of topic segments consumed is
fixed, so at most ``d + 1`` of its nodes are in ``A_j``; for many patterns,
``|A_j|`` is at most the number of trie nodes on paths that match a prefix of
the topic. Total: O(n x |A|) steps, with ``|A| <= d + 1`` for a single
pattern, never exponential. Each tail at a visited node is looked up by the
prefix lengths present there (one dict read per distinct length) and runs in
O(len(topic) x len(tail) / 64) (see :mod:`rembus_proto.wildcard`).

Results are each matching value once, in the order of its first insertion
among the matching patterns, so a broker delivers in a stable order. A bounded
LRU cache keeps the results of recent topics; any insert or remove empties it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from .wildcard import Wildcard

V = TypeVar("V", bound=Hashable)

DEFAULT_CACHE_SIZE = 1024
"""Topics whose results :class:`SubList` keeps by default."""


class _Tail(Generic[V]):
    __slots__ = ("matcher", "values")

    def __init__(self, pattern: str) -> None:
        self.matcher = Wildcard(pattern)
        self.values: dict[V, int] = {}


class _Node(Generic[V]):
    __slots__ = ("any", "literal", "loops", "star", "tail_lengths", "tails", "values")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node[V]] = {}
        self.star: _Node[V] | None = None
        self.any: _Node[V] | None = None
        self.loops = loops  # a ``**`` node: consumes any further segments
        self.values: dict[V, int] = {}  # value -> insertion number
        self.tails: dict[str, dict[str, _Tail[V]]] = {}  # prefix -> tail pattern -> tail
        self.tail_lengths: tuple[int, ...] = ()

    def empty(self) -> bool:
        return not (self.literal or self.star or self.any or self.values or self.tails)


def _is_plain(segment: str) -> bool:
    return "*" not in segment or segment in ("*", "**")


class SubList(Generic[V]):
    """Patterns and their subscribers, matched against topics (see the module doc).

    ``cache_size`` bounds the topics whose results are remembered (0: none).
    """

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._root: _Node[V] = _Node()
        self._cache: OrderedDict[str, tuple[V, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._count = 0
        self._next = 0

    def __len__(self) -> int:
        """The number of (pattern, value) pairs held."""
        return self._count

    def insert(self, pattern: str, value: V) -> bool:
        """Add ``value`` under ``pattern``; ``False`` if it was there already."""
        node, tail = self._walk(pattern)
        values = node.values if tail is None else self._tail(node, tail).values
        if value in values:
            return False
        values[value] = self._next
        self._next += 1
        self._count += 1
        self._cache.clear()
        return True

    def remove(self, pattern: str, value: V) -> bool:
        """Remove ``value`` from ``pattern``; ``False`` if it was not there."""
        path: list[tuple[_Node[V], str]] = []
        node: _Node[V] | None = self._root
        segments = pattern.split("/")
        tail = None
        for index, segment in enumerate(segments):
            if not _is_plain(segment):
                tail = "/".join(segments[index:])
                break
            assert node is not None
            path.append((node, segment))
            node = (node.star if segment == "*" else node.any if segment == "**"
                    else node.literal.get(segment))
            if node is None:
                return False
        assert node is not None
        if tail is None:
            if node.values.pop(value, None) is None:
                return False
        elif not self._drop_tail(node, tail, value):
            return False
        self._count -= 1
        self._cache.clear()
        for parent, segment in reversed(path):
            if not node.empty():
                break
            if segment == "*":
                parent.star = None
            elif segment == "**":
                parent.any = None
            else:
                del parent.literal[segment]
            node = parent
        return True

    def match(self, topic: str) -> tuple[V, ...]:
        """The values whose pattern matches ``topic``, each once, oldest first."""
        cache = self._cache
        hit = cache.get(topic)
        if hit is not None:
            cache.move_to_end(topic)
            return hit
        found = self._collect(topic)
        result = tuple(sorted(found, key=found.__getitem__)) if len(found) > 1 else tuple(found)
        if self._cache_size:
            cache[topic] = result
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return result

    # -- internals ----------------------------------------------------------

    def _walk(self, pattern: str) -> tuple[_Node[V], str | None]:
        """The node of ``pattern``, created if missing, and its tail if it has one."""
        node = self._root
        segments = pattern.split("/")
        for index, segment in enumerate(segments):
            if segment == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif segment == "**":
                if node.any is None:
                    node.any = _Node(loops=True)
                node = node.any
            elif "*" in segment:
                return node, "/".join(segments[index:])
            else:
                child = node.literal.get(segment)
                if child is None:
                    child = node.literal[segment] = _Node()
                node = child
        return node, None

    @staticmethod
    def _tail(node: _Node[V], tail: str) -> _Tail[V]:
        prefix = tail.partition("*")[0]
        bucket = node.tails.setdefault(prefix, {})
        entry = bucket.get(tail)
        if entry is None:
            entry = bucket[tail] = _Tail(tail)
            node.tail_lengths = tuple(sorted({len(p) for p in node.tails}))
        return entry

    @staticmethod
    def _drop_tail(node: _Node[V], tail: str, value: V) -> bool:
        prefix = tail.partition("*")[0]
        bucket = node.tails.get(prefix)
        entry = bucket.get(tail) if bucket is not None else None
        if bucket is None or entry is None or entry.values.pop(value, None) is None:
            return False
        if not entry.values:
            del bucket[tail]
            if not bucket:
                del node.tails[prefix]
                node.tail_lengths = tuple(sorted({len(p) for p in node.tails}))
        return True

    def _collect(self, topic: str) -> dict[V, int]:
        found: dict[V, int] = {}
        active: list[_Node[V]] = [self._root]
        start = 0
        for segment in topic.split("/"):
            after: list[_Node[V]] = []
            loopers: set[_Node[V]] | None = None  # a ``**`` node may come twice: once only
            for node in active:
                if node.tails:
                    _match_tails(node, segment, topic[start:], found)
                child = node.literal.get(segment)
                if child is not None:
                    after.append(child)
                star = node.star
                if star is not None and segment:
                    after.append(star)
                if node.any is not None or node.loops:
                    if loopers is None:
                        loopers = set()
                    for looper in (node.any, node if node.loops else None):
                        if looper is not None and looper not in loopers:
                            loopers.add(looper)
                            after.append(looper)
            if not after:
                return found
            active = after
            start += len(segment) + 1
        for node in active:
            _add(found, node.values)
        return found


def _match_tails(node: _Node[V], segment: str, rest: str, found: dict[V, int]) -> None:
    tails = node.tails
    for length in node.tail_lengths:
        if length > len(segment):
            break
        bucket = tails.get(segment[:length])
        if bucket is None:
            continue
        for entry in bucket.values():
            if entry.matcher.fullmatch(rest):
                _add(found, entry.values)


def _add(found: dict[V, int], values: dict[V, int]) -> None:
    for value, number in values.items():
        known = found.get(value)
        if known is None or number < known:
            found[value] = number
