"""Differential fuzzing of wildcard matching: SubList and Wildcard against the regex.

Run: python fuzz/fuzz_sublist.py -max_total_time=60 [corpus-dir]
A program of inserts, removes and matches on small patterns and topics (few
characters, so that they collide) drives a SubList with a tiny cache; every
match must give the values of the patterns the regex of
rembus_proto.topics.compile_pattern accepts, once each, in first insertion
order, and Wildcard must agree with the regex on every pair.
"""

from __future__ import annotations

import sys
from typing import Any

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    from rembus_proto.sublist import SubList
    from rembus_proto.topics import compile_pattern
    from rembus_proto.wildcard import Wildcard

_PATTERN_CHARS = "ab/*"
_TOPIC_CHARS = "ab/"
_MAX_OPS = 64
_MAX_LENGTH = 10  # the regex backtracks: keep it cheap


def _text(fdp: Any, alphabet: str) -> str:
    size = fdp.ConsumeIntInRange(0, _MAX_LENGTH)
    return "".join(alphabet[fdp.ConsumeIntInRange(0, len(alphabet) - 1)] for _ in range(size))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    sublist: SubList[int] = SubList(cache_size=fdp.ConsumeIntInRange(0, 3))
    entries: dict[tuple[str, int], None] = {}  # insertion order
    for _ in range(fdp.ConsumeIntInRange(0, _MAX_OPS)):
        if not fdp.remaining_bytes():
            break
        op = fdp.ConsumeIntInRange(0, 2)
        if op == 0:
            key = (_text(fdp, _PATTERN_CHARS), fdp.ConsumeIntInRange(0, 3))
            assert sublist.insert(*key) is (key not in entries)
            entries.setdefault(key)
        elif op == 1 and entries:
            listed = list(entries)
            key = listed[fdp.ConsumeIntInRange(0, len(listed) - 1)]
            assert sublist.remove(*key)
            del entries[key]
            assert not sublist.remove(*key)
        topic = _text(fdp, _TOPIC_CHARS)
        matching = [(p, v) for p, v in entries if compile_pattern(p).fullmatch(topic)]
        expected = tuple(dict.fromkeys(v for _, v in matching))
        got = sublist.match(topic)
        assert got == expected, (list(entries), topic, got, expected)
        for key in entries:
            assert Wildcard(key[0]).fullmatch(topic) is (key in matching), (key, topic)
        assert len(sublist) == len(entries)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
