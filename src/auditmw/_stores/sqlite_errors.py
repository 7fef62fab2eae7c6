"""SQLite's errors as the store's: the one mapping (``store_error``) every path of the
SQLite backend goes through, and what an append does when SQLite refuses part of it."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from auditmw._errors import (
    EventRefusedError,
    StorageDamagedError,
    StoreError,
    StoreUnavailableError,
)
from auditmw._event import Event

# SQLite's (primary) result codes of a store that cannot do it now but may later: a lock
# held past busy_timeout, an I/O error, a full disk. (Not CANTOPEN: a missing directory
# or a permission, which waiting does not fix.)
UNAVAILABLE_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)


def when_not_busy(
    statement: Callable[[], object],
    deadline: float,
    on_wait: Callable[[], None] | None = None,
) -> None:
    """Run ``statement`` again while SQLite answers SQLITE_BUSY, until ``deadline``
    (``time.monotonic()``), polling about every half millisecond; ``on_wait`` is called
    once, when the first answer is SQLITE_BUSY."""
    waiting = False
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        if not waiting and on_wait is not None:
            on_wait()
        waiting = True
        time.sleep(random.uniform(0.0001, 0.0008))  # jitter: waiters do not collide


def store_error(message: str, exc: sqlite3.Error) -> StoreError:
    """``message: exc`` as ``StorageDamagedError`` when SQLite found the file damaged,
    ``StoreUnavailableError`` when it says "not now" (see UNAVAILABLE_CODES), else as
    ``StoreError``."""
    code = getattr(exc, "sqlite_errorcode", None)  # absent on the module's own errors
    if is_damage(exc):
        return StorageDamagedError(f"{message}: {exc}")
    unavailable = code is not None and code & 0xFF in UNAVAILABLE_CODES
    return (StoreUnavailableError if unavailable else StoreError)(f"{message}: {exc}")


def raise_if_partly_committed(
    conn: sqlite3.Connection, events: list[Event], exc: sqlite3.IntegrityError, path: Path
) -> None:
    """After the single INSERT of ``events`` was refused: raise ``EventRefusedError``
    with the events it stored all the same, if any.

    Outside a transaction a trigger's ``RAISE(FAIL)`` ends the statement but keeps (and
    commits) the rows it inserted before the refused one: a prefix of ``events``. Their
    callers must be told they are committed, not that they failed, or appended again.
    """
    ids = [event.id for event in events]
    stored = {
        row[0]
        for row in conn.execute(
            f"SELECT id FROM auditmw_events WHERE id IN ({', '.join('?' * len(ids))})",  # noqa: S608
            ids,
        )
    }
    if not stored:
        return
    kept = len(stored)
    if stored != set(ids[:kept]):  # not what FAIL does: say so rather than guess
        raise StoreError(f"audit store {path}: an append was refused after storing part of it")
    raise EventRefusedError(
        f"audit store {path}: append refused: {exc}", committed=events[:kept]
    ) from exc


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite found the file damaged (SQLITE_CORRUPT and its extended codes, or
    SQLITE_NOTADB: a page that is not what it should be)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
