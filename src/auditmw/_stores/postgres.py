"""The PostgreSQL store: one log shared by many processes on many hosts.

Same guarantees as the SQLite store, on a server:

- entry bytes stored as ``bytea`` (never ``jsonb``: it reorders keys and rejects ``\\u0000``);
- append-only by triggers that reject UPDATE, DELETE and TRUNCATE;
- one gapless chain per log across connections and hosts: a batch takes a
  transaction-scoped advisory lock on its log, then reads the head — at READ COMMITTED
  each statement sees what the previous lock holder committed (a REPEATABLE READ snapshot
  would be stale), and no ``serial`` column is used for ``seq`` (those leave gaps);
- group commit, as in every store: concurrent appends in a process share a transaction;
- a lost connection is retried: every event carries its id before it is sent, so after
  reconnecting the store asks which ids committed and never writes an event twice;
- every call to the server is bounded (``connect_timeout``, ``command_timeout``, and for
  an append ``retry_for`` from its call): a server that is down or frozen makes calls fail
  with ``StoreUnavailableError`` in bounded time, never hang (asyncpg waits forever by
  default).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Unpack

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auditmw._errors import (
    NotAStoreError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)
from auditmw._event import (
    ROW_FIELDS,
    Event,
    PreparedEvent,
    chain,
)
from auditmw._retention.cuts import CutRecord
from auditmw._stores.filters import EventFilter, ascii_lower
from auditmw._stores.histogram import AFTER_ANY, BEFORE_ANY, BucketLayout
from auditmw._stores.postgres_check import protection_warnings
from auditmw._stores.postgres_erase import remove_personal
from auditmw._stores.postgres_errors import (
    DRIVER_ERRORS,
    error_text,
    is_data_refusal,
    is_server_refusal,
    is_unavailable,
    refused,
    store_error,
)
from auditmw._stores.postgres_retention import (
    CUT_ROWS,
    delete_batch,
    lock_head,
    record_prune,
)
from auditmw._stores.postgres_schema import (
    SCHEMA_VERSION,
    SEARCH_TEXT,
    create_schema,
    ensure_retention_schema,
    store_exists,
)
from auditmw._stores.rows import CheckpointRow, PersonalUpdate
from auditmw._stores.sql import (
    INSERT_CHECKPOINT,
    NumberedDialect,
    Row,
    escape_like,
    insert_checkpoint_values,
    select,
)
from auditmw._stores.sql_backend import SQLBackend
from auditmw._stores.store import AuditStore, StoreOptions
from auditmw._stores.stream_state import POSTGRES_STREAM_SQL
from auditmw._stores.verify import INDEX_COLUMNS

if TYPE_CHECKING:
    pass

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "PostgresStore"]

logger = logging.getLogger("auditmw")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

ROW_COLUMNS = ROW_FIELDS  # the events table's columns, in insert order
# Statements are built from the constant column names above, never from input.
INSERT = (
    f"INSERT INTO auditmw_events ({', '.join(ROW_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(ROW_COLUMNS) + 1))})"
)
CHAIN_QUERY = (
    # A NULL entry (in a table rebuilt without NOT NULL) reads as no bytes: damage to
    # report, not a crash.
    f"SELECT log, seq, hash, coalesce(entry, ''::bytea), {', '.join(INDEX_COLUMNS)}, "  # noqa: S608
    "{personal} FROM auditmw_events AS e ORDER BY log, seq"
)


class PostgresDialect(NumberedDialect):
    """PostgreSQL's SQL for the shared statements (``auditmw._stores.sql``): newest first
    by timestamp, ties broken by the time-ordered id; every text column uses the "C"
    collation (byte order, like SQLite)."""

    def action_prefix(self, prefix: str) -> tuple[str, list[Any]]:
        return "e.action LIKE ? ESCAPE '\\'", [escape_like(prefix) + "%"]

    def search(self, term: str) -> tuple[str, list[Any]]:
        # The expression of the trigram index (SEARCH_TEXT), so the index answers it.
        return f"{SEARCH_TEXT} LIKE ? ESCAPE '\\'", ["%" + escape_like(ascii_lower(term)) + "%"]


class PostgresBackend(SQLBackend):
    """The rows of an audit log in a PostgreSQL schema (``PostgresStore``'s backend);
    the time limits are ``PostgresStore``'s."""

    tiebreak = str  # the event id: time-ordered
    chain_query = CHAIN_QUERY
    stream_sql = POSTGRES_STREAM_SQL  # written through pooled connections, autocommit

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        create: bool,
        pool_size: int,
        retry_for: float,
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        # No defaults here: PostgresStore's signature is the one place that states them.
        if not _SCHEMA_NAME.match(schema):
            raise ValueError("schema must be a lowercase SQL identifier")
        timeouts = {
            "retry_for": retry_for,
            "connect_timeout": connect_timeout,
            "command_timeout": command_timeout,
        }
        for name, value in timeouts.items():
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        self.dsn = dsn
        self.schema = schema
        self.dialect = PostgresDialect()
        self._create = create
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._write_conn: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._checkpoint_table = False  # known to exist (see _has_checkpoint_table)

    @property
    def writer_pid(self) -> int | None:
        """The server process id of the live connection appends go through (what
        ``pg_terminate_backend`` takes); None while there is none."""
        conn = self._write_conn
        if conn is None or conn.is_closed():
            return None
        return int(conn.get_server_pid())

    @property
    def _settings(self) -> dict[str, str]:
        # The schema goes in as a connection setting, so SQL text never includes it.
        return {"search_path": self.schema, "application_name": "auditmw"}

    async def connect(self) -> None:
        try:
            conn = await self._new_connection()
            try:
                if self._create:
                    await create_schema(conn, self.schema)
            finally:
                await conn.close()
            self._write_conn = await self._connect_writer()
            await self._check_is_store(self._write_conn)
            # A store opened with create=False may predate entry format 2: readable, its
            # entries without openings; appends wait until its owner migrated it.
            self.writes_format_2 = bool(
                await self._write_conn.fetchval(
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 "
                    "AND table_name = 'auditmw_events' AND column_name = 'personal'",
                    self.schema,
                )
            )
            self.dialect.personal = "e.personal" if self.writes_format_2 else "NULL"
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                server_settings=self._settings,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
            )
        except BaseException as exc:
            await self.disconnect()
            if isinstance(exc, DRIVER_ERRORS):
                raise store_error("cannot open the PostgreSQL audit store", exc) from exc
            raise

    async def _new_connection(self, **options: Any) -> asyncpg.Connection:
        """A connection with the store's time limits (asyncpg has none by default)."""
        return await asyncpg.connect(
            self.dsn,
            timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            **options,
        )

    async def _connect_writer(self) -> asyncpg.Connection:
        return await self._new_connection(server_settings=self._settings)

    async def _check_is_store(self, conn: asyncpg.Connection) -> None:
        if not await store_exists(conn, self.schema):
            raise NotAStoreError(f"schema {self.schema!r} holds no auditmw store")

    async def disconnect(self) -> None:
        pool, conn = self._pool, self._write_conn
        self._pool = self._write_conn = None
        try:
            # Politely, within a time limit: a frozen server gets no goodbye.
            async with asyncio.timeout(self._command_timeout):
                if pool is not None:
                    await pool.close()
                if conn is not None and not conn.is_closed():
                    await conn.close()
        except DRIVER_ERRORS as exc:
            logger.warning(
                "PostgreSQL audit store: connections closed abruptly: %s", error_text(exc)
            )
            if pool is not None:
                pool.terminate()
            if conn is not None:
                conn.terminate()

    async def append_batch(self, batch: list[PreparedEvent], deadline: float) -> list[Event]:
        while True:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    return await self._try_commit(batch)
            except StoreError:
                raise
            except Exception as exc:
                if is_data_refusal(exc):
                    raise refused(exc) from exc
                if is_server_refusal(exc) and not is_unavailable(exc):
                    raise StoreError(f"PostgreSQL audit store: append failed: {exc}") from exc
                # The connection is lost or in an unknown state (a statement timed out), or
                # the server said "not now": drop it; the next try reconnects and first
                # checks whether the batch committed.
                conn, self._write_conn = self._write_conn, None
                if conn is not None:
                    conn.terminate()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    message = f"PostgreSQL audit store unreachable: {error_text(exc)}"
                    raise StoreUnavailableError(message) from exc
                await asyncio.sleep(min(0.1, remaining))

    async def _try_commit(self, batch: list[PreparedEvent]) -> list[Event]:
        """One try to commit ``batch``, on a new connection after a failed try: which first
        asks whether the lost try had committed."""
        conn = self._write_conn
        if conn is None:
            conn = self._write_conn = await self._connect_writer()
            committed = await self._committed(conn, batch)
            if committed is not None:
                return committed  # the lost commit had gone through
        try:
            return await self._insert(conn, batch)
        except asyncpg.UniqueViolationError as exc:
            # A transaction we lost track of committed after all (its backend outlived
            # our connection): the ids are there, report them.
            committed = await self._committed(conn, batch)
            if committed is None:  # e.g. a unique index an operator added
                raise refused(exc) from exc
            return committed

    async def _insert(self, conn: asyncpg.Connection, batch: list[PreparedEvent]) -> list[Event]:
        async with conn.transaction():  # READ COMMITTED, the server default
            # Every writer locks the logs of its batch in one order (sorted): two batches
            # that share logs never hold one lock each while waiting for the other's.
            heads: dict[str, tuple[int, str]] = {}
            for log in sorted({prepared.log for prepared in batch}):
                heads[log] = await lock_head(conn, log)
            rows, events = chain(batch, heads)
            await conn.executemany(INSERT, rows)
        return events

    async def _committed(
        self, conn: asyncpg.Connection, batch: list[PreparedEvent]
    ) -> list[Event] | None:
        """The batch as stored when its transaction committed before the connection
        was lost; None when it did not (a transaction is all or nothing)."""
        records = await conn.fetch(
            "SELECT id, hash, entry, personal FROM auditmw_events WHERE id = ANY($1::text[])",
            [prepared.id for prepared in batch],
        )
        if not records:
            return None
        by_id = {
            row["id"]: Event.from_entry(row["entry"], row["hash"], row["personal"])
            for row in records
        }
        return [by_id[prepared.id] for prepared in batch]

    @contextlib.asynccontextmanager
    async def _connection(self, failed: str = "read failed") -> AsyncIterator[PoolConnectionProxy]:
        """A pooled connection (for reads and checkpoints), waited for at most
        ``command_timeout``. asyncpg's errors become ``StoreError`` ("...: ``failed``: why"):
        ``StoreUnavailableError`` when the server is unreachable, too slow or says "not
        now". A connection left in an unknown state (a statement timed out, was
        cancelled) is dropped, not reused."""
        if self._pool is None:
            raise StoreClosedError("the audit store is not open")
        try:
            async with self._pool.acquire(timeout=self._command_timeout) as conn:
                try:
                    yield conn
                except BaseException as exc:
                    if is_unavailable(exc) or isinstance(exc, asyncio.CancelledError):
                        # (A connection the server closed went back to the pool already.)
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                    raise
        except DRIVER_ERRORS as exc:
            raise store_error(f"PostgreSQL audit store: {failed}", exc) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def _fetch_rows(
        self, sql: str, params: Sequence[Any], *, custom_plan: bool = False
    ) -> list[Row]:
        if not custom_plan:
            return await self._fetch(sql, *params)
        # After five runs of a prepared statement PostgreSQL may keep a generic plan, made
        # without the values: for a search, a scan of every row (230 ms at a million)
        # instead of the trigram index (40 ms), as it cannot tell a rare term from a
        # common one.
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            return list(await conn.fetch(sql, *params))

    async def _stream_rows(self, sql: str, params: Sequence[Any]) -> AsyncIterator[Row]:
        async with self._connection() as conn, conn.transaction():
            # A server-side cursor: rows stream in chunks, memory stays flat.
            async for record in conn.cursor(sql, *params, prefetch=1000):
                yield record

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(sql, *args)

    async def schema_warnings(self) -> list[str]:
        async with self._connection() as conn:
            return await protection_warnings(
                conn, self.schema, self.writes_format_2, await self._has_checkpoint_table()
            )

    # --- retention (docs/retention.md; the statements: auditmw._stores.postgres_retention) --

    async def cut_rows(self) -> list[tuple[object, ...]]:
        if not await self._fetchval("SELECT to_regclass('auditmw_cuts') IS NOT NULL"):
            return []
        return [tuple(record) for record in await self._fetch(CUT_ROWS)]

    async def prune(
        self,
        event: PreparedEvent,
        records: list[CutRecord],
        recorded: dict[str, int],
        deadline: float,
    ) -> tuple[Event, int]:
        # A pooled connection: the writer's serves the batches meanwhile. The append lock
        # of the event's log serialises it with them.
        async with self._connection("prune failed") as conn:
            await ensure_retention_schema(conn, self.schema)  # opened with create=False
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await record_prune(conn, event, records, recorded, INSERT), 0

    async def delete_pruned(self, limit: int) -> int:
        async with self._connection("prune failed") as conn:
            return await delete_batch(conn, limit)

    async def storage_damage(self) -> list[str]:
        """amcheck's ``bt_index_check`` of every B-tree index of the store's tables, when
        the extension is installed and this role may run it (it may not by default):
        PostgreSQL has no cheap check of a whole table; a heap page it finds corrupted
        is reported when the chain pass reads it. ``bt_index_check`` takes the same lock
        as a SELECT and reads each index once."""
        async with self._connection() as conn:
            checker = await conn.fetchval(
                "SELECT quote_ident(n.nspname) || '.bt_index_check' FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck' "
                "AND has_function_privilege(to_regprocedure(quote_ident(n.nspname) "
                "|| '.bt_index_check(regclass)'), 'EXECUTE')"
            )
            if checker is None:
                return []
            indexes = await conn.fetch(
                "SELECT c.oid, c.relname FROM pg_index AS i "
                "JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_am AS a ON a.oid = c.relam "
                "WHERE a.amname = 'btree' AND i.indrelid IN "
                "(to_regclass('auditmw_events'), to_regclass('auditmw_checkpoints')) "
                "ORDER BY c.relname"
            )
            damage = []
            for index in indexes:
                try:
                    # The function's schema comes quoted from the catalog, not from input.
                    await conn.execute(f"SELECT {checker}($1::oid::regclass)", index["oid"])
                except (asyncpg.DataCorruptedError, asyncpg.IndexCorruptedError) as exc:
                    damage.append(f"index {index['relname']} is damaged (amcheck): {exc}")
            return damage

    async def removed_checkpoints(self) -> list[str]:
        # Nothing here proves a removal: the identity sequence behind auditmw_checkpoints.id
        # is not transactional (an insert rolled back, or values cached when the server
        # crashed, leave gaps), unlike SQLite's AUTOINCREMENT counter. Removals show through
        # the key records (StoreEvidence.checkpoint_sizes) and a sink kept elsewhere.
        return []

    # --- reading: queries, exports and facets (their SQL: auditmw._stores.sql) ---------------
    # The same results as the SQLite store: newest first by timestamp, ties broken by the
    # time-ordered id; every text column uses the "C" collation (byte order, like SQLite).

    async def interval_counts(self, filter: EventFilter, layout: BucketLayout) -> list[int]:
        """Per interval, a count of its range of the (filter column, timestamp, id) index
        (index-only: 90 ms for a million events, where one pass grouping every row by
        ``width_bucket`` took 0.7 s). A search has no such index: its matches, found
        through the trigram index, are read once and grouped by ``width_bucket``, the
        number of edges at or before each timestamp in byte order (the "C" collation)."""
        if filter.search:
            selection = select(filter, self.dialect)
            bucket = 'width_bucket(e.timestamp, ?::text[] COLLATE "C") AS bucket, count(*)'
            sql, params = selection.read(bucket, " GROUP BY bucket")
            rows = await self._fetch_rows(
                self.dialect.sql(sql), [layout.edges, *params], custom_plan=True
            )
            counts = [0] * layout.count
            for bucket_number, count in rows:
                counts[bucket_number] = int(count)
            return counts
        # The intervals' bounds stand in for the filter's own (as in the SQLite store).
        selection = select(dataclasses.replace(filter, since=None, until=None), self.dialect)
        selection.add("e.timestamp >= b.lo AND e.timestamp < b.hi", [])
        count, params = selection.read("count(*)")
        rows = await self._fetch_rows(
            self.dialect.sql(
                f"SELECT ({count}) FROM unnest(?::text[], ?::text[]) "  # noqa: S608
                "WITH ORDINALITY AS b(lo, hi, n) ORDER BY b.n"
            ),
            [
                *params,
                [filter.since or BEFORE_ANY, *layout.edges],
                [*layout.edges, filter.until or AFTER_ANY],
            ],
        )
        return [int(row[0]) for row in rows]

    async def distinct_values(self, column: str, limit: int) -> list[str]:
        # A loose index scan: each step seeks the next greater value in the index.
        records = await self._fetch(
            f"WITH RECURSIVE v(value) AS ("  # noqa: S608 (column is one of FACET_COLUMNS)
            f"SELECT min({column}) FROM auditmw_events "
            f"UNION ALL SELECT (SELECT min({column}) FROM auditmw_events "
            f"WHERE {column} > v.value) FROM v WHERE v.value IS NOT NULL) "
            "SELECT value FROM v WHERE value IS NOT NULL LIMIT $1",
            limit,
        )
        return [record["value"] for record in records]

    # --- erasure ---------------------------------------------------------------------------

    async def remove_personal(self, updates: list[PersonalUpdate]) -> list[str]:
        return await remove_personal(self._connection, self.dialect, updates)

    # --- signed checkpoints (auditmw._transparency.checkpoints, table auditmw_checkpoints) --

    async def insert_checkpoint(self, row: CheckpointRow) -> bool:
        c = row.checkpoint
        # A pooled connection, not the writer's: its own short transaction. Issuers of one
        # log take turns on an advisory lock, so two that raced store one copy.
        failed = "cannot store a checkpoint"
        async with self._connection(failed) as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema()), "
                "hashtext('auditmw checkpoint ' || $1))",
                c.log,
            )
            status = await conn.execute(
                self.dialect.sql(INSERT_CHECKPOINT), *insert_checkpoint_values(row)
            )
        return bool(status == "INSERT 0 1")

    async def _has_checkpoint_table(self) -> bool:
        # A store opened with create=False may predate the table: it has no checkpoints.
        if not self._checkpoint_table:
            self._checkpoint_table = bool(
                await self._fetchval("SELECT to_regclass('auditmw_checkpoints') IS NOT NULL")
            )
        return self._checkpoint_table


