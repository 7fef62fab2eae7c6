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
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Unpack
from urllib.parse import quote

import aiosqlite

from auditmw._errors import (
    EventRefusedError,
    NotAStoreError,
    StoreClosedError,
)
from auditmw._event import (
    GENESIS_HASH,
    Event,
    PreparedEvent,
    chain,
    entry_hash,
)
from auditmw._retention.cuts import CutRecord
from auditmw._stores.rows import CheckpointRow, PersonalUpdate
from auditmw._stores.sql import (
    INSERT_CHECKPOINT,
    Row,
    insert_checkpoint_values,
)
from auditmw._stores.sqlite_check import (
    missing_ranges,
    protection_warnings,
    quick_check,
    warn_if_triggers_were_dropped,
)
from auditmw._stores.sqlite_erase import remove_personal
from auditmw._stores.sqlite_errors import (
    raise_if_partly_committed,
    store_error,
    when_not_busy,
)
from auditmw._stores.sqlite_prune import (
    check_plan,
    delete_batch,
    has_retention_schema,
    migrate,
    record,
)
from auditmw._stores.sqlite_reads import SEARCH_INDEX_MAX_MATCHES, SQLiteReads
from auditmw._stores.sqlite_sql import (
    CHAIN_QUERY,
    CUT_ROWS,
    HEAD_QUERY,
    INSERT,
    LOG_CUT_HEAD,
    ROW_COLUMNS,
    SQLiteDialect,
    has_personal_column,
    insert_rows,
    insert_sql,
    rows_per_insert,
    setup_script,
)
from auditmw._stores.store import AuditStore, StoreOptions
from auditmw._stores.stream_state import SQLITE_STREAM_SQL

if TYPE_CHECKING:
    pass

__all__ = [
    "INSERT",
    "ROW_COLUMNS",
    "SEARCH_INDEX_MAX_MATCHES",
    "SQLiteBackend",
    "SQLiteStore",
]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# After another writer's append or lock refused a batch (see SQLiteBackend._write_batch),
# this many batches are appended the locked way, which reads the heads first, never loses.
LOCKED_BATCHES_AFTER_CONFLICT = 50
# Settings of the write connection beyond journal_mode and synchronous. A group commit
# of ~1000 events dirties pages all over the table and its indexes; SQLite's default
# 2 MiB page cache forgets them between batches and reads them back every time.
WRITE_PRAGMAS = ("PRAGMA cache_size=-65536",)  # 64 MiB, allocated only as used
# INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers unless
# recursive triggers are on: with them on, the append-only trigger stops REPLACE too.
SAFETY_PRAGMAS = ("PRAGMA recursive_triggers=ON",)
T = TypeVar("T")
logger = logging.getLogger("auditmw")


