"""The SQLite store's schema, its migrations, its statements and row formats.

Version ``i`` of the schema is reached by the statements of ``MIGRATIONS[i - 1]``;
:class:`~rembus.broker.sqlite_store.SQLiteStore` applies the missing ones when it
opens a database.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from rembus_proto.store import TwinRecord

#: Stored in ``PRAGMA application_id`` to recognise our databases ("RMBS").
APPLICATION_ID = 0x524D4253

# One entry per schema version: the statements that migrate version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
        # payload last: the other columns then stay off the overflow pages
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY, recv_ns INTEGER NOT NULL,"
        " topic TEXT NOT NULL, flags INTEGER NOT NULL, msg_id BLOB,"
        " publisher TEXT NOT NULL, payload BLOB NOT NULL)",
        "CREATE INDEX messages_topic_seq ON messages (topic, seq)",
        "CREATE INDEX messages_recv_ns ON messages (recv_ns)",
        "CREATE TABLE twins (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('last_seq', 0)",
    ),
    (
        # QoS2 ids received from named publishers and not released yet, in arrival order
        "CREATE TABLE qos2 (publisher TEXT NOT NULL, msg_id BLOB NOT NULL,"
        " UNIQUE (publisher, msg_id))",
    ),
    (
        # A twin's subscriptions and exposures are rows of their own: a change writes one
        # row, not the whole twin. ``twins.record`` keeps the delivery progress (mark and
        # done_above). Rowid order is the order of the changes.
        "CREATE TABLE twin_subs (name TEXT NOT NULL, topic TEXT NOT NULL,"
        " msg_from REAL NOT NULL, UNIQUE (name, topic))",
        "CREATE TABLE twin_since (name TEXT NOT NULL, topic TEXT NOT NULL,"
        " seq INTEGER NOT NULL, UNIQUE (name, topic))",
        "CREATE TABLE twin_exposed (name TEXT NOT NULL, topic TEXT NOT NULL,"
        " UNIQUE (name, topic))",
        # JSON has no infinity: version 2 wrote it as the string "inf"
        "INSERT INTO twin_subs (name, topic, msg_from) SELECT t.name, j.key,"
        " CASE WHEN j.type IN ('integer', 'real') THEN j.value WHEN j.value = 'inf' THEN 9e999"
        " WHEN j.value = '-inf' THEN -9e999 ELSE 0.0 END"
        " FROM twins t, json_each(t.record, '$.subscriptions') j ORDER BY t.name, j.id",
        "INSERT INTO twin_since (name, topic, seq) SELECT t.name, j.key, j.value"
        " FROM twins t, json_each(t.record, '$.since') j ORDER BY t.name, j.id",
        "INSERT INTO twin_exposed (name, topic) SELECT t.name, j.value"
        " FROM twins t, json_each(t.record, '$.exposed') j ORDER BY t.name, j.id",
        "UPDATE twins SET record = json_object('mark', json_extract(record, '$.mark'),"
        " 'done_above', json(json_extract(record, '$.done_above')))",
    ),
)
CHILDREN = ("twin_subs", "twin_since", "twin_exposed")

#: The schema version this module writes (``PRAGMA user_version``).
SCHEMA_VERSION = len(MIGRATIONS)

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

INSERT = ("INSERT INTO messages (seq, recv_ns, topic, flags, msg_id, publisher, payload)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")
COLUMNS = "seq, recv_ns, topic, flags, msg_id, payload, publisher"  # StoredMessage order
SIZES = "seq, length(payload)"  # what a byte-bounded replay looks at first
REPLAY_ALL = "SELECT {} FROM messages WHERE seq > ? ORDER BY seq LIMIT ?"
REPLAY_TOPIC = "SELECT {} FROM messages WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?"
# Prune touches only what it deletes (plus the per-topic counts kept in memory).
# Left alone, the planner walks the whole topic index to group without sorting.
COUNT_OLD = ("SELECT topic, count(*), sum(length(payload)) FROM messages"
              " INDEXED BY messages_recv_ns WHERE recv_ns < ? GROUP BY topic")
DELETE_OLD = "DELETE FROM messages WHERE recv_ns < ?"
NTH_OLDEST = "SELECT seq FROM messages WHERE topic = ? ORDER BY seq LIMIT 1 OFFSET ?"
DELETE_OLDEST = "DELETE FROM messages WHERE topic = ? AND seq <= ?"
BYTES_OLDEST = ("SELECT count(*), sum(length(payload)) FROM messages"
                 " WHERE topic = ? AND seq <= ?")
OLDEST_OF_TOPIC = "SELECT seq, length(payload) FROM messages WHERE topic = ? ORDER BY seq"
OLDEST = "SELECT seq, topic, length(payload) FROM messages ORDER BY seq"
DELETE_UP_TO = "DELETE FROM messages WHERE seq <= ?"


def replay_in(columns: str, count: int) -> str:
    """A replay of ``count`` topics scanned in seq order."""
    marks = ", ".join("?" * count)
    return (f"SELECT {columns} FROM messages WHERE seq > ? AND +topic IN ({marks})"
            " ORDER BY seq LIMIT ?")


def write_rows(db: sqlite3.Connection, table: str, column: str,
                rows: list[tuple[str, str, Any]]) -> None:
    """Insert or change the (name, topic) rows whose value is set, delete the others."""
    db.executemany(f"INSERT INTO {table} (name, topic, {column}) VALUES (?, ?, ?)"
                   f" ON CONFLICT (name, topic) DO UPDATE SET {column} = excluded.{column}",
                   [row for row in rows if row[2] is not None])
    db.executemany(f"DELETE FROM {table} WHERE name = ? AND topic = ?",
                   [(name, topic) for name, topic, value in rows if value is None])


def copy_twin(twin: TwinRecord) -> TwinRecord:
    """A copy of ``twin`` that later changes to it do not reach."""
    return TwinRecord(twin.name, dict(twin.subscriptions), list(twin.exposed), twin.mark,
                      list(twin.done_above), dict(twin.since))


def encode_progress(mark: int, done_above: list[int]) -> str:
    """The ``twins.record`` text of a twin's delivery progress."""
    return json.dumps({"mark": mark, "done_above": done_above}, separators=(",", ":"))


def decode_twin(name: str, record: str) -> TwinRecord:
    """The twin's progress; its subscriptions and exposures are rows of their own."""
    data = json.loads(record)
    return TwinRecord(name, mark=int(data["mark"]),
                      done_above=[int(s) for s in data["done_above"]])