class PostgresStore(AuditStore):
    """An audit log in PostgreSQL (``pip install auditmw[postgres]``).

    ``dsn`` is a ``postgresql://`` URL. Tables live in ``schema`` (created if missing).
    Time limits, in seconds (docs/failures.md):

    - ``retry_for``: how long an append may take from its call, reconnecting meanwhile
      when the connection is lost, before it fails with ``StoreUnavailableError``;
    - ``connect_timeout``: each attempt to open a connection;
    - ``command_timeout``: each statement (a read, one chunk of a streamed read, one step
      of an append), and waiting for a pooled connection; a read fails with
      ``StoreUnavailableError`` after it, an append tries again on a new connection.

    ``checkpointing`` issues signed checkpoints (``Checkpointing``, docs/checkpoints.md);
    ``limits``, ``max_batch`` and ``max_pending`` are every store's (``AuditStore``).
    """

    backend: PostgresBackend

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        create: bool = True,
        pool_size: int = 4,
        retry_for: float = 10.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        **options: Unpack[StoreOptions],
    ) -> None:
        backend = PostgresBackend(
            dsn,
            schema=schema,
            create=create,
            pool_size=pool_size,
            retry_for=retry_for,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        super().__init__(backend, append_timeout=retry_for, **options)
        self.dsn = dsn
        self.schema = schema

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"
