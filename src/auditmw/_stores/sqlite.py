"""The embedded store: one SQLite file, WAL mode, append-only by trigger.

Durability: ``synchronous=FULL`` by default, so an event whose append returned
survives a crash or power loss; group commit keeps that affordable. Several
processes may share one file and the chain stays gapless: a batch is chained after
the head this store last wrote or read, and the primary key (log, seq) refuses it if
another writer appended since; it is then chained again after the head read inside
a ``BEGIN IMMEDIATE`` transaction. Never put the file on a network filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import aiosqlite
import orjson

from auditmw._errors import (
    EventRefusedError,
    NotAStoreError,
    StorageDamagedError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)
from auditmw._event import (
    GENESIS_HASH,
    ROW_FIELDS,
    Event,
    Limits,
    PreparedEvent,
    chain,
    entry_hash,
)
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import MIN_SEARCH_INDEX_CHARS, EventFilter
from auditmw._stores.histogram import AFTER_ANY, BEFORE_ANY, BucketLayout
from auditmw._stores.rows import CheckpointRow
from auditmw._stores.sql import (
    EVENTS,
    INSERT_CHECKPOINT,
    SEARCH_COLUMNS,
    Dialect,
    Row,
    Selection,
    escape_like,
    insert_checkpoint_values,
    select,
)
from auditmw._stores.sql_backend import SQLBackend
from auditmw._stores.store import AuditStore
from auditmw._stores.verify import INDEX_COLUMNS

if TYPE_CHECKING:
    from auditmw._transparency.checkpoints import Checkpointing

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

# Search (EventFilter.search) looks in these columns, through the search index defined in
# SCHEMA, or by LIKE (ASCII case-insensitive, as the index, which holds lowercased text).
SEARCH_LIKE = "(" + " OR ".join(f"e.{name} LIKE ? ESCAPE '\\'" for name in SEARCH_COLUMNS) + ")"
# The FTS5 query for a search term: one phrase, so every character is literal.
FTS_PHRASE = """'"' || replace(lower(?), '"', '""') || '"'"""
# Up to this many matches, a search starts from the index (see SQLiteStore._search_index_matches).
SEARCH_INDEX_MAX_MATCHES = 5000
# A histogram counts every match: looking them up through the index beats testing every
# event (about 1 s per million) up to this many times more matches (tens of thousands).
HISTOGRAM_SEARCH_INDEX_FACTOR = 10
# Below this many events the planner's choice of index makes no difference worth an ANALYZE.
STATISTICS_MIN_EVENTS = 1000
# An action prefix is expanded to the actions that have it, up to this many.
MAX_PREFIX_ACTIONS = 1000
# A timestamp as whole microseconds since 1970 (exact integers; strftime is in every SQLite).
TIMESTAMP_MICROS = (
    "(CAST(strftime('%s', substr(e.timestamp, 1, 19)) AS INTEGER) * 1000000 "
    "+ CAST(substr(e.timestamp, 21, 6) AS INTEGER))"
)

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
CREATE INDEX IF NOT EXISTS auditmw_events_resource ON auditmw_events (resource, timestamp);
CREATE INDEX IF NOT EXISTS auditmw_events_resource_id ON auditmw_events (resource_id, timestamp);
CREATE INDEX IF NOT EXISTS auditmw_events_outcome ON auditmw_events (outcome, timestamp);
CREATE TRIGGER IF NOT EXISTS auditmw_events_no_update BEFORE UPDATE ON auditmw_events
BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER IF NOT EXISTS auditmw_events_no_delete BEFORE DELETE ON auditmw_events
BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: DELETE is not allowed'); END;
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('schema_version', '1');
-- Search (EventFilter.search): an FTS5 trigram index of one text per event, its searchable
-- fields lowercased and joined by char(31), a character search terms cannot contain.
-- Contentless (it holds only the index), keyed by the event's rowid, which never changes
-- as the table is append-only. The trigger keeps it in step; the INSERT after it indexes,
-- once, the events of a store created before the index existed.
CREATE VIRTUAL TABLE IF NOT EXISTS auditmw_search USING fts5(
    text, content='', columnsize=0, tokenize='trigram case_sensitive 1');
CREATE TRIGGER IF NOT EXISTS auditmw_events_search AFTER INSERT ON auditmw_events BEGIN
    INSERT INTO auditmw_search (rowid, text) VALUES (new.rowid, lower(coalesce(new.action, '')
        || char(31) || coalesce(new.resource, '') || char(31) || coalesce(new.resource_id, '')
        || char(31) || coalesce(new.user_email, '') || char(31) || coalesce(new.user_id, '')));
END;
INSERT INTO auditmw_search (rowid, text) SELECT rowid, lower(coalesce(action, '')
        || char(31) || coalesce(resource, '') || char(31) || coalesce(resource_id, '')
        || char(31) || coalesce(user_email, '') || char(31) || coalesce(user_id, ''))
    FROM auditmw_events WHERE NOT EXISTS (SELECT 1 FROM auditmw_meta WHERE key = 'search_index');
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('search_index', 'trigram-1');
"""
TRIGGERS = ("auditmw_events_no_update", "auditmw_events_no_delete")
# Signed checkpoints (_transparency.checkpoints): append-only like the events. A store created
# before this table gets it when opened (IF NOT EXISTS).
CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS auditmw_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    log TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    frontier BLOB NOT NULL,
    note BLOB NOT NULL,
    key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS auditmw_checkpoints_log ON auditmw_checkpoints (log, size);
