"""Someone with write access to a store's database, tampering with the audit log.

The tamper tests (``tests/test_tamper.py``) run against every backend. A ``Target`` is one
store: its URL (for ``open_store`` and ``auditmw verify``) and a way in for an attacker.
``Target.attacker()`` opens an ``Attacker``: raw access to the database, as whoever holds
the file or a superuser login would have it, with the append-only protection removed
first, the way such an attacker removes it:

- SQLite: ``sqlite3`` on the file, dropping the triggers;
- PostgreSQL: a superuser asyncpg connection that disables the triggers, by default with
  ``ALTER TABLE auditmw_events DISABLE TRIGGER USER`` (other ways: ``PG_BYPASSES``).

Both attackers take the same statements, written in SQL that both databases read alike,
with ``?`` placeholders (the PostgreSQL attacker numbers them ``$1, $2...``; the tests
never put a ``?`` inside a literal). Calls block, whether or not an event loop is running
in the calling thread (the PostgreSQL connection lives on an event loop of its own).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import asyncpg
import orjson

from auditmw._stores.postgres_schema import create_schema

from ._postgres import POSTGRES_DSN, store_url

T = TypeVar("T")

SQLITE_TRIGGERS = ("auditmw_events_no_update", "auditmw_events_no_delete")
PG_TRIGGERS = ("auditmw_events_no_change", "auditmw_events_no_truncate")

# How a PostgreSQL superuser gets past the append-only triggers. Each changes the schema,
# so that ``verify()`` can warn about it. (A session with session_replication_role =
# replica, how replication and restore tools skip triggers, does not get past them alone:
# they fire ALWAYS. It must first make them ordinary triggers again: "session".)
PG_BYPASSES: dict[str, list[str]] = {
    "disable": ["ALTER TABLE auditmw_events DISABLE TRIGGER USER"],
    "drop": [f"DROP TRIGGER {name} ON auditmw_events" for name in PG_TRIGGERS],
    # The triggers stay "enabled", but fire only in sessions that act as a replica.
    "replica_only": [f"ALTER TABLE auditmw_events ENABLE REPLICA TRIGGER {n}" for n in PG_TRIGGERS],
    "session": [
        *(f"ALTER TABLE auditmw_events ENABLE TRIGGER {name}" for name in PG_TRIGGERS),
        "SET session_replication_role = replica",
    ],
}


class Attacker(ABC):
    """Raw read/write access to the events table, protections removed (or not)."""

    #: What the database raises when an append-only trigger refuses a statement.
    refused: ClassVar[type[Exception]]

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement (``?`` placeholders)."""

    @abstractmethod
    def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of a query, or None when it has no row."""

    @abstractmethod
    def columns(self) -> list[str]:
        """The columns of the events table, in table order."""

    def count(self) -> int:
        return int(self.fetchval("SELECT count(*) FROM auditmw_events"))

    def read_entry(self, seq: int, log: str = "default") -> bytes:
        value = self.fetchval(
            "SELECT entry FROM auditmw_events WHERE log = ? AND seq = ?", (log, seq)
        )
        return bytes(value)

    def read_hash(self, seq: int, log: str = "default") -> str:
        value = self.fetchval(
            "SELECT hash FROM auditmw_events WHERE log = ? AND seq = ?", (log, seq)
        )
        return str(value)

    def write_entry(self, seq: int, entry: Any, *, rehash: bool, log: str = "default") -> None:
        """Replace the stored entry of ``seq``; with ``rehash``, its hash column too."""
        self.execute(
            "UPDATE auditmw_events SET entry = ? WHERE log = ? AND seq = ?", (entry, log, seq)
        )
        if rehash:
            self.execute(
                "UPDATE auditmw_events SET hash = ? WHERE log = ? AND seq = ?",
                (leaf_hash(entry), log, seq),
            )

    def insert_row(self, entry: bytes, hash_: str, data: dict[str, Any]) -> None:
        """Insert a row whose every column agrees with ``entry`` (a careful forger)."""
        values = {**data, "hash": hash_, "entry": entry, "personal": None}
        if data.get("commitments"):  # format 2: copy the openings of the row it copies
            values.update(self._openings_of(data["commitments"]))
        columns = self.columns()
        self.execute(
            f"INSERT INTO auditmw_events ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            [values[name] for name in columns],
        )

    def _openings_of(self, commitments: dict[str, str]) -> dict[str, Any]:
        """The openings column (and the index columns it fills) of the row whose openings
        match ``commitments``."""
        for offset in range(self.count()):
            personal = self.fetchval(
                "SELECT personal FROM auditmw_events ORDER BY log, seq LIMIT 1 OFFSET ?", (offset,)
            )
            openings = orjson.loads(personal) if personal else {}
            if set(openings) == set(commitments) and all(
                hashlib.sha256(bytes.fromhex(salt) + text.encode()).hexdigest()
                == commitments[pointer]
                for pointer, (salt, text) in openings.items()
            ):
                opened = {
                    pointer[1:]: orjson.loads(text)
                    for pointer, (_, text) in openings.items()
                    if pointer in ("/user_email", "/ip_address", "/user_agent")
                }
                return {"personal": personal, **opened}
        raise AssertionError("no row holds these openings")

    def swap_seq(self, a: int, b: int) -> None:
        """Swap the seq columns of two rows (the entries keep the seq they carry)."""
        self.execute("UPDATE auditmw_events SET seq = -1 WHERE seq = ?", (a,))
        self.execute("UPDATE auditmw_events SET seq = ? WHERE seq = ?", (a, b))
        self.execute("UPDATE auditmw_events SET seq = ? WHERE seq = -1", (b,))

    def rebuild_without_primary_key(self) -> None:
        """What an attacker does to get past the (log, seq) primary key and NOT NULLs
        (also drops the triggers and indexes, which belong to the old table)."""
        self.execute("CREATE TABLE events_copy AS SELECT * FROM auditmw_events")
        self.execute("DROP TABLE auditmw_events")
        self.execute("ALTER TABLE events_copy RENAME TO auditmw_events")


def leaf_hash(entry: bytes) -> str:
    """The chain hash, computed as docs/format.md says, independently of auditmw."""
    return hashlib.sha256(b"\x00" + entry).hexdigest()


class Target(ABC):
    """One store of one backend, for the store, the CLI and an attacker."""

    backend: ClassVar[str]
    #: The names of the append-only triggers this backend creates.
    triggers: ClassVar[tuple[str, ...]]

    @property
    @abstractmethod
    def url(self) -> str:
        """What ``open_store`` and ``auditmw verify`` take."""

    @abstractmethod
    def attacker(self, *, drop_triggers: bool = True) -> AbstractContextManager[Attacker]:
        """Raw access to the store's database; with ``drop_triggers``, the append-only
        triggers are put out of action first."""

    @abstractmethod
    def copy_from(self, template: Target) -> None:
        """Make this (empty) target a store holding the same rows as ``template``."""


# ---------------------------------------------------------------------------------------
# SQLite


class SQLiteAttacker(Attacker):
    refused = sqlite3.IntegrityError

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def columns(self) -> list[str]:
        return [row[1] for row in self.conn.execute("PRAGMA table_info(auditmw_events)")]


class SQLiteTarget(Target):
    backend = "sqlite"
    triggers = SQLITE_TRIGGERS

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def url(self) -> str:
        return str(self.path)

    @contextmanager
    def attacker(self, *, drop_triggers: bool = True) -> Iterator[SQLiteAttacker]:
        """A raw connection to the store file, as someone with file access opens it."""
        with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            if drop_triggers:
                for name in SQLITE_TRIGGERS:
                    conn.execute(f"DROP TRIGGER {name}")
            yield SQLiteAttacker(conn)

    def copy_from(self, template: Target) -> None:
        assert isinstance(template, SQLiteTarget)
        for suffix in ("", "-wal"):  # a closed store has no -wal file left, normally
            source = Path(f"{template.path}{suffix}")
            if source.exists():
                shutil.copyfile(source, f"{self.path}{suffix}")


# ---------------------------------------------------------------------------------------
# PostgreSQL


class _LoopThread:
    """An event loop running on its own thread: ``run`` blocks the caller until a
    coroutine is done there, whether or not the caller's thread runs a loop itself."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="attacker", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2...``."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


