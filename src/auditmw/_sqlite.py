"""The embedded store: one SQLite file, WAL mode, append-only by trigger.

Durability: ``synchronous=FULL`` by default, so an event whose append returned
survives a crash or power loss; group commit keeps that affordable. Several
processes may share one file: each batch reads the chain head inside its
``BEGIN IMMEDIATE`` transaction, so the chain stays gapless. Never put the file on a
network filesystem.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite

from ._errors import NotAStoreError, StoreError
from ._event import GENESIS_HASH, Event, Limits, PreparedEvent, entry_hash
from ._store import AuditStore
from ._verify import INDEX_COLUMNS, ChainRow

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

SCHEMA = """
CREATE TABLE IF NOT EXISTS auditmw_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS auditmw_events (
    log TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    user_id TEXT,
    user_email TEXT,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    resource_id TEXT,
    outcome TEXT NOT NULL,
    ip_address TEXT,
    user_agent TEXT,
    request_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (log, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS auditmw_events_id ON auditmw_events (id);
CREATE INDEX IF NOT EXISTS auditmw_events_time ON auditmw_events (timestamp);
CREATE INDEX IF NOT EXISTS auditmw_events_user_id ON auditmw_events (user_id, timestamp);
CREATE INDEX IF NOT EXISTS auditmw_events_user_email ON auditmw_events (user_email, timestamp);
CREATE INDEX IF NOT EXISTS auditmw_events_action ON auditmw_events (action, timestamp);
CREATE INDEX IF NOT EXISTS auditmw_events_resource
    ON auditmw_events (resource, resource_id, timestamp);
CREATE TRIGGER IF NOT EXISTS auditmw_events_no_update BEFORE UPDATE ON auditmw_events
BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER IF NOT EXISTS auditmw_events_no_delete BEFORE DELETE ON auditmw_events
BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: DELETE is not allowed'); END;
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('schema_version', '1');
"""
TRIGGERS = ("auditmw_events_no_update", "auditmw_events_no_delete")
ROW_COLUMNS = (
    "log",
    "seq",
    "id",
    "timestamp",
    "user_id",
    "user_email",
    "action",
    "resource",
    "resource_id",
    "outcome",
    "ip_address",
    "user_agent",
    "request_id",
    "prev_hash",
    "hash",
    "entry",
)
# Statements below are built from the constant column names above, never from input.
INSERT = (
    f"INSERT INTO auditmw_events ({', '.join(ROW_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
)
CHAIN_QUERY = (
    "SELECT log, CAST(seq AS INTEGER), hash, CAST(entry AS BLOB), "  # noqa: S608
    f"{', '.join(INDEX_COLUMNS)} FROM auditmw_events ORDER BY log, seq"
)


class SQLiteStore(AuditStore):
    """An audit log in one SQLite file.

    ``create=False`` opens only an existing store (as ``auditmw verify`` does).
    ``synchronous`` is SQLite's durability setting: FULL (default) survives power
    loss; NORMAL may lose the newest commits on power loss (not on a process crash).
    ``busy_timeout`` is how long an append waits for another process's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        limits: Limits | None = None,
        max_batch: int = 1024,
        max_pending: int = 10_000,
    ) -> None:
        super().__init__(limits=limits, max_batch=max_batch, max_pending=max_pending)
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = Path(path)
        self._create = create
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._write_conn: aiosqlite.Connection | None = None
        self._read_conn: aiosqlite.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def _connect(self) -> None:
        if not self._create and not self.path.is_file():
            raise NotAStoreError(f"{self.path}: no such file")
        try:
            self._write_conn = await self._open_connection()
            if self._create:
                await self._write_conn.execute("PRAGMA journal_mode=WAL")
                await self._write_conn.execute(f"PRAGMA synchronous={self._synchronous}")
                # One script, one transaction: two processes creating the store at
                # once must not interleave (executescript commits what came before).
                await self._write_conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            await self._check_is_store(self._write_conn)
            self._read_conn = await self._open_connection()
        except sqlite3.Error as exc:
            await self._disconnect()
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise NotAStoreError(f"{self.path}: not an SQLite database") from exc
            raise StoreError(f"{self.path}: cannot open the audit store: {exc}") from exc
        except BaseException:
            await self._disconnect()
            raise

    async def _open_connection(self) -> aiosqlite.Connection:
        mode = "rwc" if self._create else "rw"
        uri = f"file:{quote(str(self.path.absolute()))}?mode={mode}"
        conn = await aiosqlite.connect(
            uri,
            uri=True,
            isolation_level=None,
            timeout=self._busy_timeout,
            iter_chunk_size=1000,
        )
        # An attacker may leave bytes that are not UTF-8 in a text column: read them
        # without failing, so the verifier can report the row.
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        return conn

    async def _check_is_store(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
            "('auditmw_meta', 'auditmw_events')"
        ) as cursor:
            tables = {row[0] for row in await cursor.fetchall()}
        if tables != {"auditmw_meta", "auditmw_events"}:
            raise NotAStoreError(f"{self.path}: not an auditmw store (no auditmw tables)")

    async def _disconnect(self) -> None:
        for conn in (self._read_conn, self._write_conn):
            if conn is not None:
                await conn.close()
        self._read_conn = self._write_conn = None

    async def _commit_batch(self, batch: list[PreparedEvent]) -> list[Event]:
        conn = self._write_conn
        assert conn is not None
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                rows, events = await self._chain(conn, batch)
                await conn.executemany(INSERT, rows)
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"audit store {self.path}: append failed: {exc}") from exc
        return events

    async def _chain(
        self, conn: aiosqlite.Connection, batch: list[PreparedEvent]
    ) -> tuple[list[tuple[Any, ...]], list[Event]]:
        heads: dict[str, tuple[int, str]] = {}
        rows: list[tuple[Any, ...]] = []
        events: list[Event] = []
        for prepared in batch:
            if prepared.log not in heads:
                heads[prepared.log] = await self._head(conn, prepared.log)
            last_seq, prev_hash = heads[prepared.log]
            seq = last_seq + 1
            entry, hash_ = prepared.seal(seq, prev_hash)
            heads[prepared.log] = (seq, hash_)
            values = prepared.columns
            rows.append(
                (
                    prepared.log,
                    seq,
                    prepared.id,
                    prepared.timestamp,
                    values["user_id"],
                    values["user_email"],
                    values["action"],
                    values["resource"],
                    values["resource_id"],
                    values["outcome"],
                    values["ip_address"],
                    values["user_agent"],
                    values["request_id"],
                    prev_hash,
                    hash_,
                    entry,
                )
            )
            events.append(
                Event(
                    id=prepared.id,
                    log=prepared.log,
                    seq=seq,
                    timestamp=prepared.timestamp,
                    action=values["action"],
                    resource=values["resource"],
                    resource_id=values["resource_id"],
                    outcome=values["outcome"],
                    details=values["details"],
                    user_id=values["user_id"],
                    user_email=values["user_email"],
                    ip_address=values["ip_address"],
                    user_agent=values["user_agent"],
                    request_id=values["request_id"],
                    prev_hash=prev_hash,
                    hash=hash_,
                )
            )
        return rows, events

    @staticmethod
    async def _head(conn: aiosqlite.Connection, log: str) -> tuple[int, str]:
        """Last seq and its hash, computed from the stored bytes (not the hash column)."""
        async with conn.execute(
            "SELECT seq, CAST(entry AS BLOB) FROM auditmw_events WHERE log = ? "
            "ORDER BY seq DESC LIMIT 1",
            (log,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return 0, GENESIS_HASH
        return int(row[0]), entry_hash(bytes(row[1]))

    def _reader(self) -> aiosqlite.Connection:
        self._require_open()
        assert self._read_conn is not None
        return self._read_conn

    async def get(self, event_id: str) -> Event | None:
        async with self._reader().execute(
            "SELECT CAST(entry AS BLOB), hash FROM auditmw_events WHERE id = ?", (event_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else Event.from_entry(bytes(row[0]), row[1])

    async def count(self) -> int:
        async with self._reader().execute("SELECT count(*) FROM auditmw_events") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def iter_chain_rows(self) -> AsyncIterator[ChainRow]:
        try:
            async with self._reader().execute(CHAIN_QUERY) as cursor:
                async for row in cursor:
                    yield ChainRow(row[0], row[1], row[2], bytes(row[3]), tuple(row[4:]))
        except sqlite3.Error as exc:
            raise StoreError(f"audit store {self.path}: read failed: {exc}") from exc

    async def schema_warnings(self) -> list[str]:
        async with self._reader().execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'auditmw_events'"
        ) as cursor:
            present = {row[0] for row in await cursor.fetchall()}
        return [
            f"append-only trigger {name} is missing: the table accepts UPDATE/DELETE"
            for name in TRIGGERS
            if name not in present
        ]
