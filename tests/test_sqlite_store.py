"""The storage port: one conformance suite for every Store, then SQLite specifics."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rembus.broker import sqlite_schema, sqlite_store
from rembus.broker.sqlite_store import SCHEMA_VERSION, SQLiteStore, StoreError
from rembus_proto.broker import RouterConfig
from rembus_proto.store import MemoryStore, Pruned, StoredMessage, TwinRecord, TwinUpdate
from router_harness import Net

INF = math.inf
T0 = 1_700_000_000_000_000_000


def msg(seq: int, topic: str = "t", recv_ns: int | None = None, *, flags: int = 0,
        msg_id: bytes | None = None, payload: bytes | None = None,
        publisher: str = "pub") -> StoredMessage:
    return StoredMessage(seq, T0 + seq if recv_ns is None else recv_ns, topic, flags, msg_id,
                         payload if payload is not None else b"\x81" + seq.to_bytes(4, "big"),
                         publisher)


def seqs(messages: list[StoredMessage]) -> list[int]:
    return [m.seq for m in messages]


def replay_all(store: Any, topics: Any = None, batch: int = 7) -> list[StoredMessage]:
    """Walk the archive in batches the way the router does."""
    out: list[StoredMessage] = []
    cursor = 0
    while True:
        got = store.replay(cursor, topics, batch)
        out.extend(got)
        if len(got) < batch:
            return out
        cursor = got[-1].seq


# -- conformance: every Store ----------------------------------------------

@pytest.fixture(params=["memory", "sqlite-memory", "sqlite-file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    path = ":memory:" if request.param == "sqlite-memory" else tmp_path / "store.db"
    with SQLiteStore(path) as opened:
        yield opened


def test_an_empty_store_loads_nothing(store: Any) -> None:
    assert store.load() == (0, [])
    assert store.replay(0, None, 10) == []
    assert store.prune(0, 10) == 0


def test_twins_round_trip_with_infinite_msg_from(store: Any) -> None:
    twin = TwinRecord("alice", {"a": INF, "b": 0.0, "c": 3_600e9, "x/*": INF},
                      ["add", "mul"], 41, [43, 47], {"a": 12, "b": 0})
    store.save_twin(twin)
    store.save_twin(TwinRecord("bob"))
    store.commit()
    last_seq, twins = store.load()
    assert last_seq == 0
    assert sorted(twins, key=lambda t: t.name) == [twin, TwinRecord("bob")]
    loaded = next(t for t in twins if t.name == "alice")
    assert loaded.subscriptions["a"] == INF
    assert isinstance(loaded.subscriptions["c"], float)


def test_a_saved_twin_is_a_snapshot(store: Any) -> None:
    twin = TwinRecord("alice", {"a": INF}, mark=1)
    store.save_twin(twin)
    twin.subscriptions["b"] = 0.0
    twin.done_above.append(9)
    twin.mark = 5
    _, [loaded] = store.load()
    assert loaded == TwinRecord("alice", {"a": INF}, mark=1)
    loaded.exposed.append("changed")
    assert store.load()[1] == [TwinRecord("alice", {"a": INF}, mark=1)]


def test_save_replaces_and_delete_forgets(store: Any) -> None:
    store.save_twin(TwinRecord("alice", mark=1))
    store.save_twin(TwinRecord("bob"))
    store.commit()
    store.save_twin(TwinRecord("alice", mark=2))
    store.delete_twin("bob")
    store.delete_twin("nobody")
    store.commit()
    assert store.load()[1] == [TwinRecord("alice", mark=2)]
    store.delete_twin("alice")
    store.save_twin(TwinRecord("alice", mark=3))  # the last staged write wins
    store.commit()
    assert store.load()[1] == [TwinRecord("alice", mark=3)]


def test_qos2_ids_are_kept_in_arrival_order_until_released(store: Any) -> None:
    assert store.load_qos2() == []
    for name, msg_id in [("bob", b"3"), ("alice", b"1"), ("bob", b"2"), ("alice", b"1")]:
        store.qos2_received(name, msg_id)
    store.commit()
    assert store.load_qos2() == [("bob", b"3"), ("alice", b"1"), ("bob", b"2")]
    store.qos2_released("bob", b"3")
    store.qos2_released("bob", b"9")  # unknown: nothing happens
    store.qos2_received("alice", b"4")
    store.qos2_released("alice", b"4")  # the last staged write wins
    store.commit()
    assert store.load_qos2() == [("alice", b"1"), ("bob", b"2")]
    store.save_twin(TwinRecord("bob"))
    store.commit()
    store.delete_twin("bob")  # a forgotten twin takes its ids along
    store.commit()
    assert store.load_qos2() == [("alice", b"1")]


def test_messages_round_trip_every_field(store: Any) -> None:
    messages = [
        StoredMessage(1, 0, "t", 0, None, b"", "p"),
        StoredMessage(2, 2**63 - 1, "é/ü 🚀", 0x30, b"\x00" * 8, b"\x00\xff" * 1000, "ñame"),
        StoredMessage(3, T0, "t", 0x10, bytes(range(16)), b"\x83\x01", ""),
    ]
    for m in messages:
        store.append(m)
    assert store.replay(0, None, 10) == messages
    store.commit()
    assert store.replay(0, None, 10) == messages
    assert store.load()[0] == 3


def test_replay_is_in_seq_order_after_the_cursor_and_limited(store: Any) -> None:
    for seq in (1, 2, 5, 9, 10):
        store.append(msg(seq, topic="a" if seq % 2 else "b"))
    store.commit()
    assert seqs(store.replay(0, None, 100)) == [1, 2, 5, 9, 10]
    assert seqs(store.replay(2, None, 100)) == [5, 9, 10]
    assert seqs(store.replay(3, None, 2)) == [5, 9]
    assert seqs(store.replay(10, None, 100)) == []
    assert seqs(store.replay(0, None, 1)) == [1]
    assert seqs(replay_all(store, batch=2)) == [1, 2, 5, 9, 10]


def test_replay_filters_exact_topics(store: Any) -> None:
    topics = ["a", "b", "c", "a/b", "a*"]
    for seq in range(1, 51):
        store.append(msg(seq, topics[seq % len(topics)]))
    expected = {t: [s for s in range(1, 51) if topics[s % len(topics)] == t] for t in topics}
    assert seqs(store.replay(0, {"a"}, 100)) == expected["a"]
    assert seqs(store.replay(0, ["a*"], 100)) == expected["a*"]  # no pattern matching
    both = sorted(expected["a"] + expected["c"])
    assert seqs(store.replay(0, {"a", "c"}, 100)) == both
    assert seqs(store.replay(0, ("c", "a", "c"), 100)) == both  # duplicates are harmless
    assert seqs(store.replay(both[3], {"a", "c"}, 4)) == both[4:8]
    assert seqs(replay_all(store, {"a", "c"}, batch=3)) == both
    assert store.replay(0, set(), 100) == []
    assert store.replay(0, {"zzz"}, 100) == []


@pytest.mark.parametrize("count", [2, sqlite_store._MERGE_MAX + 1, sqlite_store._IN_CHUNK * 2 + 7])
def test_replay_with_many_topics(store: Any, count: int) -> None:
    names = [f"topic/{i}" for i in range(count + 20)]
    total = 3 * len(names) + 300
    for seq in range(1, total + 1):
        store.append(msg(seq, names[(seq * 7) % len(names)]))
    store.commit()
    wanted = set(names[:count])
    expected = [s for s in range(1, total + 1) if names[(s * 7) % len(names)] in wanted]
    assert seqs(replay_all(store, wanted, batch=5)) == expected
    assert seqs(store.replay(expected[10], wanted, 3)) == expected[11:14]


def test_replay_sees_appends_before_the_commit(store: Any) -> None:
    store.append(msg(1, "a"))
    store.commit()
    store.append(msg(2, "b"))
    store.append(msg(3, "a"))
    assert seqs(store.replay(0, None, 10)) == [1, 2, 3]
    assert seqs(store.replay(1, {"a"}, 10)) == [3]
    store.append(msg(4, "a"))
    assert seqs(store.replay(0, {"a", "b"}, 10)) == [1, 2, 3, 4]
    assert store.load()[0] == 4
    store.commit()
    assert seqs(store.replay(0, None, 10)) == [1, 2, 3, 4]


def test_prune_by_age(store: Any) -> None:
    for seq in range(1, 11):
        store.append(msg(seq, "ab"[seq % 2], recv_ns=1000 + seq))
    store.commit()
    assert store.prune(1004, 100) == 3
    store.commit()
    assert seqs(store.replay(0, None, 100)) == list(range(4, 11))
    assert store.prune(1004, 100) == 0


def test_prune_keeps_the_newest_per_topic(store: Any) -> None:
    for seq in range(1, 21):
        store.append(msg(seq, "a" if seq <= 15 else "b"))
    assert store.prune(0, 3) == 12 + 2
    store.commit()
    assert seqs(store.replay(0, None, 100)) == [13, 14, 15, 18, 19, 20]
    assert seqs(store.replay(0, {"a"}, 100)) == [13, 14, 15]


def test_prune_counts_only_young_messages_against_the_cap(store: Any) -> None:
    # a newest-first walk: old messages are dropped and do not take a place
    store.append(msg(1, "a", recv_ns=10))
    store.append(msg(2, "a", recv_ns=50))
    store.append(msg(3, "a", recv_ns=5))  # the clock went back
    store.append(msg(4, "a", recv_ns=60))
    store.append(msg(5, "b", recv_ns=1))
    assert store.prune(20, 1) == 4
    assert seqs(store.replay(0, None, 10)) == [4]
    store.append(msg(6, "a", recv_ns=70))
    assert store.prune(0, 1) == 1
    assert seqs(store.replay(0, None, 10)) == [6]


def test_prune_to_nothing(store: Any) -> None:
    for seq in range(1, 6):
        store.append(msg(seq, f"t{seq % 2}"))
    assert store.prune(0, 0) == 5
    assert store.replay(0, None, 10) == []
    store.append(msg(6))
    assert seqs(store.replay(0, None, 10)) == [6]


def test_prune_reports_what_goes_per_topic_and_reason(store: Any) -> None:
    for seq in range(1, 9):
        store.append(msg(seq, f"t{seq % 2}", recv_ns=T0 + seq))
    report: list[Pruned] = []
    assert store.prune(T0 + 3, 2, report) == 4  # 1 and 2 by age, then 3 and 4 by count
    assert sorted(report) == [Pruned("t0", 1, "age"), Pruned("t0", 1, "count"),
                              Pruned("t1", 1, "age"), Pruned("t1", 1, "count")]
    report.clear()
    assert store.prune(0, 0, report) == 4
    assert sorted(report) == [Pruned("t0", 2, "count"), Pruned("t1", 2, "count")]


def test_pruning_gives_the_space_back(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "store.db") as store:
        for seq in range(1, 201):
            store.append(msg(seq, payload=bytes(10_000)))
        store.commit()
        full = store._db.execute("PRAGMA page_count").fetchone()[0]
        store.prune(0, 10)
        store.commit()
        pages, free = (store._db.execute(f"PRAGMA {name}").fetchone()[0]
                       for name in ("page_count", "freelist_count"))
    assert free == 0 and pages < full // 10


def test_last_seq_survives_pruning(store: Any) -> None:
    for seq in range(1, 8):
        store.append(msg(seq))
    store.commit()
    assert store.prune(T0 + 100, 10) == 7
    store.commit()
    assert store.load()[0] == 7
    store.append(msg(8))
    store.commit()
    assert store.prune(0, 0) == 1
    assert store.load()[0] == 8


def test_a_pruned_topic_can_come_back(store: Any) -> None:
    store.append(msg(1, "a"))
    store.append(msg(2, "a"))
    assert store.prune(T0 + 10, 5) == 2
    for seq in range(3, 8):
        store.append(msg(seq, "a"))
    assert store.prune(0, 2) == 3
    assert seqs(store.replay(0, {"a"}, 10)) == [6, 7]


# -- differential: SQLiteStore behaves like MemoryStore ---------------------

TOPICS = ["a", "b", "c", "d/e"]
operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from(TOPICS), st.integers(-3, 10),
              st.integers(0, 12)),
    st.tuples(st.just("replay"), st.integers(-1, 40), st.none() | st.sets(st.sampled_from(TOPICS)),
              st.integers(1, 6), st.none() | st.integers(0, 60)),
    st.tuples(st.just("prune"), st.integers(-1, 60), st.integers(0, 5)),
    st.tuples(st.just("prune_bytes"), st.integers(-1, 60), st.integers(1, 5),
              st.none() | st.integers(0, 60), st.none() | st.integers(0, 120)),
    st.tuples(st.just("twin"), st.sampled_from(["x", "y"]),
              st.dictionaries(st.sampled_from(TOPICS), st.sampled_from([0.0, INF, 5e9])),
              st.integers(0, 40), st.booleans()),
    st.tuples(st.just("update"), st.sampled_from(["x", "y"]),
              st.dictionaries(st.sampled_from(TOPICS), st.none() | st.sampled_from([0.0, INF])),
              st.dictionaries(st.sampled_from(TOPICS), st.booleans()), st.integers(0, 40)),
    st.tuples(st.just("commit")),
    st.tuples(st.just("reopen")),
), max_size=60)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_sqlite_store_matches_memory_store(ops: list[tuple[Any, ...]], tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    path.unlink(missing_ok=True)
    reference = MemoryStore()
    store = SQLiteStore(path)
    seq = 0
    clock = 0
    try:
        for op in ops:
            kind = op[0]
            if kind == "append":
                seq += 1
                clock += op[2]  # the wall clock may go backwards
                m = msg(seq, op[1], recv_ns=clock,
                        payload=b"\x81" + seq.to_bytes(4, "big") + bytes(op[3]))
                reference.append(m)
                store.append(m)
            elif kind == "replay":
                assert store.replay(*op[1:]) == reference.replay(*op[1:])
            elif kind == "prune":
                assert store.prune(*op[1:]) == reference.prune(*op[1:])
            elif kind == "prune_bytes":
                _, before, count, topic_bytes, total_bytes = op
                got: list[Pruned] = []
                expected: list[Pruned] = []
                assert store.prune(before, count, got, max_topic_bytes=topic_bytes,
                                   max_total_bytes=total_bytes) == reference.prune(
                    before, count, expected, max_topic_bytes=topic_bytes,
                    max_total_bytes=total_bytes)
                assert sorted(got) == sorted(expected)
            elif kind == "twin":
                _, name, subs, mark, delete = op
                for target in (reference, store):
                    if delete:
                        target.delete_twin(name)
                    else:
                        target.save_twin(TwinRecord(name, subs, mark=mark, since={"a": mark}))
            elif kind == "update":
                _, name, subs, exposed, mark = op
                for target in (reference, store):
                    target.update_twin(TwinUpdate(
                        name, mark, [mark + 2], dict(subs),
                        {t: None if v is None else mark for t, v in subs.items()},
                        dict(exposed)))
            elif kind == "commit":
                reference.commit()
                store.commit()
            else:
                reference.commit()
                store.close()
                store = SQLiteStore(path)
            last_seq, twins = store.load()
            ref_seq, ref_twins = reference.load()
            assert last_seq == ref_seq
            assert sorted(twins, key=lambda t: t.name) == sorted(ref_twins, key=lambda t: t.name)
        assert store.replay(-1, None, 10**6) == reference.replay(-1, None, 10**6)
    finally:
        store.close()


# -- SQLite specifics --------------------------------------------------------

def test_creates_the_directory_and_a_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "broker.db"
    with SQLiteStore(path):
        pass
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA application_id").fetchone() == (sqlite_schema.APPLICATION_ID,)
    finally:
        db.close()


@pytest.mark.parametrize(("sql", "args", "access"), [
    *((sql.format(columns), args, access)
      for columns in (sqlite_schema.COLUMNS, sqlite_schema.SIZES)
      for sql, args, access in (
          (sqlite_schema.REPLAY_ALL, (0, 10), "INTEGER PRIMARY KEY (rowid>?)"),
          (sqlite_schema.REPLAY_TOPIC, ("t1", 0, 10),
           "INDEX messages_topic_seq (topic=? AND seq>?)"),
          (sqlite_schema.replay_in(columns, 3), (0, "a", "b", "c", 10),
           "INTEGER PRIMARY KEY (rowid>?)"))),
    (sqlite_schema.COUNT_OLD, (5,), "INDEX messages_recv_ns (recv_ns<?)"),
    (sqlite_schema.DELETE_OLD, (5,), "INDEX messages_recv_ns (recv_ns<?)"),
    (sqlite_schema.NTH_OLDEST, ("t1", 3), "INDEX messages_topic_seq (topic=?)"),
    (sqlite_schema.DELETE_OLDEST, ("t1", 30), "INDEX messages_topic_seq (topic=? AND seq<?)"),
    (sqlite_schema.BYTES_OLDEST, ("t1", 30), "INDEX messages_topic_seq (topic=? AND seq<?)"),
    (sqlite_schema.OLDEST_OF_TOPIC, ("t1",), "INDEX messages_topic_seq (topic=?)"),
    (sqlite_schema.DELETE_UP_TO, (30,), "INTEGER PRIMARY KEY (rowid<?)"),
])
def test_queries_search_an_index(sql: str, args: tuple[Any, ...], access: str) -> None:
    with SQLiteStore(":memory:") as store:
        for seq in range(1, 1001):
            store.append(msg(seq, f"t{seq % 20}"))
        store.commit()
        plan = [row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, args)]
    assert plan[0].startswith("SEARCH messages USING") and plan[0].endswith(access), plan
    assert sql == sqlite_schema.COUNT_OLD or len(plan) == 1, plan  # no sort of the matches


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    twin = TwinRecord("alice", {"a": INF, "b": 0.0}, ["f"], 2, [4], {"a": 1})
    with SQLiteStore(path) as store:
        for seq in range(1, 6):
            store.append(msg(seq, "ab"[seq % 2], msg_id=seq.to_bytes(8, "little")))
        store.save_twin(twin)
        store.save_twin(TwinRecord("bob"))
        store.qos2_received("alice", b"qos2-id1")
        store.commit()
        store.delete_twin("bob")
        expected = store.replay(0, None, 10)
    with SQLiteStore(str(path)) as store:
        assert store.load() == (5, [twin])
        assert store.load_qos2() == [("alice", b"qos2-id1")]
        assert store.replay(0, None, 10) == expected
        with pytest.raises(ValueError, match="seq 5"):
            store.append(msg(5))
        assert store.prune(0, 2) == 1  # per-topic counts were rebuilt from the file
        assert seqs(store.replay(0, None, 10)) == [2, 3, 4, 5]
        assert store.prune(T0 + 100, 2) == 4
    with SQLiteStore(path) as store:
        assert store.load()[0] == 5
        store.append(msg(6))


def test_close_commits_and_an_exception_drops_staged_writes(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    store = SQLiteStore(path)
    store.append(msg(1))
    store.close()
    store.close()
    with pytest.raises(RuntimeError), SQLiteStore(path) as store:
        store.append(msg(2))
        store.save_twin(TwinRecord("alice"))
        store.replay(0, None, 10)  # written into the open transaction
        raise RuntimeError("boom")
    with SQLiteStore(path) as store:
        assert store.load() == (1, [])


def test_a_closed_store_refuses_work() -> None:
    store = SQLiteStore(":memory:")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(msg(1))
    with pytest.raises(StoreError, match="closed"):
        store.replay(0, None, 1)
    with pytest.raises(StoreError, match="closed"):
        store.save_twin(TwinRecord("x"))
    store.commit()  # nothing staged: nothing to refuse
    assert "closed" in repr(store)


def test_seqs_must_increase() -> None:
    with SQLiteStore(":memory:") as store:
        store.append(msg(3))
        with pytest.raises(ValueError, match="seq 3 is not above"):
            store.append(msg(3))
        with pytest.raises(ValueError):
            store.append(msg(2))
        store.append(msg(4))
        assert seqs(store.replay(0, None, 10)) == [3, 4]


def test_synchronous_modes() -> None:
    with SQLiteStore(":memory:", synchronous="full") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(":memory:", synchronous="NORMAL; DROP TABLE twins")


def test_a_commit_with_nothing_staged_runs_no_sql() -> None:
    with SQLiteStore(":memory:") as store:
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        for _ in range(1000):
            store.commit()
        assert statements == []

        store.append(msg(1))
        store.append(msg(2))
        store.save_twin(TwinRecord("alice", mark=1))
        store.save_twin(TwinRecord("alice", mark=2))
        assert statements == []  # staged in memory only
        store.commit()
        inserts = [s for s in statements if s.startswith("INSERT INTO messages")]
        twin_writes = [s for s in statements if "twins" in s]
        assert len(inserts) == 2  # one executemany
        assert len(twin_writes) == 1  # the last save of a turn only
        assert statements[-1] == "COMMIT"

        statements.clear()
        store.commit()
        store.replay(0, None, 10)  # a read stages nothing
        store.commit()
        assert all(s.startswith("SELECT") for s in statements)


def test_many_uncommitted_appends_are_written_early(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "broker.db") as store:
        for seq in range(1, sqlite_store._MAX_QUEUED * 2 + 2):
            store.append(msg(seq))
        assert len(store._rows) < sqlite_store._MAX_QUEUED
        assert len(store.replay(0, None, 10**6)) == sqlite_store._MAX_QUEUED * 2 + 1


def test_a_failed_commit_goes_back_to_the_last_commit(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    with SQLiteStore(path) as store:
        store._db.execute("PRAGMA busy_timeout = 0")
        store.append(msg(1))
        store.commit()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            store.append(msg(2))
            store.save_twin(TwinRecord("alice"))
            with pytest.raises(StoreError, match=r"locked.*another process"):
                store.commit()
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert store.load() == (1, [])
        assert seqs(store.replay(0, None, 10)) == [1]
        store.append(msg(3))
        store.commit()
    with SQLiteStore(path) as store:
        assert seqs(store.replay(0, None, 10)) == [1, 3]


CHILD = textwrap.dedent("""
    import os, signal, sys
    from rembus.broker.sqlite_store import SQLiteStore
    from rembus_proto.store import StoredMessage, TwinRecord

    store = SQLiteStore(sys.argv[1])
    for seq in range(1, 1001):
        store.append(StoredMessage(seq, seq, "t", 0, None, b"committed", "p"))
        if seq % 100 == 0:
            store.commit()
    store.save_twin(TwinRecord("alice", {"t": float("inf")}, mark=7))
    store.commit()
    for seq in range(1001, 1101):
        store.append(StoredMessage(seq, seq, "t", 0, None, b"lost", "p"))
    store.save_twin(TwinRecord("alice", mark=8))
    store.delete_twin("bob")
    assert len(store.replay(1000, None, 1000)) == 100  # in the file, not committed
    print("killing", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_committed_data_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    # run() reaps the child in every case, also on timeout
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "killing\n"
    assert os.path.exists(f"{path}-wal")  # recovery has to read the log
    with SQLiteStore(path) as store:
        last_seq, twins = store.load()
        assert last_seq == 1000
        assert twins == [TwinRecord("alice", {"t": INF}, mark=7)]
        archived = replay_all(store, batch=333)
        assert seqs(archived) == list(range(1, 1001))
        assert {m.payload for m in archived} == {b"committed"}
        store.append(msg(1001))


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    path.write_bytes(b"this is not a database, just text\n" * 200)
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    text = str(info.value)
    assert str(path) in text
    assert "not a database" in text
    assert "backup" in text
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_damaged_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    with SQLiteStore(path) as store:
        for seq in range(1, 2001):
            store.append(msg(seq, f"t{seq % 50}", payload=b"x" * 200))
    size = path.stat().st_size
    assert size > 8192
    with path.open("r+b") as f:
        f.seek(4096)  # every page but the first (the schema)
        f.write(b"\xa5" * (size - 4096))
    with pytest.raises(StoreError, match=r"malformed.*backup"):
        SQLiteStore(path)


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="another application"):
        SQLiteStore(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    with SQLiteStore(path) as store:
        store._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="upgrade Rembus"):
        SQLiteStore(path)


