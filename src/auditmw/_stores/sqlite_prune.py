"""A prune on SQLite (docs/retention.md): the statements the write thread runs.

Recording is one transaction on the write connection (``SQLiteBackend.prune``): the
``audit.pruned`` event is chained after the head of its log and inserted with the cut
rows. The rows at or below the cuts are then deleted in batches (``delete_batch``), each
its own transaction and its own job of the write thread, so appends take turns with
them: deleting a million rows in one transaction held every append for its whole 30 s
(benchmarks/prune.py). The events table's DELETE trigger lets exactly those rows go; a
crash between batches leaves a prune recorded and unfinished, which ``verify`` reports
as a warning and the next prune finishes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from auditmw._errors import PruneRefusedError
from auditmw._event import entry_hash
from auditmw._retention.cuts import Cut, CutRecord
from auditmw._stores.sqlite_sql import (
    DELETE_PRUNED,
    INSERT_CUT,
    RETENTION_SCHEMA,
)

RECORDED_CUTS = "SELECT log, max(last_seq) FROM auditmw_cuts GROUP BY log"
ENTRY_AT = "SELECT CAST(entry AS BLOB) FROM auditmw_events WHERE log = ? AND seq = ?"


def has_retention_schema(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'auditmw_cuts'"
    ).fetchone()
    return row is not None


def migrate(conn: sqlite3.Connection) -> None:
    """Create the cut table and the narrow DELETE trigger (idempotent), in a transaction
    the caller holds (``executescript`` would commit it)."""
    statement = ""
    for line in RETENTION_SCHEMA.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def recorded_cuts(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(log): int(last) for log, last in conn.execute(RECORDED_CUTS)}


def check_plan(
    conn: sqlite3.Connection, cuts: Mapping[str, Cut], recorded: Mapping[str, int]
) -> None:
    """Inside the prune's transaction: the cuts recorded are still those the plan started
    from, and each new cut's entry is stored with the planned hash."""
    now = recorded_cuts(conn)
    if now != dict(recorded):
        raise PruneRefusedError(
            "another prune ran while this one was planned; nothing was pruned: run it again"
        )
    for log, cut in cuts.items():
        if recorded.get(log) == cut.last_seq:
            continue  # restated from an earlier prune: its entry is gone
        row = conn.execute(ENTRY_AT, (log, cut.last_seq)).fetchone()
        if row is None or entry_hash(bytes(row[0])) != cut.head:
            raise PruneRefusedError(
                f"log {log!r}: the entry at the cut (seq {cut.last_seq}) is not the one "
                "planned; nothing was pruned"
            )


def record(conn: sqlite3.Connection, records: list[CutRecord]) -> None:
    """Insert the cut rows."""
    conn.executemany(INSERT_CUT, [record.values() for record in records])


def delete_batch(conn: sqlite3.Connection, limit: int) -> int:
    """Delete up to ``limit`` rows at or below the recorded cuts (a prune left
    unfinished), oldest first; the count deleted."""
    deleted = 0
    for log, last_seq in recorded_cuts(conn).items():
        if deleted >= limit:
            break
        deleted += conn.execute(DELETE_PRUNED, (log, log, last_seq, limit - deleted)).rowcount
    return deleted
