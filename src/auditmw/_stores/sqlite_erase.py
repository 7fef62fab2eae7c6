"""Erasure on SQLite: the one UPDATE the events table takes, run so that the values it
removes leave the file (docs/privacy.md).

``PRAGMA secure_delete`` zeroes what the UPDATE frees, in table and index pages; then the
write-ahead log, which still holds the pages as they were written, is copied into the
file and truncated.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from auditmw._stores.rows import PersonalUpdate
from auditmw._stores.sql import ERASE_ACTOR, ERASE_DETAILS

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


def remove_personal(
    conn: sqlite3.Connection,
    transaction: Transaction,
    updates: list[PersonalUpdate],
    busy_timeout: float,
) -> list[str]:
    """Apply ``updates`` on the write connection ``conn`` (in the write thread), in one
    ``transaction``; what could not be made sure of (the WAL left untruncated)."""
    previous = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete=ON")
    try:
        with transaction() as writing:
            writing.executemany(ERASE_ACTOR, [(u.log, u.seq) for u in updates if u.actor])
            writing.executemany(
                ERASE_DETAILS, [(u.personal, u.log, u.seq) for u in updates if not u.actor]
            )
    finally:
        conn.execute(f"PRAGMA secure_delete={int(previous)}")
    deadline = time.monotonic() + busy_timeout
    while True:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # another connection reads: wait for it to finish
    if busy:
        return [
            "the write-ahead log could not be truncated (another connection kept "
            "reading the store): the erased values may stay in the -wal file until "
            "the next checkpoint; run erase again when the store is idle"
        ]
    return []