def test_retroactive_delivery_across_a_broker_restart(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    store = SQLiteStore(path)
    net = Net(RouterConfig(replay_batch=3), store=store)  # type: ignore[arg-type]
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    for i in range(10):
        pub.publish("t", i)
    net.router.shutdown(net.now)
    store.close()

    store = SQLiteStore(path)
    net = Net(RouterConfig(replay_batch=3), store=store)  # type: ignore[arg-type]
    net.connect().publish("t", 10)
    sub = net.named("sub")
    sub.reactive(True)
    assert sub.pubs() == [("t", (i,)) for i in range(11)]
    net.router.shutdown(net.now)
    store.close()
    with SQLiteStore(path) as store:
        _, [twin] = store.load()
        assert twin.name == "sub"
        assert twin.mark == 11


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"unable to open.*writable"):
        SQLiteStore(tmp_path)


@pytest.mark.parametrize("make", [MemoryStore, lambda: SQLiteStore(":memory:")])
def test_byte_budgets_drop_the_oldest_first(make: Any) -> None:
    """Per topic, then in all: the oldest go until the payloads fit the budget."""
    store = make()
    sizes = {1: ("a", 40), 2: ("b", 10), 3: ("a", 30), 4: ("b", 40), 5: ("a", 20)}
    for seq, (topic, size) in sizes.items():
        store.append(msg(seq, topic, payload=bytes(size)))
    report: list[Pruned] = []
    assert store.prune(0, 100, report, max_topic_bytes=55) == 1  # a: 90 -> 50
    assert report == [Pruned("a", 1, "bytes")]
    assert seqs(store.replay(0, None, 10)) == [2, 3, 4, 5]
    report.clear()
    assert store.prune(0, 100, report, max_topic_bytes=55, max_total_bytes=75) == 2
    assert sorted(report) == [Pruned("a", 1, "total"), Pruned("b", 1, "total")]
    assert seqs(store.replay(0, None, 10)) == [4, 5]
    assert store.prune(0, 100, max_total_bytes=70) == 0


