"""SQLite message store throughput (prints figures, asserts nothing).

Run: python bench/bench_store.py [--count 50000] [--dir DIR] [--synchronous NORMAL]

Appends go through ``SQLiteStore.append`` with a ``commit`` every 1 and every
100 messages (a broker commits once per event-loop turn, so under load a
commit covers many publishes). Replay reads the whole archive in batches of
500 the way the router does: all topics, one topic of 16, and 4 topics of 16.
The database lives in a fresh temporary directory (or under ``--dir``: use a
directory on the disk the broker will use).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from rembus.broker.sqlite_store import SQLiteStore
from rembus_proto.store import StoredMessage

TOPICS = [f"sensors/{i}" for i in range(16)]
PAYLOAD = b"\x83\x07\xfb@5\x99\x99\x99\x99\x99\x9ahsensor_1" + bytes(40)


def messages(count: int) -> list[StoredMessage]:
    now = time.time_ns()
    return [StoredMessage(seq, now + seq, TOPICS[seq % len(TOPICS)], 0x10,
                          seq.to_bytes(8, "little"), PAYLOAD, "publisher")
            for seq in range(1, count + 1)]


def appends(path: Path, batch: list[StoredMessage], every: int, synchronous: str) -> float:
    with SQLiteStore(path, synchronous=synchronous) as store:
        start = time.perf_counter()
        for i, message in enumerate(batch, 1):
            store.append(message)
            if i % every == 0:
                store.commit()
        store.commit()
        return len(batch) / (time.perf_counter() - start)


def replay(path: Path, topics: Collection[str] | None) -> tuple[int, float]:
    with SQLiteStore(path) as store:
        rows = 0
        cursor = 0
        start = time.perf_counter()
        while True:
            got = store.replay(cursor, topics, 500)
            rows += len(got)
            if len(got) < 500:
                break
            cursor = got[-1].seq
        return rows, rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="messages per append case")
    parser.add_argument("--dir", help="where to create the databases (default: a temp dir)")
    parser.add_argument("--synchronous", default="NORMAL", help="PRAGMA synchronous")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        batch = messages(args.count)
        for every in (1, 100):
            # every commit is a write to the log: the per-commit case gets fewer messages
            case = batch[: max(1, args.count // 10)] if every == 1 else batch
            path = root / f"append-{every}.db"
            rate = appends(path, case, every, args.synchronous)
            print(f"append, commit every {every:>3}: {rate:>10,.0f} messages/s"
                  f"  ({len(case):,} messages, synchronous={args.synchronous.upper()})")
        path = root / "append-100.db"
        size = sum(f.stat().st_size for f in root.glob("append-100.db*"))
        print(f"archive: {args.count:,} messages, {size / 2**20:.1f} MiB")
        for label, topics in (("all topics", None), ("1 topic", [TOPICS[3]]),
                              ("4 topics", TOPICS[:4])):
            rows, rate = replay(path, topics)
            print(f"replay {label:<10}: {rate:>10,.0f} rows/s  ({rows:,} rows, batches of 500)")
        with SQLiteStore(path) as store:
            start = time.perf_counter()
            dropped = store.prune(batch[len(batch) // 10].recv_ns, args.count)
            store.commit()
            elapsed = time.perf_counter() - start
        print(f"prune 10% by age: {elapsed * 1e3:.1f} ms ({dropped:,} messages)")


if __name__ == "__main__":
    main()