CREATE TRIGGER IF NOT EXISTS auditmw_checkpoints_no_update BEFORE UPDATE ON auditmw_checkpoints
BEGIN SELECT RAISE(ABORT, 'auditmw_checkpoints is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER IF NOT EXISTS auditmw_checkpoints_no_delete BEFORE DELETE ON auditmw_checkpoints
BEGIN SELECT RAISE(ABORT, 'auditmw_checkpoints is append-only: DELETE is not allowed'); END;
"""
CHECKPOINT_TRIGGERS = ("auditmw_checkpoints_no_update", "auditmw_checkpoints_no_delete")
ROW_COLUMNS = ROW_FIELDS  # the events table's columns, in insert order
# Statements below are built from the constant column names above, never from input.
INSERT = (
    f"INSERT INTO auditmw_events ({', '.join(ROW_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
)
# Appends insert up to this many rows per statement (fewer if SQLite's limit on ? per
# statement is lower), not one statement per row with executemany(): SQLite ends every
# statement with a savepoint, at which FTS5 writes what it has buffered out as a new
# index segment, so a statement per row made the search index cost ~4x the rest of the
# insert. One statement also releases the GIL once, not once per row.
ROWS_PER_INSERT = 1024
# After another writer's append or lock refused a batch (see SQLiteStore._write_batch),
# this many batches are appended the locked way, which reads the heads first, never loses.
LOCKED_BATCHES_AFTER_CONFLICT = 50
HEAD_QUERY = (
    "SELECT seq, CAST(entry AS BLOB) FROM auditmw_events WHERE log = ? ORDER BY seq DESC LIMIT 1"
)
# Settings of the write connection beyond journal_mode and synchronous. A group commit
# of ~1000 events dirties pages all over the table and its indexes; SQLite's default
# 2 MiB page cache forgets them between batches and reads them back every time.
WRITE_PRAGMAS = ("PRAGMA cache_size=-65536",)  # 64 MiB, allocated only as used
# INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers unless
# recursive triggers are on: with them on, the append-only trigger stops REPLACE too.
SAFETY_PRAGMAS = ("PRAGMA recursive_triggers=ON",)
CHAIN_QUERY = (
    "SELECT log, CAST(seq AS INTEGER), hash, coalesce(CAST(entry AS BLOB), x''), "  # noqa: S608
    f"{', '.join(INDEX_COLUMNS)} FROM auditmw_events ORDER BY log, seq"
)

# verify's finding lists this many of quick_check's lines (SQLite stops at 100), and
# this many ranges of deleted checkpoint ids.
MAX_QUICK_CHECK_LINES = 10
MAX_RANGES = 10
# SQLite's (primary) result codes of a store that cannot do it now but may later: a lock
# held past busy_timeout, an I/O error, a full disk. (Not CANTOPEN: a missing directory
# or a permission, which waiting does not fix.)
UNAVAILABLE_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)

T = TypeVar("T")
logger = logging.getLogger("auditmw")


class SQLiteDialect(Dialect):
    """SQLite's SQL for the shared statements (``auditmw._stores.sql``)."""

    entry = "CAST(e.entry AS BLOB)"  # an entry edited into text reads as its bytes
    tiebreak = "e.rowid"  # the end of every index: filter, order and keyset in one range

    def keyset(self, position: Keyset) -> tuple[str, list[Any]]:
        timestamp, rowid = position
        return "e.timestamp <= ? AND (e.timestamp < ? OR e.rowid < ?)", [
            timestamp,
            timestamp,
            rowid,
        ]

    def action_in(self, actions: Sequence[str]) -> tuple[str, list[Any]]:
        return "e.action IN (SELECT value FROM json_each(?))", [orjson.dumps(actions).decode()]

    def search(self, term: str) -> tuple[str, list[Any]]:
        return SEARCH_LIKE, ["%" + escape_like(term) + "%"] * len(SEARCH_COLUMNS)


def _when_not_busy(statement: Callable[[], object], deadline: float) -> None:
    """Run ``statement`` again while SQLite answers SQLITE_BUSY, until ``deadline``
    (``time.monotonic()``), polling about every half millisecond."""
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0.0001, 0.0008))  # jitter: waiters do not collide