@pytest.mark.parametrize("make", [MemoryStore, lambda: SQLiteStore(":memory:")])
def test_a_replay_batch_stays_within_its_byte_budget(make: Any) -> None:
    store = make()
    for seq in range(1, 7):
        store.append(msg(seq, "big" if seq == 4 else "t", payload=bytes(100 if seq == 4 else 10)))
    assert seqs(store.replay(0, None, 10, 25)) == [1, 2]
    assert seqs(store.replay(2, None, 10, 25)) == [3]  # the next one would not fit
    assert seqs(store.replay(3, None, 10, 25)) == [4]  # larger than the budget: alone
    assert seqs(store.replay(4, {"t"}, 10, 25)) == [5, 6]
    assert seqs(store.replay(0, {"t", "big"}, 10, 0)) == [1]


_VERSION_2 = (  # the schema the store wrote before twins were split into rows
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE messages (seq INTEGER PRIMARY KEY, recv_ns INTEGER NOT NULL,"
    " topic TEXT NOT NULL, flags INTEGER NOT NULL, msg_id BLOB,"
    " publisher TEXT NOT NULL, payload BLOB NOT NULL)",
    "CREATE INDEX messages_topic_seq ON messages (topic, seq)",
    "CREATE INDEX messages_recv_ns ON messages (recv_ns)",
    "CREATE TABLE twins (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('last_seq', 7)",
    "CREATE TABLE qos2 (publisher TEXT NOT NULL, msg_id BLOB NOT NULL,"
    " UNIQUE (publisher, msg_id))",
)


def test_a_store_of_schema_version_2_keeps_its_twins(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    for statement in _VERSION_2:
        db.execute(statement)
    db.execute("INSERT INTO twins VALUES ('alice', ?)", (
        '{"subscriptions":{"news":"inf","b/*":0.0,"c":5000000000.0},'
        '"exposed":["f","e","g"],"mark":5,"done_above":[7,9],"since":{"news":3,"c":4}}',))
    db.execute("INSERT INTO twins VALUES ('bob', ?)", (
        '{"subscriptions":{},"exposed":[],"mark":0,"done_above":[],"since":{}}',))
    db.execute(f"PRAGMA application_id = {sqlite_schema.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    alice = TwinRecord("alice", {"news": INF, "b/*": 0.0, "c": 5e9}, ["f", "e", "g"], 5,
                       [7, 9], {"news": 3, "c": 4})
    with SQLiteStore(path) as store:
        last_seq, twins = store.load()
        assert last_seq == 7
        assert twins == [alice, TwinRecord("bob")]
        assert list(twins[0].exposed) == ["f", "e", "g"]
        store.update_twin(TwinUpdate("alice", 6, [], {"news": None, "d": INF}, {"news": None},
                                     {"e": False, "f": True}))
    with SQLiteStore(path) as store:
        alice = TwinRecord("alice", {"b/*": 0.0, "c": 5e9, "d": INF}, ["g", "f"], 6, [],
                           {"c": 4})
        assert store.load()[1] == [alice, TwinRecord("bob")]
        assert store.load()[1][0].exposed == ["g", "f"]


def test_one_more_subscription_writes_rows_for_it_alone() -> None:
    """Whatever a twin holds, a change writes the rows of that change."""
    costs = []
    with SQLiteStore(":memory:") as store:
        for count in (10, 5_000):
            name = f"c{count}"
            store.save_twin(TwinRecord(name, {f"t/{n}": 0.0 for n in range(count)},
                                       [f"e/{n}" for n in range(count)]))
            store.commit()
            before = store.rows_written
            store.update_twin(TwinUpdate(name, 1, [], {"more": INF}, {"more": 9},
                                         {"e/0": False}))
            store.commit()
            costs.append(store.rows_written - before)
    assert costs[0] == costs[1] == 4  # progress, subscription, since, exposure
