"""The broker's persistent :class:`~rembus_proto.store.Store` on SQLite.

:class:`SQLiteStore` keeps the message archive and the twins in one SQLite
database in WAL mode. It has the semantics of
:class:`~rembus_proto.store.MemoryStore`; what it adds is durability:

* Writes are staged and become durable together at :meth:`SQLiteStore.commit`,
  which the broker calls once per event-loop turn. A commit with nothing
  staged executes no SQL at all.
* :meth:`SQLiteStore.append` only queues a row in memory; queued rows are
  written with one ``executemany`` at the next commit, or earlier when a
  query (``replay``, ``prune``) must see them.
* A committed transaction survives a crash of the process. With
  ``synchronous="NORMAL"`` (the default) the last commits may be lost on a
  power failure; ``"FULL"`` makes every commit survive that too, at the price
  of an fsync per commit.

The sequence number of the last appended message is remembered even after
every message was pruned, so that sequence numbers are never reused.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import sqlite3
from collections.abc import Collection
from itertools import islice, starmap
from pathlib import Path
from types import TracebackType
from typing import Any

from rembus.broker import sqlite_schema as schema
from rembus.broker.sqlite_schema import SCHEMA_VERSION
from rembus.broker.sqlite_twins import write_twins
from rembus_proto.store import Pruned, StoredMessage, TwinRecord, TwinUpdate

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "StoreError"]

# Up to this many topics, replay walks the (topic, seq) index once per topic and
# merges: cost ~ topics + limit whatever the archive holds. A single
# ``topic IN (...) ORDER BY seq`` over that index would sort every match after
# the cursor on each batch, which makes a full replay quadratic.
_MERGE_MAX = 64
# Above it, rows are scanned in seq order and filtered with ``+topic IN (...)``
# (the ``+`` keeps the planner off the topic index), so a whole replay reads
# the archive once. Bound parameters per statement stay under SQLite's
# historical limit of 999.
_IN_CHUNK = 500
# Free pages given back after a prune, at most (4 KiB pages: 64 MiB); what is left
# goes at the next prune.
_VACUUM_PAGES = 16_384
# Queued appends are written to the open transaction beyond this many, to bound
# memory when the caller commits rarely.
_MAX_QUEUED = 10_000


class StoreError(Exception):
    """The database cannot be used: damaged, foreign, locked, full or closed."""


class SQLiteStore:
    """A :class:`~rembus_proto.store.Store` in a SQLite database file.

    ``path`` is created with its parent directories if missing; ``":memory:"``
    gives a private in-memory database. ``synchronous`` is SQLite's
    ``PRAGMA synchronous``: ``"NORMAL"`` (survives a process crash) or
    ``"FULL"`` (also survives a power failure); ``"OFF"`` and ``"EXTRA"`` are
    accepted too.

    Use it from one thread. Used as a context manager, the store commits and
    closes on a normal exit and drops the staged writes on an exception.

    Raises :class:`StoreError` when the file is not a usable store (not a
    database, damaged, another application's database, written by a newer
    version, locked by another process). A :class:`StoreError` from any
    other method means the database failed (disk full, damaged, closed): the
    writes staged since the last commit are then dropped, and the store is
    back at its last committed state.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        mode = synchronous.upper()
        if mode not in schema.SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {schema.SYNCHRONOUS}, "
                             f"not {synchronous!r}")
        self.path = os.fspath(path)
        """The database file (or ``":memory:"``)."""
        self._rows: list[tuple[Any, ...]] = []
        self._twin_ops: dict[str, TwinRecord | TwinUpdate | None] = {}
        """Per twin, in the order staged: a whole record, an update, or ``None`` (delete)."""
        self._qos2_ops: dict[tuple[str, bytes], bool] = {}
        self._vacuum = False
        """Pages were freed: give them back after the commit."""
        self._counts: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        """Payload bytes stored per topic (as ``_counts``, kept in memory)."""
        self._total_bytes = 0
        self._last_seq = 0
        self._dirty = False
        self._in_tx = False
        self._closed = False
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            self._closed = True
            raise self._error(exc, "open") from exc
        try:
            self._open(mode)
        except BaseException as exc:
            self._closed = True
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, "open") from exc
            raise

    # -- the Store port ----------------------------------------------------

    def load(self) -> tuple[int, list[TwinRecord]]:
        """Return the last seq ever appended and every stored twin."""
        self._check_open()
        try:
            self._flush()
            db = self._db
            twins = {name: self._decode_twin(name, record) for name, record
                     in db.execute("SELECT name, record FROM twins ORDER BY name")}
            for name, topic, msg_from in db.execute(
                    "SELECT name, topic, msg_from FROM twin_subs ORDER BY rowid"):
                if name in twins:
                    twins[name].subscriptions[topic] = float(msg_from)
            for name, topic, seq in db.execute(
                    "SELECT name, topic, seq FROM twin_since ORDER BY rowid"):
                if name in twins:
                    twins[name].since[topic] = seq
            for name, topic in db.execute("SELECT name, topic FROM twin_exposed ORDER BY rowid"):
                if name in twins:
                    twins[name].exposed.append(topic)
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc
        return self._last_seq, list(twins.values())

    def save_twin(self, twin: TwinRecord) -> None:
        """Stage an insert or replace of ``twin`` (a snapshot is taken now)."""
        self._check_open()
        self._twin_ops.pop(twin.name, None)  # staged last
        self._twin_ops[twin.name] = schema.copy_twin(twin)
        self._dirty = True

    def update_twin(self, update: TwinUpdate) -> None:
        """Stage the rows that ``update`` changes (merged with what is staged already)."""
        self._check_open()
        ops = self._twin_ops
        staged = ops.get(update.name)
        if isinstance(staged, TwinRecord):
            update.apply(staged)
        elif isinstance(staged, TwinUpdate):
            staged.merge(update)
        elif update.name not in ops:
            ops[update.name] = TwinUpdate(update.name, update.mark, list(update.done_above),
                                          dict(update.subscriptions), dict(update.since),
                                          dict(update.exposed))
        self._dirty = True

    def delete_twin(self, name: str) -> None:
        """Stage the removal of a twin."""
        self._check_open()
        self._twin_ops.pop(name, None)
        self._twin_ops[name] = None
        self._dirty = True

    def append(self, message: StoredMessage) -> None:
        """Archive ``message`` (durable at the next :meth:`commit`).

        Raises :class:`ValueError` if its seq is not above every seq appended
        before: sequence numbers are never reused.
        """
        seq = message.seq
        if seq <= self._last_seq or self._closed:
            self._check_open()
            raise ValueError(f"seq {seq} is not above the last archived seq {self._last_seq}")
        topic = message.topic
        self._rows.append((seq, message.recv_ns, topic, message.flags, message.msg_id,
                           message.publisher, message.payload))
        self._last_seq = seq
        counts = self._counts
        counts[topic] = counts.get(topic, 0) + 1
        size = len(message.payload)
        self._bytes[topic] = self._bytes.get(topic, 0) + size
        self._total_bytes += size
        self._dirty = True
        if len(self._rows) >= _MAX_QUEUED:
            try:
                self._flush_rows()
            except sqlite3.Error as exc:
                raise self._fail(exc, "write") from exc

    def qos2_received(self, publisher: str, msg_id: bytes) -> None:
        """Stage that the QoS2 id ``msg_id`` of ``publisher`` arrived."""
        self._check_open()
        self._qos2_ops[publisher, msg_id] = True
        self._dirty = True

    def qos2_released(self, publisher: str, msg_id: bytes) -> None:
        """Stage forgetting a QoS2 id."""
        self._check_open()
        self._qos2_ops[publisher, msg_id] = False
        self._dirty = True

    def load_qos2(self) -> list[tuple[str, bytes]]:
        """The remembered QoS2 ids, oldest first."""
        self._check_open()
        try:
            self._flush()
            rows = self._db.execute(
                "SELECT publisher, msg_id FROM qos2 ORDER BY rowid").fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc
        return [(str(publisher), bytes(msg_id)) for publisher, msg_id in rows]

    def replay(self, after_seq: int, topics: Collection[str] | None,
               limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        """Up to ``limit`` messages with ``seq > after_seq`` in seq order.

        ``topics`` restricts the result to those exact topics; ``None`` means
        all. Messages appended but not yet committed are included. With
        ``max_bytes``, the payloads returned add up to at most that much (but
        one message is returned whatever its size): the sizes are looked up
        first, so no payload beyond the budget is read.
        """
        self._check_open()
        if limit <= 0:
            return []
        try:
            self._flush_rows()
            if max_bytes is not None:
                sizes = self._replay_rows(schema.SIZES, after_seq, topics, limit)
                limit = _fitting([size for _, size in sizes], max_bytes)
            rows = self._replay_rows(schema.COLUMNS, after_seq, topics, limit)
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc
        return list(starmap(StoredMessage, rows))

    def prune(self, min_recv_ns: int, max_per_topic: int,
              report: list[Pruned] | None = None, *, max_topic_bytes: int | None = None,
              max_total_bytes: int | None = None) -> int:
        """Stage the removal of messages received before ``min_recv_ns``, of
        all but the newest ``max_per_topic`` of each topic, of the oldest of a
        topic whose payloads add up to more than ``max_topic_bytes``, then of
        the oldest of all while they add up to more than ``max_total_bytes``;
        return how many, and add them per topic and reason to ``report``. The
        space they took is given back to the file system after the commit
        (incremental vacuum). It costs what it removes, plus one look per topic."""
        self._check_open()
        try:
            return self._prune(min_recv_ns, max_per_topic,
                               report if report is not None else [], max_topic_bytes,
                               max_total_bytes)
        except sqlite3.Error as exc:
            raise self._fail(exc, "prune") from exc

    @property
    def stored_bytes(self) -> int:
        """Payload bytes of every stored message."""
        return self._total_bytes

    def commit(self) -> None:
        """Make every staged write durable; does nothing if nothing is staged."""
        if not self._dirty:
            return
        self._check_open()
        try:
            self._flush()
            if self._in_tx:
                self._db.execute("COMMIT")
                self._in_tx = False
            if self._vacuum:
                self._vacuum = False
                # outside any transaction; pages go back to the OS at the next checkpoint.
                # executescript steps it to the end (execute frees a single page)
                self._db.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES});")
        except sqlite3.Error as exc:
            raise self._fail(exc, "commit to") from exc
        self._dirty = False

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Commit what is staged and close the database; closing twice is fine."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        if not self._closed:
            self._closed = True
            self._rows.clear()
            self._twin_ops.clear()
            self._qos2_ops.clear()
            self._dirty = False
            self._db.close()  # an open transaction is rolled back

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"last_seq={self._last_seq}"
        return f"SQLiteStore({self.path!r}, {state})"

    # -- internals ---------------------------------------------------------

    def _open(self, synchronous: str) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app_id != schema.APPLICATION_ID and (app_id != 0 or version != 0 or db.execute(
                "SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None):
            raise StoreError(
                f"{self.path!r} is a SQLite database of another application, not a Rembus"
                " store: give the broker another file")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.path!r} has schema version {version}, newer than this"
                f" Rembus understands ({SCHEMA_VERSION}): upgrade Rembus or use another file")
        if version == 0:  # before the first table and WAL: pruned space is then given back
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL").fetchone()
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA journal_size_limit = 67108864")
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                for step in schema.MIGRATIONS[version:]:
                    for statement in step:
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
                # a store of an earlier version: rewritten once so that pruning shrinks it
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                db.execute("VACUUM")
        self._read_state()

    def _read_state(self) -> None:
        db = self._db
        (recorded,) = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        (highest,) = db.execute("SELECT max(seq) FROM messages").fetchone()
        self._last_seq = max(recorded, highest or 0)
        self._counts = {}
        self._bytes = {}
        for topic, count, size in db.execute(
                "SELECT topic, count(*), sum(length(payload)) FROM messages GROUP BY topic"):
            self._counts[topic] = count
            self._bytes[topic] = size
        self._total_bytes = sum(self._bytes.values())

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.path!r} is closed")

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def _flush_rows(self) -> None:
        rows = self._rows
        if rows:
            self._begin()
            self._db.executemany(schema.INSERT, rows)
            rows.clear()

    def _flush(self) -> None:
        self._flush_rows()
        self._flush_qos2()
        ops = self._twin_ops
        if ops:
            self._begin()
            write_twins(self._db, ops)
            ops.clear()

    @property
    def rows_written(self) -> int:
        """Rows inserted, changed or deleted since the store was opened (SQLite's
        ``total_changes``): what the writes cost, whatever the rows hold."""
        return int(self._db.total_changes)

    def _flush_qos2(self) -> None:
        ops = self._qos2_ops
        if ops:
            self._begin()
            self._db.executemany("INSERT OR IGNORE INTO qos2 (publisher, msg_id) VALUES (?, ?)",
                                 [key for key, received in ops.items() if received])
            self._db.executemany("DELETE FROM qos2 WHERE publisher = ? AND msg_id = ?",
                                 [key for key, received in ops.items() if not received])
            ops.clear()

    def _fail(self, exc: sqlite3.Error, action: str) -> StoreError:
        """Return the error to raise, after going back to the last committed state."""
        error = self._error(exc, action)
        self._recover()
        return error

    def _recover(self) -> None:
        self._rows.clear()
        self._twin_ops.clear()
        self._qos2_ops.clear()
        self._vacuum = False
        self._dirty = False
        if self._in_tx:
            self._in_tx = False
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                self._db.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):  # the next operation reports the problem
            self._read_state()

    def _replay_rows(self, columns: str, after_seq: int, topics: Collection[str] | None,
                     limit: int) -> list[tuple[Any, ...]]:
        """``columns`` (seq first) of the rows a replay returns."""
        if limit <= 0:
            return []
        if topics is None:
            statement = schema.REPLAY_ALL.format(columns)
            return self._db.execute(statement, (after_seq, limit)).fetchall()
        return self._replay_topics(columns, after_seq, list(dict.fromkeys(topics)), limit)

    def _replay_topics(self, columns: str, after_seq: int, topics: list[str],
                       limit: int) -> list[tuple[Any, ...]]:
        db = self._db
        if not topics:
            return []
        one_topic = schema.REPLAY_TOPIC.format(columns)
        if len(topics) == 1:
            return db.execute(one_topic, (topics[0], after_seq, limit)).fetchall()
        if len(topics) <= _MERGE_MAX:
            cursors = [db.execute(one_topic, (topic, after_seq, limit)) for topic in topics]
        else:
            cursors = []
            for start in range(0, len(topics), _IN_CHUNK):
                chunk = topics[start:start + _IN_CHUNK]
                cursors.append(db.execute(schema.replay_in(columns, len(chunk)),
                                          (after_seq, *chunk, limit)))
        try:
            # seqs are unique, so tuples never compare beyond their first item
            return list(islice(heapq.merge(*cursors), limit))
        finally:
            for cursor in cursors:
                cursor.close()

    def _prune(self, min_recv_ns: int, max_per_topic: int, report: list[Pruned],
               max_topic_bytes: int | None, max_total_bytes: int | None) -> int:
        db = self._db
        self._flush_rows()
        self._begin()
        self._dirty = True
        # deleting the newest rows must not let their seqs be handed out again
        db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'last_seq'",
                   (self._last_seq,))
        counts = self._counts
        first = len(report)
        if max_per_topic <= 0:
            report.extend(Pruned(t, n, "count") for t, n in sorted(counts.items()))
            dropped = db.execute("DELETE FROM messages").rowcount
            counts.clear()
            self._bytes.clear()
            self._total_bytes = 0
        else:
            dropped = 0
            old = db.execute(schema.COUNT_OLD, (min_recv_ns,)).fetchall()
            if old:
                dropped += db.execute(schema.DELETE_OLD, (min_recv_ns,)).rowcount
                for topic, gone, size in old:
                    self._discount(topic, gone, size)
                    report.append(Pruned(topic, gone, "age"))
            for topic, count in [(t, n) for t, n in counts.items() if n > max_per_topic]:
                excess = count - max_per_topic
                # the excess-th oldest message of the topic is the last one to go
                (boundary,) = db.execute(schema.NTH_OLDEST, (topic, excess - 1)).fetchone()
                _, size = db.execute(schema.BYTES_OLDEST, (topic, boundary)).fetchone()
                dropped += db.execute(schema.DELETE_OLDEST, (topic, boundary)).rowcount
                self._discount(topic, excess, size)
                report.append(Pruned(topic, excess, "count"))
            if max_topic_bytes is not None:
                dropped += self._prune_topic_bytes(max_topic_bytes, report)
            if max_total_bytes is not None and self._total_bytes > max_total_bytes:
                dropped += self._prune_total_bytes(max_total_bytes, report)
        if len(report) > first:
            self._vacuum = True
        return dropped

    def _prune_topic_bytes(self, budget: int, report: list[Pruned]) -> int:
        """The oldest messages of each topic over ``budget`` bytes, until it is within."""
        dropped = 0
        for topic, size in [(t, b) for t, b in self._bytes.items() if b > budget]:
            gone = freed = boundary = 0
            with contextlib.closing(self._db.execute(schema.OLDEST_OF_TOPIC, (topic,))) as oldest:
                for seq, length in oldest:
                    if size - freed <= budget:
                        break
                    gone, freed, boundary = gone + 1, freed + length, seq
            self._db.execute(schema.DELETE_OLDEST, (topic, boundary))
            self._discount(topic, gone, freed)
            report.append(Pruned(topic, gone, "bytes"))
            dropped += gone
        return dropped

    def _prune_total_bytes(self, budget: int, report: list[Pruned]) -> int:
        """The oldest messages of all while they add up to more than ``budget`` bytes."""
        gone: dict[str, list[int]] = {}
        freed = boundary = 0
        with contextlib.closing(self._db.execute(schema.OLDEST)) as oldest:
            for seq, topic, length in oldest:
                if self._total_bytes - freed <= budget:
                    break
                counted = gone.setdefault(topic, [0, 0])
                counted[0] += 1
                counted[1] += length
                freed += length
                boundary = seq
        self._db.execute(schema.DELETE_UP_TO, (boundary,))
        for topic, (count, size) in sorted(gone.items()):
            self._discount(topic, count, size)
            report.append(Pruned(topic, count, "total"))
        return sum(count for count, _ in gone.values())

    def _discount(self, topic: str, gone: int, size: int) -> None:
        _discount(self._counts, topic, gone)
        _discount(self._bytes, topic, size)
        self._total_bytes -= size

    def _decode_twin(self, name: str, record: str) -> TwinRecord:
        try:
            return schema.decode_twin(name, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreError(
                f"the twin {name!r} in the store {self.path!r} cannot be read ({exc}):"
                " restore the file from a backup or delete that twin") from exc

    def _error(self, exc: sqlite3.Error, action: str) -> StoreError:
        text = str(exc)
        lowered = text.lower()
        if "not a database" in lowered or "malformed" in lowered or "encrypted" in lowered:
            hint = ("the file is damaged or is not a database: restore it from a backup,"
                    " or move it away to start with an empty store")
        elif "locked" in lowered or "busy" in lowered:
            hint = "another process (a second broker?) is using it: stop it or use another file"
        elif "full" in lowered:
            hint = "free some disk space"
        elif "readonly" in lowered or "unable to open" in lowered:
            hint = "check that the file and its directory exist and are writable"
        else:
            hint = ""
        message = f"cannot {action} the store {self.path!r}: {text}"
        return StoreError(f"{message}; {hint}" if hint else message)


def _fitting(sizes: list[int], budget: int) -> int:
    """How many of the first ``sizes`` add up to at most ``budget`` (one at least)."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > budget:
            return max(count, 1)
    return len(sizes)


def _discount(counts: dict[str, int], topic: str, gone: int) -> None:
    left = counts.get(topic, 0) - gone
    if left > 0:
        counts[topic] = left
    else:
        counts.pop(topic, None)
