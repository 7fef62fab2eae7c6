"""Erasure on PostgreSQL: the UPDATE that removes openings, then a VACUUM of the table."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from auditmw._errors import StoreError
from auditmw._stores.rows import PersonalUpdate
from auditmw._stores.sql import ERASE_ACTOR, ERASE_DETAILS, Dialect

VACUUM_TIMEOUT = 600.0  # seconds: a VACUUM after an erasure reads the whole table
# What PostgreSQL keeps of erased values (docs/privacy.md).
KEPT_NOTE = (
    "PostgreSQL frees the space of the old row versions at VACUUM without zeroing it: "
    "their bytes may stay in the table's data files until overwritten, and in WAL segments "
    "(and any WAL archive, backup or replica) until those are recycled"
)

Connection = Callable[[str], AbstractAsyncContextManager[Any]]


async def remove_personal(
    connection: Connection, dialect: Dialect, updates: list[PersonalUpdate]
) -> list[str]:
    """Apply ``updates`` in one transaction on a ``connection(failure text)``, then
    VACUUM the events table so that no old row version stays readable; returns notes."""
    async with connection("erase failed") as conn, conn.transaction():
        actor = [(u.log, u.seq) for u in updates if u.actor]
        details = [(u.personal, u.log, u.seq) for u in updates if not u.actor]
        if actor:
            await conn.executemany(dialect.sql(ERASE_ACTOR), actor)
        if details:
            await conn.executemany(dialect.sql(ERASE_DETAILS), details)
    notes = [KEPT_NOTE]
    try:
        async with connection("VACUUM failed") as conn:
            await conn.execute("VACUUM auditmw_events", timeout=VACUUM_TIMEOUT)
    except StoreError as exc:
        notes.append(f"VACUUM auditmw_events failed ({exc}): run it as the table's owner")
    return notes