class SQLiteBackend(SQLBackend):
    """The rows of an audit log in one SQLite file (``SQLiteStore``'s backend).

    ``busy_timeout`` is how long a call may wait for another process's lock.
    """

    tiebreak = int  # the rowid: insertion order
    dialect = SQLiteDialect()
    chain_query = CHAIN_QUERY

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        if not busy_timeout > 0:
            raise ValueError("busy_timeout must be a positive number of seconds")
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = Path(path)
        self._create = create
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        # Appends go through a plain sqlite3 connection owned by one thread, so a whole
        # batch (BEGIN ... COMMIT) is one hop to that thread (see _commit_batch).
        self._write_thread: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: aiosqlite.Connection | None = None
        self._search_index: bool | None = None  # does the file have one? (see query)
        self._search_index_max_matches = SEARCH_INDEX_MAX_MATCHES
        self._statistics_checked = False
        self._checkpoint_table = False  # known to exist (see _has_checkpoint_table)
        # Per log, the last (seq, hash) this store wrote or read; only the write thread
        # touches it. A stale head is harmless: the primary key refuses its seq.
        self._heads: dict[str, tuple[int, str]] = {}
        self._locked_batches = 0  # left to append the locked way (see _write_batch)

    async def connect(self) -> None:
        self._heads.clear()  # the file may have changed while the store was closed
        if not self._create and not self.path.is_file():
            raise NotAStoreError(f"{self.path}: no such file")
        try:
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="auditmw-sqlite-writer")
            self._write_conn = await self._in_write_thread(self._open_write_connection)
            self._read_conn = await self._open_connection()
            await self._check_is_store(self._read_conn)
        except sqlite3.Error as exc:
            await self.disconnect()
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise NotAStoreError(f"{self.path}: not an SQLite database") from exc
            raise _store_error(f"{self.path}: cannot open the audit store", exc) from exc
        except BaseException:
            await self.disconnect()
            raise

    def _uri(self) -> str:
        mode = "rwc" if self._create else "rw"
        return f"file:{quote(str(self.path.absolute()))}?mode={mode}"

    def _open_write_connection(self) -> sqlite3.Connection:
        """Open (and with ``create``, set up) the store; runs in the write thread."""
        conn = sqlite3.connect(
            self._uri(), uri=True, isolation_level=None, timeout=self._busy_timeout
        )
        try:
            if self._create:
                # Turning a new file to WAL takes an exclusive lock without calling the
                # busy handler: two processes creating one store at once need a retry.
                deadline = time.monotonic() + self._busy_timeout
                _when_not_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"), deadline)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            for pragma in WRITE_PRAGMAS + SAFETY_PRAGMAS:
                conn.execute(pragma)
            if self._create:
                _warn_if_triggers_were_dropped(conn, self.path)
                # One script, one transaction: two processes creating the store at
                # once must not interleave (executescript commits what came before).
                conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + CHECKPOINT_SCHEMA + "COMMIT;")
            # From here on, waiting for the write lock is _write_transaction's job.
            conn.execute("PRAGMA busy_timeout=0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _in_write_thread(self, function: Callable[[], T]) -> asyncio.Future[T]:
        assert self._write_thread is not None
        return asyncio.get_running_loop().run_in_executor(self._write_thread, function)

    async def _open_connection(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(
            self._uri(),
            uri=True,
            isolation_level=None,
            timeout=self._busy_timeout,
            iter_chunk_size=1000,
        )
        # An attacker may leave bytes that are not UTF-8 in a text column: read them
        # without failing, so the verifier can report the row.
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        # Reads never write: even an injected statement on this connection cannot.
        await conn.execute("PRAGMA query_only=ON")
        return conn

    async def _check_is_store(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
            "('auditmw_meta', 'auditmw_events')"
        ) as cursor:
            tables = {row[0] for row in await cursor.fetchall()}
        if tables != {"auditmw_meta", "auditmw_events"}:
            raise NotAStoreError(f"{self.path}: not an auditmw store (no auditmw tables)")

    async def disconnect(self) -> None:
        read_conn, write_conn, write_thread = self._read_conn, self._write_conn, self._write_thread
        self._read_conn = self._write_conn = self._write_thread = None
        try:
            if read_conn is not None:
                await read_conn.close()
        finally:
            if write_thread is not None:
                if write_conn is not None:
                    await asyncio.get_running_loop().run_in_executor(write_thread, write_conn.close)
                write_thread.shutdown(wait=False)  # idle: the writer has stopped

    async def append_batch(self, batch: list[PreparedEvent], deadline: float) -> list[Event]:
        # The whole transaction is one job for the write thread: one thread hop per
        # batch instead of one per statement (aiosqlite), and the event loop stays free
        # while SQLite inserts and fsyncs.
        return await self._in_write_thread(partial(self._write_batch, batch, deadline))

    def _write_batch(self, batch: list[PreparedEvent], deadline: float) -> list[Event]:
        """Append ``batch`` (in the write thread), as one transaction.

        First as one INSERT chained after the heads this store knows (see
        _append_after_known_heads); when that cannot be done, inside a ``BEGIN
        IMMEDIATE`` transaction after the heads read there. That path waits for the lock
        (until ``deadline``) and then always progresses, so a writer losing races is never
        starved.
        """
        conn = self._write_conn
        assert conn is not None
        logs = {prepared.log for prepared in batch}
        try:
            events = self._append_after_known_heads(conn, batch, logs)
            if events is None:
                with self._write_transaction(deadline) as conn:
                    heads = {log: self._head(conn, log) for log in logs}
                    rows, events = chain(batch, heads)
                    _insert_rows(conn, rows)
                self._heads.update(heads)
        except BaseException as exc:
            self._heads.clear()  # whatever happened, read the heads again next time
            if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
                # A constraint, a trigger's RAISE, a value too big: the data was refused.
                raise EventRefusedError(f"audit store {self.path}: append refused: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                raise _store_error(f"audit store {self.path}: append failed", exc) from exc
            raise
        return events

    def _append_after_known_heads(
        self, conn: sqlite3.Connection, batch: list[PreparedEvent], logs: set[str]
    ) -> list[Event] | None:
        """Append ``batch`` as a single INSERT in autocommit mode, chained after the
        heads this store knows; None if it did not (nothing was written).

        One statement is one trip out of the GIL for the whole transaction, fsync
        included: a thread that must take the GIL back several times per batch waits for
        the busy event loop each time, and that was most of a commit's latency. The
        primary key (log, seq) refuses the batch if another writer appended since.
        """
        if self._locked_batches:
            self._locked_batches -= 1
            return None
        if len(batch) > _rows_per_insert(conn):
            return None  # several statements: only a transaction makes them one
        for log in logs - self._heads.keys():
            self._heads[log] = self._head(conn, log)
        heads = {log: self._heads[log] for log in logs}
        rows, events = chain(batch, heads)
        try:
            conn.execute(_insert_sql(len(rows)), list(itertools.chain.from_iterable(rows)))
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            if exc.sqlite_errorcode not in (
                sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY,  # another writer appended since
                sqlite3.SQLITE_BUSY,  # another writer is appending now
            ):
                if isinstance(exc, sqlite3.IntegrityError):
                    _raise_if_partly_committed(conn, events, exc, self.path)
                raise
            # While others append too, guesses would mostly lose (and retrying a whole
            # INSERT costs more than polling BEGIN IMMEDIATE): go the locked way a while.
            self._locked_batches = LOCKED_BATCHES_AFTER_CONFLICT
            return None
        self._heads.update(heads)
        return events

    @contextlib.contextmanager
    def _write_transaction(self, deadline: float | None = None) -> Iterator[sqlite3.Connection]:
        """One transaction on the write connection (in the write thread): committed when
        the block ends, rolled back when it raises. Every write goes through here but
        the single-INSERT append (_append_after_known_heads).

        The write lock is waited for here, until ``deadline`` (``time.monotonic()``; by
        default ``busy_timeout`` from now), polled about every half millisecond rather
        than through SQLite's busy handler: its sleeps grow to 100 ms, and a process that
        looks that rarely almost never finds the lock free between another busy
        process's back-to-back commits (it starved for up to a second with three
        processes appending flat out).
        """
        conn = self._write_conn
        assert conn is not None
        if deadline is None:
            deadline = time.monotonic() + self._busy_timeout
        _when_not_busy(lambda: conn.execute("BEGIN IMMEDIATE"), deadline)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _head(conn: sqlite3.Connection, log: str) -> tuple[int, str]:
        """Last seq and its hash, computed from the stored bytes (not the hash column)."""
        row = conn.execute(HEAD_QUERY, (log,)).fetchone()
        if row is None:
            return 0, GENESIS_HASH
        return int(row[0]), entry_hash(bytes(row[1]))

    def _reader(self) -> aiosqlite.Connection:
        if self._read_conn is None:
            raise StoreClosedError("the audit store is not open")
        return self._read_conn

    async def schema_warnings(self) -> list[str]:
        rows = await self._fetch_rows(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'auditmw_events'",
            [],
        )
        present = {row[0] for row in rows}
        return [
            f"append-only trigger {name} is missing: the table accepts UPDATE/DELETE"
            for name in TRIGGERS
            if name not in present
        ] + await self._checkpoint_schema_warnings()

    async def storage_damage(self) -> list[str]:
        # On a connection of its own, in a thread: the check reads every page of the file
        # in one statement, which would hold the read connection (and every query of the
        # admin app waiting for it) that long.
        return await asyncio.to_thread(self._quick_check)

    def _quick_check(self) -> list[str]:
        """SQLite's own check of every page of the file (``PRAGMA quick_check``: the
        structure of each table and index b-tree, the free list, NOT NULL constraints;
        not whether indexes hold the same rows as their table, which ``integrity_check``
        adds at several times the cost). Damaged pages are named by the table or index
        they belong to when SQLite's ``dbstat`` table can tell."""
        # Waits for another process's lock as the store's other connections do.
        conn = sqlite3.connect(
            self._uri(), uri=True, isolation_level=None, timeout=self._busy_timeout
        )
        try:
            conn.execute("PRAGMA query_only=ON")
            try:
                lines = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
            except sqlite3.DatabaseError as exc:  # a damaged page can stop the check itself
                if not _is_damage(exc):
                    message = f"audit store {self.path}: quick_check failed"
                    raise _store_error(message, exc) from exc
                lines = [str(exc)]
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
            objects = _damaged_objects(conn)
            if objects:
                message += f"; damaged pages belong to {', '.join(objects)}"
            return [message]
        finally:
            conn.close()

    async def removed_checkpoints(self) -> list[str]:
        """Checkpoint ids the table gave out and no longer holds. Its AUTOINCREMENT counter
        (``sqlite_sequence``) is updated in the transaction of each insert, so it counts
        exactly the checkpoints ever committed: ids 1 to it, each one still there unless
        someone deleted it (the append-only triggers stop that, unless dropped first)."""
        if not await self._has_checkpoint_table():
            return []
        rows = await self._fetch_rows(
            "SELECT seq FROM sqlite_sequence WHERE name = 'auditmw_checkpoints'", []
        )
        issued = rows[0][0] if rows else 0
        if type(issued) is not int:
            return [
                f"the id counter of auditmw_checkpoints in sqlite_sequence was edited: {issued!r}"
            ]
        kept = await self._fetch_rows(
            "SELECT id FROM auditmw_checkpoints WHERE id BETWEEN 1 AND ? ORDER BY id", [issued]
        )
        missing = _missing_ranges([row[0] for row in kept], issued)
        if not missing:
            return []
        return [
            f"auditmw_checkpoints holds {len(kept)} of the {issued} checkpoints stored in it "
            f"(ids 1 to {issued}, as its AUTOINCREMENT counter records): id(s) {missing} "
            "were deleted"
        ]

    # --- reading: queries, exports and facets (see auditmw._stores.query) ------------------------
    # Every statement is built from constant fragments; values are always parameters.

    async def page(
        self, filter: EventFilter, limit: int, position: Keyset | None, offset: int
    ) -> tuple[list[Event], Keyset | None]:
        await self._refresh_statistics()
        return await super().page(filter, limit, position, offset)

    async def distinct_values(self, column: str, limit: int) -> list[str]:
        return await self._distinct(column, "", limit)

    async def _distinct(self, column: str, prefix: str, limit: int) -> list[str]:
        """Distinct values of an indexed column starting with ``prefix``, in order.

        A loose index scan: each step seeks the next greater value, so the cost grows with
        the number of distinct values, not of rows.
        """
        sql = (
            f"WITH RECURSIVE v(value) AS ("  # noqa: S608 (column is one of FACET_COLUMNS)
            f"SELECT (SELECT min({column}) FROM auditmw_events WHERE {column} >= ?1) "
            f"UNION ALL SELECT (SELECT min({column}) FROM auditmw_events "
            f"WHERE {column} > v.value) FROM v "
            "WHERE v.value IS NOT NULL AND substr(v.value, 1, length(?1)) = ?1) "
            "SELECT value FROM v WHERE value IS NOT NULL AND substr(value, 1, length(?1)) = ?1 "
            "LIMIT ?2"
        )
        rows = await self._fetch_rows(sql, [prefix, limit])
        # A value that is not valid UTF-8 (written behind the library's back) is skipped.
        return [row[0] for row in rows if _is_text(row[0])]

    async def _selection(
        self,
        filter: EventFilter,
        *,
        newest_first: bool,
        counting: bool = False,
    ) -> Selection:
        """The events matching ``filter`` (``auditmw._stores.sql.select``), planned for SQLite.

        An action prefix, newest first, reads as ``action IN`` the distinct actions with
        that prefix: for each, SQLite reads its (action, timestamp) index newest first and
        stops once a page is full (exports read in chain order anyway). A search for a
        rare term starts from the search index: ``CROSS JOIN`` makes SQLite look up those
        few events by rowid.
        """
        actions = None
        prefix = filter.action_prefix
        if prefix and newest_first:
            actions = await self._distinct("action", prefix, MAX_PREFIX_ACTIONS + 1)
            if len(actions) > MAX_PREFIX_ACTIONS:
                actions = None
        matches = None
        if filter.search:
            max_matches = self._histogram_search_index_max_matches if counting else None
            matches = await self._search_index_matches(filter.search, max_matches)
        if matches is None:
            return select(filter, self.dialect, actions=actions)
        selection = select(dataclasses.replace(filter, search=None), self.dialect, actions=actions)
        selection.source = (
            "(SELECT value AS r FROM json_each(?)) AS m "
            "CROSS JOIN auditmw_events AS e ON e.rowid = m.r"
        )
        selection.source_params = [orjson.dumps(matches).decode()]
        return selection

    async def interval_counts(self, filter: EventFilter, layout: BucketLayout) -> list[int]:
        """Per interval, a count of its range of the index the filters choose.

        GROUP BY a bucket number computed from every row's timestamp costs a date function
        and a sort entry per row (0.6 s for a million events); counting each interval's
        range of the (filter column, timestamp) index reads index entries only, in order
        (45 ms). A search that starts from its index has its (at most tens of thousands
        of) rows looked up by rowid once and grouped by bucket number instead.
        """
        # The intervals' bounds stand in for the filter's own: with both, SQLite would
        # read every interval's index range from ``since`` on.
        lower, upper = filter.since or BEFORE_ANY, filter.until or AFTER_ANY
        selection = await self._selection(
            dataclasses.replace(filter, since=None, until=None), newest_first=True, counting=True
        )
        await self._refresh_statistics()
        if selection.source != EVENTS:
            bucket = f"ifnull(min(max(({TIMESTAMP_MICROS} - ?) / ?, 0), ?), 0)"
            selection.add("e.timestamp >= ? AND e.timestamp < ?", [lower, upper])
            sql, params = selection.read(f"{bucket} AS bucket, count(*)", " GROUP BY bucket")
            rows = await self._fetch_rows(
                sql, [layout.origin, layout.step, layout.count - 1, *params]
            )
            counts = [0] * layout.count
            for bucket_number, count in rows:
                counts[bucket_number] = count
            return counts
        selection.add(
            "e.timestamp >= json_extract(b.value, '$[0]') "
            "AND e.timestamp < json_extract(b.value, '$[1]')",
            [],
        )
        count, params = selection.read("count(*)")
        intervals = itertools.pairwise([lower, *layout.edges, upper])
        rows = await self._fetch_rows(
            f"SELECT ({count}) FROM json_each(?) AS b ORDER BY b.key",  # noqa: S608
            [*params, orjson.dumps(list(intervals)).decode()],
        )
        return [int(row[0]) for row in rows]

    @property
    def _histogram_search_index_max_matches(self) -> int:
        # Every match is read (a page needs its first few): the index pays off longer.
        return HISTOGRAM_SEARCH_INDEX_FACTOR * self._search_index_max_matches

    async def _search_index_matches(
        self, term: str, max_matches: int | None = None
    ) -> list[int] | None:
        """The rowids of the events containing ``term``, from the search index, when it
        can answer (a term of 3+ characters) and they are few (at most ``max_matches``,
        by default ``SEARCH_INDEX_MAX_MATCHES``).

        Otherwise (None) the query reads events newest first, through the index of the
        other filters, and tests each with LIKE (ASCII case-insensitive, like the index):
        for a common term a page fills after a few rows. A rare one would make that read
        most of the table, so its few matches are looked up by rowid instead.
        """
        if max_matches is None:
            max_matches = self._search_index_max_matches
        if len(term) < MIN_SEARCH_INDEX_CHARS or not await self._has_search_index():
            return None
        rows = await self._fetch_rows(
            "SELECT rowid FROM auditmw_search "  # noqa: S608
            f"WHERE auditmw_search MATCH {FTS_PHRASE} LIMIT ?",
            [term, max_matches + 1],
        )
        if len(rows) > max_matches:
            return None
        return [row[0] for row in rows]

    async def _refresh_statistics(self) -> None:
        """Give SQLite's planner statistics, once per open store, when they are missing
        or the log has grown tenfold since.

        With two filters (a user and an action, say) SQLite must guess which index narrows
        more; without statistics it may walk the wrong one, for thousands of rows. A
        sampled ANALYZE takes about 0.2 s at a million events. Best effort: a read-only
        or busy file is left as it is.
        """
        if self._statistics_checked or self._write_conn is None:
            return
        self._statistics_checked = True
        try:
            analyzed = 0  # events when the statistics were taken (the first number of stat)
            if await self._fetch_rows(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'", []
            ):
                rows = await self._fetch_rows(
                    "SELECT stat FROM sqlite_stat1 WHERE idx = 'auditmw_events_time'", []
                )
                analyzed = int(str(rows[0][0]).split()[0]) if rows else 0
            rows = await self._fetch_rows("SELECT max(rowid) FROM auditmw_events", [])
            events = int(rows[0][0] or 0)  # the table is append-only: rowids count events
            if events >= STATISTICS_MIN_EVENTS and analyzed * 10 < events:
                await self._in_write_thread(self._analyze)  # between two group commits
        except (sqlite3.Error, StoreError) as exc:
            logger.debug("%s: could not refresh planner statistics: %s", self.path, exc)

    def _analyze(self) -> None:
        """Sampled ANALYZE of the events table; runs in the write thread."""
        with self._write_transaction() as conn:
            conn.execute("PRAGMA analysis_limit=1000")
            conn.execute("ANALYZE auditmw_events")

    async def _has_search_index(self) -> bool:
        # A store opened with create=False may predate the index: then search scans.
        if self._search_index is None:
            rows = await self._fetch_rows(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'auditmw_search'",
                [],
            )
            self._search_index = bool(rows)
        return self._search_index

    async def _fetch_rows(
        self, sql: str, params: Sequence[Any], *, custom_plan: bool = False
    ) -> list[Row]:
        # (SQLite plans every statement for its values.)
        try:
            async with self._reader().execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    async def _stream_rows(self, sql: str, params: Sequence[Any]) -> AsyncIterator[Row]:
        try:
            async with self._reader().execute(sql, params) as rows:
                async for row in rows:
                    yield row
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def _read_error(self, exc: sqlite3.Error) -> StoreError:
        return _store_error(f"audit store {self.path}: read failed", exc)

    # --- signed checkpoints (auditmw._transparency.checkpoints, table auditmw_checkpoints) --

    async def insert_checkpoint(self, row: CheckpointRow) -> bool:
        if self._write_thread is None:
            raise StoreClosedError("the audit store is not open")
        # On the write thread, between two batches: never inside a batch's transaction,
        # never on the connection at the same time as one.
        return await self._in_write_thread(partial(self._write_checkpoint, row))

    def _write_checkpoint(self, row: CheckpointRow) -> bool:
        try:
            with self._write_transaction() as conn:
                cursor = conn.execute(INSERT_CHECKPOINT, insert_checkpoint_values(row))
        except sqlite3.Error as exc:
            message = f"audit store {self.path}: cannot store a checkpoint"
            raise _store_error(message, exc) from exc
        return cursor.rowcount == 1

    async def _has_checkpoint_table(self) -> bool:
        # A store opened with create=False may predate the table: it has no checkpoints.
        if not self._checkpoint_table:
            rows = await self._fetch_rows(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'auditmw_checkpoints'",
                [],
            )
            self._checkpoint_table = bool(rows)
        return self._checkpoint_table

    async def _checkpoint_schema_warnings(self) -> list[str]:
        if not await self._has_checkpoint_table():
            return []
        rows = await self._fetch_rows(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' "
            "AND tbl_name = 'auditmw_checkpoints'",
            [],
        )
        present = {row[0] for row in rows}
        return [
            f"append-only trigger {name} is missing: auditmw_checkpoints accepts UPDATE/DELETE"
            for name in CHECKPOINT_TRIGGERS
            if name not in present
        ]


def _store_error(message: str, exc: sqlite3.Error) -> StoreError:
    """``message: exc`` as ``StorageDamagedError`` when SQLite found the file damaged,
    ``StoreUnavailableError`` when it says "not now" (see UNAVAILABLE_CODES), else as
    ``StoreError``."""
    code = getattr(exc, "sqlite_errorcode", None)  # absent on the module's own errors
    if _is_damage(exc):
        return StorageDamagedError(f"{message}: {exc}")
    unavailable = code is not None and code & 0xFF in UNAVAILABLE_CODES
    return (StoreUnavailableError if unavailable else StoreError)(f"{message}: {exc}")


@functools.cache
def _insert_sql(rows: int) -> str:
    """An INSERT of ``rows`` rows (built from the constant column names only)."""
    values = ", ".join(["(" + ", ".join("?" * len(ROW_COLUMNS)) + ")"] * rows)
    return f"INSERT INTO auditmw_events ({', '.join(ROW_COLUMNS)}) VALUES {values}"  # noqa: S608


def _rows_per_insert(conn: sqlite3.Connection) -> int:
    """How many rows one INSERT takes: ROWS_PER_INSERT, or fewer if SQLite allows
    fewer ? per statement."""
    max_rows = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(ROW_COLUMNS)
    return max(1, min(ROWS_PER_INSERT, max_rows))


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` in few statements (see ROWS_PER_INSERT)."""
    size = _rows_per_insert(conn)
    done = 0
    while done < len(rows):
        # The rest in halving sizes: only a dozen statement sizes ever exist, each
        # prepared once and then found in the connection's statement cache.
        while size > len(rows) - done:
            size //= 2
        params = list(itertools.chain.from_iterable(rows[done : done + size]))
        conn.execute(_insert_sql(size), params)
        done += size


def _raise_if_partly_committed(
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


def _warn_if_triggers_were_dropped(conn: sqlite3.Connection, path: Path) -> None:
    """Opening re-creates missing triggers; say so, as their absence is evidence."""
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    if ("auditmw_events" in names and any(name not in names for name in TRIGGERS)) or (
        "auditmw_checkpoints" in names and any(name not in names for name in CHECKPOINT_TRIGGERS)
    ):
        logger.warning(
            "%s: append-only triggers were missing and are being re-created; "
            "run `auditmw verify` on this store",
            path,
        )


def _is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite found the file damaged (SQLITE_CORRUPT and its extended codes, or
    SQLITE_NOTADB: a page that is not what it should be)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _damaged_objects(conn: sqlite3.Connection) -> list[str]:
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


def _missing_ranges(ids: list[int], last: int) -> str:
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


def _is_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SQLiteStore(AuditStore):
    """An audit log in one SQLite file.

    ``create=False`` opens only an existing store (as ``auditmw verify`` does).
    ``synchronous`` is SQLite's durability setting: FULL (default) survives power
    loss; NORMAL may lose the newest commits on power loss (not on a process crash).
    ``busy_timeout`` is how long a call may wait for another process's lock: an append
    fails with ``StoreUnavailableError`` that long after its call, a read once it waited
    that long.
    ``checkpointing`` issues signed checkpoints (``Checkpointing``, docs/checkpoints.md).
    """

    backend: SQLiteBackend

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
        checkpointing: Checkpointing | None = None,
    ) -> None:
        backend = SQLiteBackend(
            path, create=create, synchronous=synchronous, busy_timeout=busy_timeout
        )
        super().__init__(
            backend,
            limits=limits,
            max_batch=max_batch,
            max_pending=max_pending,
            checkpointing=checkpointing,
            append_timeout=busy_timeout,
        )
        self.path = backend.path

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
