"""SQLite's own evidence of damage: ``PRAGMA quick_check``, the pages ``dbstat`` finds
corrupted, dropped triggers, deleted checkpoint ids."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from auditmw._stores.sqlite_errors import is_damage, store_error
from auditmw._stores.sqlite_sql import CHECKPOINT_TRIGGERS, CUT_TRIGGERS, DELETE_TRIGGER, TRIGGERS

logger = logging.getLogger("auditmw")

# verify's finding lists this many of quick_check's lines (SQLite stops at 100), and
# this many ranges of deleted checkpoint ids.
MAX_QUICK_CHECK_LINES = 10
MAX_RANGES = 10


def warn_if_triggers_were_dropped(conn: sqlite3.Connection, path: Path) -> None:
    """Opening re-creates missing triggers; say so, as their absence is evidence."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master").fetchall()
    names = [row[0] for row in rows]
    delete_trigger = next((str(sql) for name, sql in rows if name == TRIGGERS[1]), None)
    if (
        ("auditmw_events" in names and any(name not in names for name in TRIGGERS))
        or (
            "auditmw_checkpoints" in names
            and any(name not in names for name in CHECKPOINT_TRIGGERS)
        )
        or ("auditmw_cuts" in names and any(name not in names for name in CUT_TRIGGERS))
        or (delete_trigger is not None and not _known_delete_trigger(delete_trigger))
    ):
        logger.warning(
            "%s: append-only triggers were missing or altered and are being re-created; "
            "run `auditmw verify` on this store",
            path,
        )


def _known_delete_trigger(sql: str) -> bool:
    """The DELETE trigger as created: today's narrow one, or the one that refused every
    DELETE (a store from before retention, migrated on this open)."""
    return sql.split() == DELETE_TRIGGER.split() or (
        "RAISE(ABORT, 'auditmw_events is append-only: DELETE is not allowed')" in sql
    )


def damaged_objects(conn: sqlite3.Connection) -> list[str]:
    """The tables and indexes that damaged pages belong to, as SQLite's ``dbstat`` sees
    them (it marks pages it cannot decode); empty when this SQLite has no ``dbstat``."""
    try:
        rows = conn.execute(
            "SELECT DISTINCT coalesce(m.type, 'table'), d.name FROM dbstat AS d "
            "LEFT JOIN sqlite_master AS m ON m.name = d.name "
            "WHERE d.pagetype = 'corrupted' ORDER BY d.name"
        ).fetchall()
    except sqlite3.Error:
        return []
    return [f"{kind} {name}" for kind, name in rows]


def missing_ranges(ids: list[int], last: int) -> str:
    """The numbers from 1 to ``last`` that sorted ``ids`` lacks, as ``3, 6..9``."""
    ranges: list[str] = []
    expected = 1
    for number in [*ids, last + 1]:
        if number > expected:
            ranges.append(str(expected) if number == expected + 1 else f"{expected}..{number - 1}")
        expected = number + 1
    if len(ranges) > MAX_RANGES:
        ranges[MAX_RANGES:] = [f"... ({len(ranges) - MAX_RANGES} more ranges)"]
    return ", ".join(ranges)


def quick_check(conn: sqlite3.Connection, path: Path) -> list[str]:
    """SQLite's own check of every page of the file (``PRAGMA quick_check``: the
    structure of each table and index b-tree, the free list, NOT NULL constraints;
    not whether indexes hold the same rows as their table, which ``integrity_check``
    adds at several times the cost), on ``conn``, a connection of its own. Damaged pages
    are named by the table or index they belong to when SQLite's ``dbstat`` table can
    tell. Empty when the check finds nothing."""
    try:
        conn.execute("PRAGMA query_only=ON")
        try:
            lines = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:  # a damaged page can stop the check itself
            if not is_damage(exc):
                raise
            lines = [str(exc)]
    except sqlite3.Error as exc:
        raise store_error(f"audit store {path}: quick_check failed", exc) from exc
    problems = [
        line
        for text in lines
        for line in text.splitlines()
        if line != "ok" and not line.startswith("*** in database ")
    ]
    if not problems:
        return []
    message = "the database file is damaged (PRAGMA quick_check): " + "; ".join(
        problems[:MAX_QUICK_CHECK_LINES]
    )
    if len(problems) > MAX_QUICK_CHECK_LINES:
        message += f"; and {len(problems) - MAX_QUICK_CHECK_LINES} more"
    objects = damaged_objects(conn)
    if objects:
        message += f"; damaged pages belong to {', '.join(objects)}"
    return [message]
