"""Cost of hostile or heavy subscriptions to a broker (prints figures, asserts nothing).

Run: python bench/bench_abuse.py [--seconds 0.3] [--patterns 1,100,10000]
                                 [--regex-lengths 16,20,24,28] [--lengths 48,56,1024]
                                 [--transport [--hostile 1,10,100] [--calls 500]]

``--transport`` measures instead the broker's RPC latency for a well-behaved
component while hostile connections attack a broker process on 127.0.0.1
(idle upgrades, ping floods, unfinished fragmented messages); see
``abuse_transport.py``.

Pure CPU, no sockets:

* wildcard match cost per publication with 1, 100 and 10,000 pattern
  subscriptions: one regular expression per pattern tried in turn (what a
  broker does with ``compile_pattern``) against the
  :class:`rembus_proto.sublist.SubList` trie, without its cache (every
  topic new) and with it (a steady set of 100 topics);
* the same with 10,000 patterns of one shape each, from a literal first
  segment to none at all (``*aN*``: no literal prefix or suffix either, so the
  trie finds it through the substrings of the topic);
* the backtracking pattern ``**a**a**a**a**a**a**a**a**b`` against a topic
  of ``a`` only: the regex on short topics (its time grows as a power of the
  length, so keep them short), the trie and the linear matcher on long ones.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from rembus_proto.sublist import SubList
from rembus_proto.topics import compile_pattern
from rembus_proto.wildcard import Wildcard

ATTACK = "**a**a**a**a**a**a**a**a**b"
MAX_CALLS = 1_000_000  # per case, whatever --seconds says


def per_call(fn: Callable[[int], object], seconds: float) -> float:
    """Seconds per call of ``fn(i)``, over at least one call and at most ``seconds``."""
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while calls < MAX_CALLS:
        fn(calls)
        calls += 1
        if not calls % 64 or calls == 1:
            now = time.perf_counter()
            if now >= deadline:
                break
    return (time.perf_counter() - start) / calls


def pattern(i: int) -> str:
    shapes = (f"site{i}/*/temp", f"site{i}/**", f"site{i}/floor/*/room/*", f"*/{i}/status",
              f"site{i}/dev*")
    return shapes[i % len(shapes)]


def topic(i: int, patterns: int) -> str:
    return f"site{(i * 7) % patterns}/floor/{i % 13}/room/{i}"


def match_cost(patterns: int, seconds: float) -> tuple[float, float, float, float]:
    """Microseconds per publication: regex loop, trie, trie with cache; matches per topic."""
    subs = [pattern(i) for i in range(patterns)]
    regexes: list[re.Pattern[str]] = [compile_pattern(p) for p in subs]
    trie: SubList[str] = SubList(cache_size=0)
    cached: SubList[str] = SubList()
    for p in subs:
        trie.insert(p, p)
        cached.insert(p, p)

    def regex_loop(i: int) -> object:
        t = topic(i, patterns)
        return [r for r in regexes if r.fullmatch(t)]

    steady = [topic(i, patterns) for i in range(100)]
    hits = sum(len(trie.match(t)) for t in steady) / len(steady)
    for t in steady:
        assert len(trie.match(t)) == len(regex_loop(steady.index(t)))
    return (per_call(regex_loop, seconds) * 1e6,
            per_call(lambda i: trie.match(topic(i, patterns)), seconds) * 1e6,
            per_call(lambda i: cached.match(steady[i % 100]), seconds) * 1e6,
            hits)


SHAPES = ["site{i}/*/temp", "*/{i}/status", "site{i}/**", "dev{i}*/x", "*_t{i}", "*a{i}*"]


def shape_cost(shape: str, patterns: int, seconds: float) -> tuple[float, float]:
    """Microseconds per publication with ``patterns`` patterns of one shape: regex loop, trie."""
    regexes = [compile_pattern(shape.format(i=i)) for i in range(patterns)]
    trie: SubList[int] = SubList(cache_size=0)
    for i in range(patterns):
        trie.insert(shape.format(i=i), i)

    def name(i: int) -> str:
        return f"site{i % patterns}/floor/{i}"

    return (per_call(lambda i: [r for r in regexes if r.fullmatch(name(i))], seconds) * 1e6,
            per_call(lambda i: trie.match(name(i)), seconds) * 1e6)


def attack_cost(kind: str, length: int, seconds: float) -> tuple[float, bool]:
    text = "a" * length
    if kind == "regex":
        regex = compile_pattern(ATTACK)
        return per_call(lambda _: regex.fullmatch(text), seconds), bool(regex.fullmatch(text))
    if kind == "Wildcard":
        matcher = Wildcard(ATTACK)
        return per_call(lambda _: matcher.fullmatch(text), seconds), matcher.fullmatch(text)
    trie: SubList[str] = SubList(cache_size=0)
    trie.insert(ATTACK, "attacker")
    return per_call(lambda _: trie.match(text), seconds), bool(trie.match(text))


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.3, help="time spent on one case")
    parser.add_argument("--patterns", type=numbers, default=[1, 100, 10_000],
                        help="pattern subscriptions held, comma-separated")
    parser.add_argument("--shape-patterns", type=int, default=10_000,
                        help="patterns per shape in the second table")
    parser.add_argument("--regex-lengths", type=numbers, default=[16, 20, 24, 28],
                        help="topic lengths for the backtracking regex (keep them short)")
    parser.add_argument("--lengths", type=numbers, default=[48, 56, 1024],
                        help="topic lengths for the linear matchers")
    parser.add_argument("--transport", action="store_true",
                        help="measure RPC latency under transport attacks instead")
    parser.add_argument("--hostile", type=numbers, default=[1, 10, 100],
                        help="hostile connections per transport attack, comma-separated")
    parser.add_argument("--calls", type=int, default=500, help="RPCs measured per case")
    opts = parser.parse_args()
    if opts.transport:
        import tempfile

        from abuse_transport import run

        with tempfile.TemporaryDirectory() as data_dir:
            run(opts.hostile, opts.calls, data_dir)
        return

    print("Wildcard match cost per publication (microseconds)")
    print(f"{'patterns':>9}{'regex loop':>13}{'SubList':>10}{'cached':>9}{'speed-up':>10}"
          f"{'matches':>9}")
    for count in opts.patterns:
        regex_us, trie_us, cached_us, hits = match_cost(count, opts.seconds)
        print(f"{count:>9,}{regex_us:>13.2f}{trie_us:>10.2f}{cached_us:>9.2f}"
              f"{regex_us / trie_us:>9.1f}x{hits:>9.2f}")

    print()
    print(f"{opts.shape_patterns:,} patterns of one shape, per publication (microseconds)")
    print(f"{'shape':<16}{'regex loop':>13}{'SubList':>10}{'speed-up':>10}")
    for shape in SHAPES:
        regex_us, trie_us = shape_cost(shape, opts.shape_patterns, opts.seconds)
        print(f"{shape:<16}{regex_us:>13.2f}{trie_us:>10.2f}{regex_us / trie_us:>9.1f}x")

    print()
    print(f"Pattern {ATTACK!r} against 'a' * length (no match)")
    print(f"{'matcher':<10}{'length':>8}{'time per publication':>22}")
    cases = ([("regex", n) for n in opts.regex_lengths]
             + [(kind, n) for kind in ("SubList", "Wildcard") for n in opts.lengths])
    for kind, length in cases:
        seconds, matched = attack_cost(kind, length, opts.seconds)
        assert not matched
        shown = f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} us"
        print(f"{kind:<10}{length:>8}{shown:>22}")


if __name__ == "__main__":
    main()