class PostgresAttacker(Attacker):
    refused = asyncpg.RaiseError  # RAISE EXCEPTION in the trigger function

    def __init__(self, conn: asyncpg.Connection, loop: _LoopThread, schema: str) -> None:
        self.conn = conn
        self._loop = loop
        self._schema = schema

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._loop.run(self.conn.execute(numbered(sql), *params))

    def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._loop.run(self.conn.fetchval(numbered(sql), *params))

    def columns(self) -> list[str]:
        rows = self._loop.run(
            self.conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
                "AND table_name = 'auditmw_events' ORDER BY ordinal_position",
                self._schema,
            )
        )
        return [row[0] for row in rows]


class PostgresTarget(Target):
    backend = "postgres"
    triggers = PG_TRIGGERS

    def __init__(self, schema: str, bypass: str = "disable") -> None:
        if bypass not in PG_BYPASSES:
            raise ValueError(f"bypass must be one of {', '.join(PG_BYPASSES)}")
        self.schema = schema
        self.bypass = bypass

    @property
    def url(self) -> str:
        return store_url(self.schema)

    @contextmanager
    def attacker(self, *, drop_triggers: bool = True) -> Iterator[PostgresAttacker]:
        """A superuser connection with the store's schema on its search path."""
        loop = _LoopThread()
        try:
            conn = loop.run(
                asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": self.schema})
            )
            try:
                attacker = PostgresAttacker(conn, loop, self.schema)
                if drop_triggers:
                    for statement in PG_BYPASSES[self.bypass]:
                        attacker.execute(statement)
                yield attacker
            finally:
                loop.run(conn.close())
        finally:
            loop.close()

    def copy_from(self, template: Target) -> None:
        """The tables (and triggers) are made by the store's own schema setup, which
        ``open_store`` runs (called directly: one connection instead of a store's three);
        the rows are then copied as they are (INSERT is what the triggers allow)."""
        assert isinstance(template, PostgresTarget)

        async def copy() -> None:
            conn = await asyncpg.connect(POSTGRES_DSN)
            try:
                await create_schema(conn, self.schema)
                await conn.execute(
                    f'INSERT INTO "{self.schema}".auditmw_events '
                    f'SELECT * FROM "{template.schema}".auditmw_events ORDER BY log, seq'
                )
            finally:
                await conn.close()

        asyncio.run(copy())