class SQLiteBackend(SQLiteReads):
    """The rows of an audit log in one SQLite file (``SQLiteStore``'s backend).

    ``busy_timeout`` is how long a call may wait for another process's lock.
    """

    tiebreak = int  # the rowid: insertion order
    # A batch also deletes from the search index: 10,000 rows held appends ~0.4 s.
    prune_batch = 2_000
    chain_query = CHAIN_QUERY
    stream_sql = SQLITE_STREAM_SQL

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool,
        synchronous: str,
        busy_timeout: float,
    ) -> None:
        # No defaults here: SQLiteStore's signature is the one place that states them.
        if not busy_timeout > 0:
            raise ValueError("busy_timeout must be a positive number of seconds")
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = Path(path)
        self.dialect = SQLiteDialect()
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
        # How many write transactions found another connection holding the write lock
        # and waited for it (an observable for tests and monitoring; written by the write
        # thread only).
        self.lock_waits = 0

    async def connect(self) -> None:
        self._heads.clear()  # the file may have changed while the store was closed
        if not self._create and not self.path.is_file():
            raise NotAStoreError(f"{self.path}: no such file")
        try:
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="auditmw-sqlite-writer")
            self._write_conn = await self._in_write_thread(self._open_write_connection)
            self._read_conn = await self._open_connection()
            await self._check_is_store(self._read_conn)
            # A store opened with create=False may predate entry format 2: readable, its
            # entries without openings; appends wait until it was opened with create.
            self.writes_format_2 = await self._in_write_thread(
                partial(has_personal_column, self._write_conn)
            )
            self.dialect.personal = "e.personal" if self.writes_format_2 else "NULL"
        except sqlite3.Error as exc:
            await self.disconnect()
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise NotAStoreError(f"{self.path}: not an SQLite database") from exc
            raise store_error(f"{self.path}: cannot open the audit store", exc) from exc
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
                when_not_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"), deadline)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            for pragma in WRITE_PRAGMAS + SAFETY_PRAGMAS:
                conn.execute(pragma)
            if self._create:
                warn_if_triggers_were_dropped(conn, self.path)
                self._set_up(conn)
            # From here on, waiting for the write lock is _write_transaction's job.
            conn.execute("PRAGMA busy_timeout=0")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _set_up(conn: sqlite3.Connection) -> None:
        """Create the store or migrate it (``setup_script``): one script, one transaction,
        so two processes opening it at once do not interleave. When another one migrated
        it between our look and our script (ours then adds the openings column twice),
        look again."""
        for attempt in range(3):
            try:
                conn.executescript(setup_script(conn))
                return
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if attempt == 2 or "duplicate column" not in str(exc):
                    raise

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
                    insert_rows(conn, rows)
                self._heads.update(heads)
        except BaseException as exc:
            self._heads.clear()  # whatever happened, read the heads again next time
            if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
                # A constraint, a trigger's RAISE, a value too big: the data was refused.
                raise EventRefusedError(f"audit store {self.path}: append refused: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                raise store_error(f"audit store {self.path}: append failed", exc) from exc
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
        if len(batch) > rows_per_insert(conn):
            return None  # several statements: only a transaction makes them one
        for log in logs - self._heads.keys():
            self._heads[log] = self._head(conn, log)
        heads = {log: self._heads[log] for log in logs}
        rows, events = chain(batch, heads)
        try:
            conn.execute(insert_sql(len(rows)), list(itertools.chain.from_iterable(rows)))
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            if exc.sqlite_errorcode not in (
                sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY,  # another writer appended since
                sqlite3.SQLITE_BUSY,  # another writer is appending now
            ):
                if isinstance(exc, sqlite3.IntegrityError):
                    raise_if_partly_committed(conn, events, exc, self.path)
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
        when_not_busy(lambda: conn.execute("BEGIN IMMEDIATE"), deadline, self._count_lock_wait)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _count_lock_wait(self) -> None:
        self.lock_waits += 1

    @staticmethod
    def _head(conn: sqlite3.Connection, log: str) -> tuple[int, str]:
        """Last seq and its hash, computed from the stored bytes (not the hash column);
        for a log whose every entry was pruned, its cut."""
        row = conn.execute(HEAD_QUERY, (log,)).fetchone()
        if row is not None:
            return int(row[0]), entry_hash(bytes(row[1]))
        try:
            cut = conn.execute(LOG_CUT_HEAD, (log,)).fetchone()
        except sqlite3.OperationalError:  # a store from before retention: no cut table
            cut = None
        return (0, GENESIS_HASH) if cut is None else (int(cut[0]), str(cut[1]))

    async def schema_warnings(self) -> list[str]:
        return await protection_warnings(
            self._fetch_rows,
            self.writes_format_2,
            await self._has_checkpoint_table(),
            await self._has_cut_table(),
        )

    # --- retention (docs/retention.md; the statements: auditmw._stores.sqlite_prune) -------

    async def _has_cut_table(self) -> bool:
        return await self._has_table("auditmw_cuts")

    async def cut_rows(self) -> list[tuple[object, ...]]:
        if not await self._has_cut_table():
            return []
        return [tuple(row) for row in await self._fetch_rows(CUT_ROWS, [])]

    async def prune(
        self,
        event: PreparedEvent,
        records: list[CutRecord],
        recorded: dict[str, int],
        deadline: float,
    ) -> tuple[Event, int]:
        # On the write thread, like a batch: serialised with appends, and the heads it
        # keeps stay true (the event is chained after the head read in the transaction).
        job = partial(self._prune, event, records, recorded, deadline)
        return await self._in_write_thread(job)

    def _prune(
        self,
        event: PreparedEvent,
        records: list[CutRecord],
        recorded: dict[str, int],
        deadline: float,
    ) -> tuple[Event, int]:
        try:
            with self._write_transaction(deadline) as conn:
                if not has_retention_schema(conn):
                    migrate(conn)  # a store opened with create=False, from before retention
                check_plan(conn, {record.log: record.cut for record in records}, recorded)
                heads = {event.log: self._head(conn, event.log)}
                rows, events = chain([event], heads)
                insert_rows(conn, rows)
                record(conn, records)
            self._heads.update(heads)
        except BaseException as exc:
            self._heads.clear()
            if isinstance(exc, sqlite3.Error):
                raise store_error(f"audit store {self.path}: prune failed", exc) from exc
            raise
        return events[0], 0  # the rows go in batches (delete_pruned)

    async def delete_pruned(self, limit: int) -> int:
        return await self._in_write_thread(partial(self._delete_pruned, limit))

    def _delete_pruned(self, limit: int) -> int:
        try:
            with self._write_transaction() as conn:
                return delete_batch(conn, limit) if has_retention_schema(conn) else 0
        except sqlite3.Error as exc:
            raise store_error(f"audit store {self.path}: prune failed", exc) from exc

    async def storage_damage(self) -> list[str]:
        # On a connection of its own, in a thread: the check reads every page of the file
        # in one statement, which would hold the read connection (and every query of the
        # admin app waiting for it) that long.
        return await asyncio.to_thread(self._quick_check)

    def _quick_check(self) -> list[str]:
        """``quick_check`` of the file, on a connection of its own."""
        try:
            # Waits for another process's lock as the store's other connections do.
            conn = sqlite3.connect(
                self._uri(), uri=True, isolation_level=None, timeout=self._busy_timeout
            )
        except sqlite3.Error as exc:
            raise store_error(f"audit store {self.path}: quick_check failed", exc) from exc
        try:
            return quick_check(conn, self.path)
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
        missing = missing_ranges([row[0] for row in kept], issued)
        if not missing:
            return []
        return [
            f"auditmw_checkpoints holds {len(kept)} of the {issued} checkpoints stored in it "
            f"(ids 1 to {issued}, as its AUTOINCREMENT counter records): id(s) {missing} "
            "were deleted"
        ]

    # --- reading: queries, exports and facets (their SQL: auditmw._stores.sql) ---------------
    # Every statement is built from constant fragments; values are always parameters.

    async def _analyze_between_batches(self) -> None:
        await self._in_write_thread(self._analyze)  # between two group commits

    def _analyze(self) -> None:
        """Sampled ANALYZE of the events table; runs in the write thread."""
        with self._write_transaction() as conn:
            conn.execute("PRAGMA analysis_limit=1000")
            conn.execute("ANALYZE auditmw_events")

    async def remove_personal(self, updates: list[PersonalUpdate]) -> list[str]:
        if self._write_thread is None:
            raise StoreClosedError("the audit store is not open")
        return await self._in_write_thread(partial(self._remove_personal, updates))

    def _remove_personal(self, updates: list[PersonalUpdate]) -> list[str]:
        assert self._write_conn is not None
        try:
            return remove_personal(
                self._write_conn, self._write_transaction, updates, self._busy_timeout
            )
        except sqlite3.Error as exc:
            raise store_error(f"audit store {self.path}: erase failed", exc) from exc

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
            raise store_error(message, exc) from exc
        return cursor.rowcount == 1

    async def _has_checkpoint_table(self) -> bool:
        # A store opened with create=False may predate the table: it has no checkpoints.
        if not self._checkpoint_table:
            self._checkpoint_table = await self._has_table("auditmw_checkpoints")
        return self._checkpoint_table

    async def _has_table(self, name: str) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(await self._fetch_rows(sql, [name]))

    async def _write_rows(self, sql: str, params: Sequence[Any]) -> list[Row]:
        # The read connection is query_only: writes go through the write thread, between
        # two batches, like a checkpoint's.
        if self._write_thread is None:
            raise StoreClosedError("the audit store is not open")
        return await self._in_write_thread(partial(self._write_statement, sql, params))

    def _write_statement(self, sql: str, params: Sequence[Any]) -> list[Row]:
        try:
            with self._write_transaction() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise store_error(f"audit store {self.path}: cannot update a stream", exc) from exc


class SQLiteStore(AuditStore):
    """An audit log in one SQLite file.

    ``create=False`` opens only an existing store (as ``auditmw verify`` does).
    ``synchronous`` is SQLite's durability setting: FULL (default) survives power
    loss; NORMAL may lose the newest commits on power loss (not on a process crash).
    ``busy_timeout`` is how long a call may wait for another process's lock: an append
    fails with ``StoreUnavailableError`` that long after its call, a read once it waited
    that long.
    ``checkpointing`` issues signed checkpoints (``Checkpointing``, docs/checkpoints.md);
    ``limits``, ``max_batch`` and ``max_pending`` are every store's (``AuditStore``).
    """

    backend: SQLiteBackend

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        **options: Unpack[StoreOptions],
    ) -> None:
        backend = SQLiteBackend(
            path, create=create, synchronous=synchronous, busy_timeout=busy_timeout
        )
        super().__init__(backend, append_timeout=busy_timeout, **options)
        self.path = backend.path

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
