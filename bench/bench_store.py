"""SQLite message store throughput (prints figures, asserts nothing).

Run: python bench/bench_store.py [--count 50000] [--dir DIR] [--synchronous NORMAL]
     [--rounds 3]

Appends go through ``SQLiteStore.append`` with a ``commit`` every 1 and every
100 messages (a broker commits once per event-loop turn, so under load a
commit covers many publishes). Replay reads the whole archive in batches of
500 the way the router does: all topics, one topic of 16, and 4 topics of 16.
The database lives in a fresh temporary directory (or under ``--dir``: use a
directory on the disk the broker will use). Last, a router replays a stored
topic to a returning named subscriber at QoS0, QoS1 and QoS2 (the subscriber
ACKs every QoS1/2 delivery as it arrives, the window of messages in flight
paces the replay): deliveries per second, the broker's own CPU time per
delivery (the subscriber's decoding and ACKs, simulated in the same process,
are not counted) with its ratio to QoS0, and store queries. The three QoS run
interleaved, ``--rounds`` times; the best round of each counts. Also: the time and
the rows written to add one subscription to a named component that has 10, and
100,000 subscriptions (the cost should not depend on them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import rembus_proto as rp
from rembus.broker.sqlite_store import SQLiteStore
from rembus_proto.broker import Connection, Router, answer_requests
from rembus_proto.constants import LAST_RECEIVED
from rembus_proto.store import StoredMessage

TOPICS = [f"sensors/{i}" for i in range(16)]
ACK2_HEAD = b"\x82\x06"  # [6, id]
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


class _Counted(SQLiteStore):
    queries = 0

    def replay(self, after_seq: int, topics: Collection[str] | None,
               limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        self.queries += 1
        return super().replay(after_seq, topics, limit, max_bytes)


def _turn(router: Router, store: SQLiteStore, conn: Connection) -> list[bytes]:
    """One driver turn; returns what ``conn`` is sent."""
    answer_requests(router, store, router.guard.security, 0.0)
    router.flush()
    store.commit()
    out = [frame for c, frames in router.data_to_send() if c is conn for frame in frames]
    if conn.waiting_drain:
        router.drained(conn, 0.0)
    return out


def _login(router: Router, store: SQLiteStore, name: str) -> Connection:
    conn = router.connect(0.0)
    router.receive_many(conn, [rp.Identity(b"login-id", name).encode(),
                               rp.Admin(b"sub---id", "replayed",
                                        {"cmd": "subscribe", "msg_from": LAST_RECEIVED})
                               .encode()], 0.0)
    _turn(router, store, conn)
    return conn


def router_replay(path: Path, qos: int, count: int) -> tuple[float, float, int]:
    """Deliveries per second of a router replay of ``count`` messages, the broker's CPU
    seconds per delivery, and store queries."""
    flags = (0, rp.QOS1, rp.QOS2)[qos]
    with _Counted(path) as store:
        router = Router(store)
        router.disconnect(_login(router, store, "subscriber"), 0.0)
        pub = router.connect(0.0)
        for i in range(count):
            data = rp.Payload.of([i])
            pub_frame = (rp.Pub("replayed", data, i.to_bytes(8, "little"), flags) if qos
                         else rp.Pub("replayed", data))
            router.receive(pub, pub_frame.encode(), 0.0)
            if i % 100 == 0:
                _turn(router, store, pub)
        router.disconnect(pub, 0.0)
        _turn(router, store, pub)
        store.queries = 0
        start = time.perf_counter()
        cpu_start = time.process_time()
        subscriber_cpu = 0.0
        sub = _login(router, store, "subscriber")
        router.receive(sub, rp.Admin(b"react-id", "__config__",
                                     {"cmd": "reactive", "status": True}).encode(), 0.0)
        delivered = 0
        for _ in range(10 * count):  # bounded: far more turns than a replay needs
            acks = []
            frames = _turn(router, store, sub)
            subscriber_start = time.process_time()
            for frame in frames:
                if frame[:2] == ACK2_HEAD:
                    continue  # the broker's work is done; a subscriber only drops the id
                message = rp.decode(frame)
                if isinstance(message, rp.Pub):
                    delivered += 1
                    if message.id is not None:
                        acks.append(rp.Ack(message.id).encode())
            subscriber_cpu += time.process_time() - subscriber_start
            if acks:
                router.receive_many(sub, acks, 0.0)
            elif delivered >= count:
                break
        elapsed = time.perf_counter() - start
        broker_cpu = time.process_time() - cpu_start - subscriber_cpu
        assert delivered == count, (delivered, count)
        return delivered / elapsed, broker_cpu / count, store.queries


def twin_change(path: Path, subscriptions: int, changes: int = 20) -> tuple[float, int]:
    """Milliseconds to stage and commit one more subscription of a named component that
    has ``subscriptions`` already, and the rows written per change."""
    with SQLiteStore(path) as store:
        router = Router(store)
        conn = router.connect(0.0)
        router.receive(conn, rp.Identity(b"login-id", "many").encode(), 0.0)
        for start in range(0, subscriptions, 10_000):
            router.receive_many(conn, [
                rp.Admin(n.to_bytes(8, "little"), f"topic/{n}", {"cmd": "subscribe"}).encode()
                for n in range(start, min(start + 10_000, subscriptions))], 0.0)
            _turn(router, store, conn)
        before = store.rows_written
        start_time = time.perf_counter()
        for n in range(changes):
            router.receive(conn, rp.Admin(b"more--id", f"more/{n}", {"cmd": "subscribe"})
                           .encode(), 0.0)
            _turn(router, store, conn)
        elapsed = (time.perf_counter() - start_time) / changes
        return elapsed * 1e3, (store.rows_written - before) // changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="messages per append case")
    parser.add_argument("--dir", help="where to create the databases (default: a temp dir)")
    parser.add_argument("--synchronous", default="NORMAL", help="PRAGMA synchronous")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved runs of the router replay; the best counts")
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
        for subscriptions in (10, 100_000):
            ms, rows = twin_change(root / f"twin-{subscriptions}.db", subscriptions)
            print(f"one more subscription of a component with {subscriptions:>7,}: "
                  f"{ms:8.2f} ms, {rows} rows written")
        replayed = max(1, args.count // 5)
        best: dict[int, tuple[float, float, int]] = {}
        for turn in range(args.rounds):
            for qos in (0, 1, 2):
                rate, cpu, queries = router_replay(root / f"router-{turn}-qos{qos}.db", qos,
                                                   replayed)
                old = best.get(qos)
                best[qos] = (max(rate, old[0]), min(cpu, old[1]), queries) if old else (
                    rate, cpu, queries)
        for qos, (rate, cpu, queries) in best.items():
            print(f"router replay QoS{qos}: {rate:>10,.0f} deliveries/s, broker "
                  f"{cpu * 1e6:5.1f} µs/delivery ({cpu / best[0][1]:.2f}x QoS0)  "
                  f"({replayed:,} messages, {queries:,} store queries)")


if __name__ == "__main__":
    main()
