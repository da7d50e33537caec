"""Writing the twins' rows of the SQLite store.

A twin is one row of ``twins`` (its progress) and one row per subscription,
``since`` and exposure in the child tables: a change staged by
:class:`~rembus.broker.sqlite_store.SQLiteStore` rewrites only the rows it
touched, and a twin saved whole replaces all of its rows.
"""

from __future__ import annotations

import sqlite3

from rembus.broker import sqlite_schema as schema
from rembus_proto.store import TwinRecord, TwinUpdate

__all__ = ["write_twins"]


def write_twins(db: sqlite3.Connection, ops: dict[str, TwinRecord | TwinUpdate | None]) -> None:
    """Write the staged twin changes: a twin's progress, and one row per subscription,
    ``since`` or exposure that changed (a whole twin only when saved whole)."""
    gone = [(name,) for name, op in ops.items() if not isinstance(op, TwinUpdate)]
    whole = [op for op in ops.values() if isinstance(op, TwinRecord)]
    updates = [op for op in ops.values() if isinstance(op, TwinUpdate)]
    deleted = [(name,) for name, op in ops.items() if op is None]
    if gone:
        for table in schema.CHILDREN:
            db.executemany(f"DELETE FROM {table} WHERE name = ?", gone)
    if deleted:
        db.executemany("DELETE FROM twins WHERE name = ?", deleted)
        db.executemany("DELETE FROM qos2 WHERE publisher = ?", deleted)
    db.executemany("INSERT OR REPLACE INTO twins (name, record) VALUES (?, ?)",
                   [(twin.name, schema.encode_progress(twin.mark, twin.done_above))
                    for twin in whole])
    db.executemany("UPDATE twins SET record = ? WHERE name = ?",
                   [(schema.encode_progress(u.mark, u.done_above), u.name) for u in updates])
    subs: list[tuple[str, str, float | None]] = [
        (twin.name, topic, msg_from) for twin in whole
        for topic, msg_from in twin.subscriptions.items()]
    since: list[tuple[str, str, int | None]] = [
        (twin.name, topic, seq) for twin in whole for topic, seq in twin.since.items()]
    exposed: list[tuple[str, str, bool]] = [
        (twin.name, topic, True) for twin in whole for topic in twin.exposed]
    for u in updates:
        subs.extend((u.name, topic, msg_from) for topic, msg_from in u.subscriptions.items())
        since.extend((u.name, topic, seq) for topic, seq in u.since.items())
        exposed.extend((u.name, topic, present) for topic, present in u.exposed.items())
    schema.write_rows(db, "twin_subs", "msg_from", subs)
    schema.write_rows(db, "twin_since", "seq", since)
    db.executemany("DELETE FROM twin_exposed WHERE name = ? AND topic = ?",
                   [(name, topic) for name, topic, _ in exposed])
    db.executemany("INSERT INTO twin_exposed (name, topic) VALUES (?, ?)",
                   [(name, topic) for name, topic, present in exposed if present])
