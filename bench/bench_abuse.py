"""Cost of hostile or heavy subscriptions to a broker (prints figures, asserts nothing).

Run: python bench/bench_abuse.py [--seconds 0.3] [--patterns 1,100,10000]
                                 [--regex-lengths 16,20,24,28] [--lengths 48,56,1024]
                                 [--hostile 1,10,100] [--probes 300] [--no-broker]
                                 [--transport [--calls 500]]

``--transport`` measures instead the broker's RPC latency for a well-behaved
component while hostile connections attack a broker process on 127.0.0.1
(idle upgrades, ping floods, unfinished fragmented messages); see
``abuse_transport.py``.

Pure CPU first, no sockets:

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

Then against a real broker (``python -m rembus broker`` on 127.0.0.1, a
fresh data dir): the RPC latency p50/p99 of a well-behaved client calling
``version`` while 1, 10 and 100 hostile connections run one router-level
attack each, bounded (every hostile connection sends a fixed number of
messages):

* ``wildcard``: subscribe to the backtracking pattern, publish on 48-char topics;
* ``setup``: one ``setup`` listing 20,000 methods each;
* ``names``: identify under a throwaway name, leave, again;
* ``calls``: RPCs to an exposer that never answers (fills the pending calls).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import rembus_proto as rp
from rembus.client.wire import Wire
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


_ids = itertools.count(1)


def new_id() -> bytes:
    return next(_ids).to_bytes(8, "little")


async def answer(w: Wire, msg_id: bytes) -> rp.Response:
    """Read until the response to ``msg_id``."""
    while True:
        message = rp.decode(await w.recv())
        if isinstance(message, rp.Response) and message.id == msg_id:
            return message


async def request(w: Wire, message: rp.Admin | rp.Identity | rp.Rpc) -> rp.Response:
    w.send(message.encode())
    return await answer(w, message.id)


ROUNDS = 50  # messages (or rounds) per hostile connection: every attack is bounded


async def wildcard(port: int, n: int) -> None:
    w = await Wire.open("127.0.0.1", port)
    await request(w, rp.Admin(new_id(), ATTACK, {"cmd": "subscribe"}))
    await request(w, rp.Admin(new_id(), "__config__", {"cmd": "reactive", "status": True}))
    w.send(*(rp.Pub("a" * 47 + str(i % 10), rp.Payload.of([i])).encode()
             for i in range(ROUNDS)))
    await request(w, rp.Rpc(new_id(), "version", rp.Payload.of([])))
    await w.close()


async def setup(port: int, n: int) -> None:
    w = await Wire.open("127.0.0.1", port)
    await request(w, rp.Identity(new_id(), f"setup{n}"))
    methods = [f"m{n}_{i}" for i in range(20_000)]
    await request(w, rp.Admin(new_id(), "__config__", {"cmd": "setup", "exposers": methods}))
    await w.close()


async def names(port: int, n: int) -> None:
    for i in range(ROUNDS // 5):
        w = await Wire.open("127.0.0.1", port)
        await request(w, rp.Identity(new_id(), f"throwaway{n}_{i}"))
        await w.close()


async def calls(port: int, n: int) -> None:
    sink = await Wire.open("127.0.0.1", port)
    await request(sink, rp.Admin(new_id(), f"sink{n}", {"cmd": "expose"}))
    w = await Wire.open("127.0.0.1", port)
    w.send(*(rp.Rpc(new_id(), f"sink{n}", rp.Payload.of([i])).encode() for i in range(ROUNDS)))
    await request(w, rp.Rpc(new_id(), "version", rp.Payload.of([])))
    await w.close()
    await sink.close()


ATTACKS: dict[str, Callable[[int, int], Awaitable[None]]] = {
    "wildcard": wildcard, "setup": setup, "names": names, "calls": calls}


async def latency_under(port: int, attack: str, hostile: int, probes: int) -> tuple[float, float]:
    """RPC latency p50/p99 (ms) of a well-behaved client while ``hostile`` attackers run."""
    probe = await Wire.open("127.0.0.1", port)
    running = [asyncio.ensure_future(ATTACKS[attack](port, n)) for n in range(hostile)]
    samples: list[float] = []
    for _ in range(probes):
        start = time.perf_counter()
        await request(probe, rp.Rpc(new_id(), "version", rp.Payload.of([])))
        samples.append((time.perf_counter() - start) * 1e3)
    await asyncio.gather(*running)
    await probe.close()
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


async def broker_table(hostile: list[int], probes: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_broker import server

    with tempfile.TemporaryDirectory() as data:
        cmd = [sys.executable, "-m", "rembus", "broker", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", data, "--log-level", "ERROR"]
        async with server(cmd, r"ws://127\.0\.0\.1:(\d+)") as (port, _pid):
            print(f"{'attack':<10}{'hostile':>8}{'p50 ms':>10}{'p99 ms':>10}")
            for attack in ATTACKS:
                for count in hostile:
                    p50, p99 = await asyncio.wait_for(
                        latency_under(port, attack, count, probes), 600)
                    print(f"{attack:<10}{count:>8}{p50:>10.2f}{p99:>10.2f}")


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
                        help="hostile connections per attack against the broker")
    parser.add_argument("--calls", type=int, default=500,
                        help="RPCs measured per transport attack case")
    parser.add_argument("--probes", type=int, default=300,
                        help="RPCs of the well-behaved client per case")
    parser.add_argument("--no-broker", action="store_true",
                        help="only the pure CPU tables")
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

    if not opts.no_broker:
        print()
        print("RPC latency of a well-behaved client while hostile connections attack a broker")
        asyncio.run(broker_table(opts.hostile, opts.probes))


if __name__ == "__main__":
    main()
