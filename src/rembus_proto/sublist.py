"""A subscription index: which values subscribed to patterns matching a topic.

:class:`SubList` is a trie of ``/``-separated segments, as in NATS. A node
has a child per literal segment, one ``*`` child and one ``**`` child; a
``**`` node also loops on itself. Patterns mean what
:mod:`rembus_proto.wildcard` says (as a whole segment, ``*`` is one non-empty
segment and ``**`` one or more segments). A segment mixing ``*`` with other
characters, or with three or more stars (``se*``, ``a**b``, ``***``), ends the
trie path: the rest of the pattern from that segment on is a *tail*, matched
by a :class:`~rembus_proto.wildcard.Wildcard` against the rest of the topic.
A node files its tails under their literal prefix (the text before the first
``*``: ``se`` for ``se*``), else their literal suffix (after the last ``*``:
``.json`` for ``**.json``), else the first four characters of their longest
literal piece (``abcd`` for ``*abcdef*``, looked up among the substrings of
the topic when the tails outnumber those), else nothing: a tail of stars
only (``***``) is tried at every visit of its node.

Cost of :meth:`SubList.match` for a topic of ``n`` segments, proved here.
Matching keeps the set ``A_j`` of the nodes whose path matches the first
``j`` segments, and builds ``A_{j+1}`` from it with a few dict and attribute
reads per node (literal child, ``*`` child, ``**`` child, the self-loop of a
``**`` node). ``A_j`` holds no node twice, and only nodes whose path matches
a prefix of the topic ever enter it, so patterns that cannot match are not
visited however many there are. The nodes of one pattern of ``s`` segments
lie on one path of ``s + 1`` nodes, so that pattern puts at most ``s + 1``
nodes in ``A_j``; without ``**`` it puts at most one (its node at depth
``j``), and only the nodes after its first ``**`` can be active together.
Over all patterns, ``|A_j|`` is at most the number of trie nodes on paths
that match a prefix of the topic, and a match costs O(n x max |A_j|) steps:
O(n x s) for one pattern, with ``s`` bounded by the broker
(:class:`rembus_proto.topics.NameLimits`), never exponential. At a visited
node, tails cost one dict read per distinct key length present there (times
``len(topic)`` for infix keys, of at most four lengths), then
O(len(topic) x len(tail) / 64) per tail whose key fits (see
:mod:`rembus_proto.wildcard`), plus that for each tail without a key.

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


class _Buckets(Generic[V]):
    """Tails filed under a key (a literal prefix, suffix or infix), with the key lengths present."""

    __slots__ = ("by_key", "lengths", "size")

    def __init__(self) -> None:
        self.by_key: dict[str, dict[str, _Tail[V]]] = {}
        self.lengths: tuple[int, ...] = ()
        self.size = 0  # tails held

    def entry(self, key: str, tail: str) -> _Tail[V]:
        bucket = self.by_key.setdefault(key, {})
        entry = bucket.get(tail)
        if entry is None:
            entry = bucket[tail] = _Tail(tail)
            self.size += 1
            self.lengths = tuple(sorted({len(k) for k in self.by_key}))
        return entry

    def drop(self, key: str, tail: str, value: V) -> bool:
        bucket = self.by_key.get(key)
        entry = bucket.get(tail) if bucket is not None else None
        if bucket is None or entry is None or entry.values.pop(value, None) is None:
            return False
        if not entry.values:
            del bucket[tail]
            self.size -= 1
            if not bucket:
                del self.by_key[key]
                self.lengths = tuple(sorted({len(k) for k in self.by_key}))
        return True

    def match(self, text: str, from_end: bool, rest: str, found: dict[V, int]) -> None:
        """Add the values of tails keyed by a start (or end) of ``text`` that match ``rest``."""
        by_key = self.by_key
        size = len(text)
        for length in self.lengths:
            if length > size:
                break
            bucket = by_key.get(text[size - length:] if from_end else text[:length])
            if bucket is not None:
                _try(bucket, rest, found)

    def match_inside(self, rest: str, found: dict[V, int]) -> None:
        """Add the values of tails keyed by a substring of ``rest`` that match ``rest``.

        Looking up every substring costs ``len(rest)`` reads per key length;
        when the tails are fewer, trying them all is cheaper.
        """
        by_key = self.by_key
        size = len(rest)
        if self.size <= size * len(self.lengths):
            for every in by_key.values():
                _try(every, rest, found)
            return
        tried: set[str] = set()
        for length in self.lengths:
            for start in range(size - length + 1):
                key = rest[start:start + length]
                bucket = by_key.get(key)
                if bucket is not None and key not in tried:
                    tried.add(key)
                    _try(bucket, rest, found)


def _try(bucket: dict[str, _Tail[V]], rest: str, found: dict[V, int]) -> None:
    for entry in bucket.values():
        if entry.matcher.fullmatch(rest):
            _add(found, entry.values)


_INFIX = 4  # characters of an infix key: short keys keep the substring reads few


class _Tails(Generic[V]):
    """The tails of one node, filed under the first of these they have.

    Their literal prefix (``se`` of ``se*``), their literal suffix (``.json``
    of ``**.json``), the start of their longest literal piece (``abcd`` of
    ``*abcdef*``, looked up among the substrings of the topic), else nothing
    (``***``: every visit of the node tries them).
    """

    __slots__ = ("infixed", "prefixed", "suffixed")

    def __init__(self) -> None:
        self.prefixed: _Buckets[V] = _Buckets()
        self.suffixed: _Buckets[V] = _Buckets()
        self.infixed: _Buckets[V] = _Buckets()

    def place(self, tail: str) -> tuple[_Buckets[V], str]:
        prefix = tail.partition("*")[0]
        if prefix:
            return self.prefixed, prefix
        suffix = tail.rpartition("*")[2]
        if suffix:
            return self.suffixed, suffix
        infix = max(tail.split("*"), key=len)[:_INFIX]
        if infix:
            return self.infixed, infix
        return self.prefixed, ""

    def empty(self) -> bool:
        return not (self.prefixed.size or self.suffixed.size or self.infixed.size)

    def match(self, segment: str, rest: str, found: dict[V, int]) -> None:
        if self.prefixed.size:
            self.prefixed.match(segment, False, rest, found)
        if self.suffixed.size:
            self.suffixed.match(rest, True, rest, found)
        if self.infixed.size:
            self.infixed.match_inside(rest, found)


class _Node(Generic[V]):
    __slots__ = ("any", "literal", "loops", "star", "tails", "values")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node[V]] = {}
        self.star: _Node[V] | None = None
        self.any: _Node[V] | None = None
        self.loops = loops  # a ``**`` node: consumes any further segments
        self.values: dict[V, int] = {}  # value -> insertion number
        self.tails: _Tails[V] | None = None

    def empty(self) -> bool:
        return not (self.literal or self.star or self.any or self.values
                    or (self.tails is not None and not self.tails.empty()))


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
        if tail is None:
            values = node.values
        else:
            if node.tails is None:
                node.tails = _Tails()
            buckets, key = node.tails.place(tail)
            values = buckets.entry(key, tail).values
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
        else:
            if node.tails is None:
                return False
            buckets, key = node.tails.place(tail)
            if not buckets.drop(key, tail, value):
                return False
            if node.tails.empty():
                node.tails = None
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

    def _collect(self, topic: str) -> dict[V, int]:
        found: dict[V, int] = {}
        active: list[_Node[V]] = [self._root]
        start = 0
        for segment in topic.split("/"):
            after: list[_Node[V]] = []
            loopers: set[_Node[V]] | None = None  # a ``**`` node may come twice: once only
            for node in active:
                if node.tails is not None:
                    node.tails.match(segment, topic[start:], found)
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


def _add(found: dict[V, int], values: dict[V, int]) -> None:
    for value, number in values.items():
        known = found.get(value)
        if known is None or number < known:
            found[value] = number
