"""What a wildcard subscription matches, decided in linear time.

A subscription topic containing ``*`` is a pattern, matched against the whole
published topic. Read left to right, a pattern is made of three kinds of
pieces (a run of stars is read two at a time, so ``***`` is ``**`` then ``*``):

* ``*`` — one or more characters other than ``/``;
* ``**`` — any characters, ``/`` included, possibly none;
* any other character — itself.

Consequences worth knowing:

* As a whole ``/``-separated segment, ``*`` is exactly one non-empty segment
  (``house/*/temp`` matches ``house/kitchen/temp``, not ``house//temp`` nor
  ``house/a/b/temp``), and ``**`` is one or more whole segments, empty ones
  included (``garden/**`` matches ``garden/`` and ``garden/x/y``, not
  ``garden``; ``a/**/b`` matches ``a/x/y/b`` and ``a//b``, not ``a/b``; ``**``
  alone matches every topic).
* Inside a segment, ``*`` stays in that segment (``se*`` matches ``secret``,
  not ``se`` nor ``se/x``) while ``**`` crosses segments (``a**b`` matches
  ``ab`` and ``a/x/b``; ``**.json`` matches ``x/y.json``).

This is the meaning of the regular expression that upstream brokers build
(``*`` → ``[^/]+``, ``**`` → ``.*``, see :func:`rembus_proto.topics.compile_pattern`),
without its backtracking: :class:`Wildcard` splits a pattern at its ``**``
into chunks and places each chunk at its earliest possible end, since any
later end leaves less text for what follows. A chunk without ``*`` is found
with ``str.find``; one with ``*`` is run as a bit-parallel automaton (one bit
per pattern character, a Python int as the bit vector). The chunks read
disjoint stretches of the topic, so one match costs O(len(topic)) steps of
O(len(pattern) / 64) machine words, whatever the pattern.
"""

from __future__ import annotations

import re

_PIECES = re.compile(r"(\*\*|\*)")


class _Chunk:
    """The pieces between two ``**``: literal characters and ``*``."""

    __slots__ = ("final", "literal", "loop", "masks", "nonslash")

    def __init__(self, pieces: list[str]) -> None:
        self.literal: str | None = None
        if "*" not in pieces:
            self.literal = "".join(pieces)
            return
        self.masks: dict[str, int] = {}
        self.nonslash = 0
        self.loop = 0
        bit = 1
        for piece in pieces:
            if piece == "*":
                self.nonslash |= bit
                self.loop |= bit  # one character, then as many more as wanted
                bit <<= 1
                continue
            for char in piece:
                self.masks[char] = self.masks.get(char, 0) | bit
                bit <<= 1
        self.final = bit >> 1

    def scan(self, text: str, start: int, anchored: bool, to_end: bool) -> int:
        """Where a match of this chunk in ``text`` ends, or -1.

        The match starts at ``start`` if ``anchored``, else anywhere from
        ``start`` on. With ``to_end`` it must end at ``len(text)`` (returned);
        else the earliest end is returned.
        """
        size = len(text)
        literal = self.literal
        if literal is not None:
            if anchored:
                end = start + len(literal)
                ok = text.startswith(literal, start) and (not to_end or end == size)
                return end if ok else -1
            if to_end:
                ok = size - len(literal) >= start and text.endswith(literal)
                return size if ok else -1
            found = text.find(literal, start)
            return found + len(literal) if found >= 0 else -1
        masks, nonslash, loop, final = self.masks, self.nonslash, self.loop, self.final
        state = 0  # bit i: the first i + 1 pattern characters end here
        inject = 1
        for pos in range(start, size):
            char = text[pos]
            accept = masks.get(char, 0)
            if char != "/":
                accept |= nonslash
            state = (((state << 1) | inject) & accept) | (state & loop & accept)
            if anchored:
                if not state:
                    return -1
                inject = 0
            if state & final and not to_end:
                return pos + 1
        return size if to_end and state & final else -1


class Wildcard:
    """One pattern, compiled for :meth:`fullmatch` (see the module doc)."""

    __slots__ = ("_chunks", "_head", "_literals", "_min_length", "_tail", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        chunks: list[list[str]] = [[]]
        for piece in _PIECES.split(pattern):
            if piece == "**":
                chunks.append([])
            elif piece:
                chunks[-1].append(piece)
        self._chunks = [_Chunk(pieces) for pieces in chunks]
        # Necessary conditions, checked at C speed before the automaton runs:
        # the literal text in order, the literal start and end, a least length.
        pieces = [piece for piece in _PIECES.split(pattern) if piece]
        self._literals = [piece for piece in pieces if "*" not in piece]
        self._head = pieces[0] if pieces and "*" not in pieces[0] else ""
        self._tail = pieces[-1] if pieces and "*" not in pieces[-1] else ""
        self._min_length = sum(map(len, self._literals)) + pieces.count("*")

    def fullmatch(self, topic: str) -> bool:
        """Whether the pattern matches all of ``topic``."""
        if (len(topic) < self._min_length or not topic.startswith(self._head)
                or not topic.endswith(self._tail)):
            return False
        pos = 0
        for literal in self._literals:
            pos = topic.find(literal, pos)
            if pos < 0:
                return False
            pos += len(literal)
        chunks = self._chunks
        last = len(chunks) - 1
        if not last:
            return chunks[0].scan(topic, 0, True, True) >= 0
        pos = chunks[0].scan(topic, 0, True, False)
        for chunk in chunks[1:last]:
            if pos < 0:
                return False
            pos = chunk.scan(topic, pos, False, False)
        return pos >= 0 and chunks[last].scan(topic, pos, False, True) >= 0

    def __repr__(self) -> str:
        return f"Wildcard({self.pattern!r})"
