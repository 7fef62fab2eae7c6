"""SQLite's own evidence of damage: ``PRAGMA quick_check``, the pages ``dbstat`` finds
corrupted, dropped or altered triggers, deleted checkpoint ids."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from auditmw._stores.sqlite_errors import is_damage, store_error
from auditmw._stores.sqlite_sql import (
    CHECKPOINT_TRIGGERS,
    CUT_TRIGGERS,
    DELETE_TRIGGER,
    TRIGGERS,
    UPDATE_TRIGGER,
)

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


FetchRows = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]
TRIGGER_SQL = "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?"


async def protection_warnings(
    fetch_rows: FetchRows, writes_format_2: bool, has_checkpoints: bool, has_cuts: bool
) -> list[str]:
    """What is wrong with the store's append-only triggers (``schema_warnings``): missing,
    or the narrow UPDATE and DELETE paths rewritten to let more through."""
    warnings = await _missing_triggers(fetch_rows, "auditmw_events", TRIGGERS, "the table")
    rows = await fetch_rows(TRIGGER_SQL, ["auditmw_events_no_update"])
    # The one UPDATE allowed is the trigger's WHEN clause: one rewritten to let more
    # through protects nothing (a store not migrated yet has the older, stricter one).
    expected = " ".join(UPDATE_TRIGGER.replace(" IF NOT EXISTS", "").split()).rstrip(";")
    if rows and writes_format_2 and " ".join(str(rows[0][0]).split()) != expected:
        warnings.append(
            "append-only trigger auditmw_events_no_update was altered: the table may "
            "accept other UPDATEs than the removal of personal data"
        )
    if has_checkpoints:
        warnings += await _missing_triggers(
            fetch_rows, "auditmw_checkpoints", CHECKPOINT_TRIGGERS, "auditmw_checkpoints"
        )
    if has_cuts:
        warnings += await _missing_triggers(
            fetch_rows, "auditmw_cuts", CUT_TRIGGERS, "auditmw_cuts"
        )
        rows = await fetch_rows(TRIGGER_SQL, ["auditmw_events_no_delete"])
        if rows and str(rows[0][0]).split() != DELETE_TRIGGER.split():
            warnings.append(
                "append-only trigger auditmw_events_no_delete was altered: the table may "
                "accept DELETE beyond the recorded prune cuts"
            )
    return warnings


async def _missing_triggers(
    fetch_rows: FetchRows, table: str, names: tuple[str, ...], what: str
) -> list[str]:
    rows = await fetch_rows(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", [table]
    )
    present = {row[0] for row in rows}
    return [
        f"append-only trigger {name} is missing: {what} accepts UPDATE/DELETE"
        for name in names
        if name not in present
    ]
