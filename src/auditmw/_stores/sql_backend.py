"""What the SQL backends do alike, once: every read that is the same statement on SQLite
and PostgreSQL but for the ``Dialect`` (``auditmw._stores.sql``).

A SQL backend gives three ways to run a statement (``_fetch_rows``, ``_stream_rows`` and
``_has_checkpoint_table``), each mapping its driver's errors to ``StoreError`` through
its one mapping, and may plan a filter its own way (``_selection``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from auditmw._event import Event
from auditmw._stores.backend import StoreBackend
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import EventFilter
from auditmw._stores.personal_check import ErasureRecord
from auditmw._stores.rows import CheckpointRow, StoredCheckpoint, SubjectRow, leaf_of
from auditmw._stores.sql import (
    ABOUT_ROWS,
    ACTOR_ROWS,
    CHAIN_AFTER,
    CHECKPOINT_SIZES,
    COUNT,
    ERASURE_RECORDS,
    LAST_SEQ,
    LEAF_HASHES,
    LOGS,
    RECENT_CHECKPOINTS,
    SUBJECT_COLUMNS,
    Dialect,
    Row,
    Selection,
    checkpoint_row,
    checkpoint_sizes,
    checkpoints_statement,
    event_of,
    page_filter,
    page_of,
    page_statement,
    select,
    stream_statement,
    time_span_statement,
)
from auditmw._stores.stream_state import (
    CLAIM_STREAM,
    SAVE_STREAM,
    STREAM_ORDER,
    STREAMS,
    StreamSQL,
    StreamState,
    claim_values,
    save_values,
    stream_state_of,
)
from auditmw._stores.verify import ChainRow
from auditmw._text import is_column_text


class SQLBackend(StoreBackend):
    """A ``StoreBackend`` whose database speaks SQL through ``dialect``."""

    dialect: Dialect  # the backend's own: its ``personal`` depends on the store's schema
    # Every stored row as the verifier reads it (ChainRow's fields), ordered by (log, seq);
    # ``{personal}`` stands for the dialect's openings column.
    chain_query: ClassVar[str]
    # The statements of the streams table (auditmw._stores.stream_state).
    stream_sql: ClassVar[StreamSQL]
    _stream_schema_ready = False  # the streams table was made (or found) by this backend

    @abstractmethod
    async def _fetch_rows(
        self, sql: str, params: Sequence[Any], *, custom_plan: bool = False
    ) -> list[Row]:
        """Every row of ``sql`` (written for this dialect). ``custom_plan``: plan it for
        these values, not with a generic plan kept from earlier runs (a search's
        selectivity depends on its term)."""

    @abstractmethod
    def _stream_rows(self, sql: str, params: Sequence[Any]) -> AsyncIterator[Row]:
        """The rows of ``sql`` one by one, read in chunks: flat memory however many."""

    @abstractmethod
    async def _has_checkpoint_table(self) -> bool:
        """Whether the store has its checkpoint table (one opened with ``create=False``
        may predate it: then it has no checkpoints)."""

    async def _selection(self, filter: EventFilter, *, newest_first: bool) -> Selection:
        """The events matching ``filter``; a backend may plan them its own way."""
        return select(filter, self.dialect)

    async def _value(self, sql: str, params: Sequence[Any]) -> Any:
        return (await self._fetch_rows(self.dialect.sql(sql), params))[0][0]

    # --- ranges --------------------------------------------------------------------------

    async def get(self, event_id: str) -> Event | None:
        if not is_column_text(event_id):  # no event has it; the driver would raise
            return None
        rows = await self._fetch_rows(
            self.dialect.sql(
                f"SELECT e.log, e.seq, NULL, NULL, {self.dialect.entry}, e.hash, "  # noqa: S608
                f"{self.dialect.personal} FROM auditmw_events AS e WHERE e.id = ?"
            ),
            [event_id],
        )
        return event_of(rows[0]) if rows else None

    async def iter_chain_rows(self) -> AsyncIterator[ChainRow]:
        query = self.chain_query.replace("{personal}", self.dialect.personal)
        async for row in self._stream_rows(query, []):
            yield ChainRow(row[0], row[1], row[2], bytes(row[3]), tuple(row[4:-1]), row[-1])

    async def chain_after(self, log: str, seq: int) -> AsyncIterator[tuple[int, str, str]]:
        async for row in self._stream_rows(self.dialect.sql(CHAIN_AFTER), [log, seq]):
            yield int(row[0]), str(row[1]), str(row[2])

    async def iter_events_after(self, log: str, seq: int) -> AsyncIterator[Event]:
        sql = (
            f"SELECT e.log, e.seq, NULL, NULL, {self.dialect.entry}, e.hash, "  # noqa: S608
            f"{self.dialect.personal} "
            "FROM auditmw_events AS e WHERE e.log = ? AND e.seq > ? ORDER BY e.seq"
        )
        async for row in self._stream_rows(self.dialect.sql(sql), [log, seq]):
            yield event_of(row)

    async def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]:
        async for row in self._stream_rows(self.dialect.sql(LEAF_HASHES), [log, start, end]):
            yield leaf_of(row[0])

    # --- queries of a filter -------------------------------------------------------------

    async def page(
        self, filter: EventFilter, limit: int, position: Keyset | None, offset: int
    ) -> tuple[list[Event], Keyset | None]:
        sql, params = await self._page_statement(filter, limit, position, offset)
        return page_of(await self._fetch_rows(sql, params), limit)

    async def _page_statement(
        self, filter: EventFilter, limit: int, position: Keyset | None, offset: int
    ) -> tuple[str, list[Any]]:
        selection = await self._selection(page_filter(filter, position), newest_first=True)
        return page_statement(selection, self.dialect, position, limit, offset)

    async def stream(self, filter: EventFilter) -> AsyncIterator[Event]:
        """Every matching event in chain order (log, seq ascending), streamed: an export
        of the whole log in this order verifies offline."""
        selection = await self._selection(filter, newest_first=False)
        async for row in self._stream_rows(*stream_statement(selection, self.dialect)):
            yield event_of(row)

    async def time_span(self, filter: EventFilter) -> tuple[str, str] | None:
        selection = await self._selection(filter, newest_first=True)
        sql, params = time_span_statement(selection, self.dialect)
        [(first, last)] = await self._fetch_rows(sql, params, custom_plan=True)
        return None if first is None else (str(first), str(last))

    # --- checkpoint rows -----------------------------------------------------------------

    async def checkpoints(self, log: str | None) -> list[StoredCheckpoint]:
        if not await self._has_checkpoint_table():
            return []
        rows = await self._fetch_rows(*checkpoints_statement(self.dialect, log))
        return [checkpoint_row(row).checkpoint for row in rows]

    async def recent_checkpoints(self, log: str, limit: int) -> list[CheckpointRow]:
        if not await self._has_checkpoint_table():
            return []
        rows = await self._fetch_rows(self.dialect.sql(RECENT_CHECKPOINTS), [log, limit])
        return [checkpoint_row(row) for row in rows]

    async def checkpoint_sizes(self) -> dict[tuple[str, str], int]:
        if not await self._has_checkpoint_table():
            return {}  # never created, or dropped: it holds no checkpoint
        return checkpoint_sizes(await self._fetch_rows(CHECKPOINT_SIZES, []))

    # --- meta ----------------------------------------------------------------------------

    async def logs(self) -> list[str]:
        return [str(row[0]) for row in await self._fetch_rows(LOGS, [])]

    async def subject_rows(self, user_id: str, resources: Sequence[str]) -> list[SubjectRow]:
        if not is_column_text(user_id):  # no row has it; the driver would raise
            return []
        columns = f"SELECT {SUBJECT_COLUMNS}, {self.dialect.entry}, {self.dialect.personal} "
        rows = await self._fetch_rows(self.dialect.sql(columns + ACTOR_ROWS), [user_id])
        for resource in resources:
            rows += await self._fetch_rows(
                self.dialect.sql(columns + ABOUT_ROWS), [user_id, resource, user_id]
            )
        return [
            SubjectRow(str(r[0]), int(r[1]), str(r[2]), r[3], str(r[4]), r[5], bytes(r[6]), r[7])
            for r in rows
        ]

    async def erasure_records(self) -> list[ErasureRecord]:
        return [
            ErasureRecord(str(log), int(seq), str(person), str(timestamp))
            for log, seq, person, timestamp in await self._fetch_rows(ERASURE_RECORDS, [])
            if person is not None
        ]

    async def count(self) -> int:
        return int(await self._value(COUNT, []))

    async def last_seq(self, log: str) -> int:
        last = int(await self._value(LAST_SEQ, [log]) or 0)
        if last == 0:  # every entry pruned: the log goes on after its cut
            cuts = [int(str(row[1])) for row in await self.cut_rows() if row[0] == log]
            last = max(cuts, default=0)
        return last
        return int(await self._value(LAST_SEQ, [log]) or 0)

    # --- log streams (table auditmw_streams: auditmw._stores.stream_state) ---------------

    async def _write_rows(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """Run one writing statement (written for this dialect) in a transaction of its
        own and return its rows. By default through ``_fetch_rows``, for a database whose
        read connections may write (each statement its own transaction)."""
        return await self._fetch_rows(sql, params)

    async def events_after(
        self, log: str, after: int, through: int, limit: int, filter: EventFilter
    ) -> list[Event]:
        selection = await self._selection(filter, newest_first=False)
        selection.add("e.log = ? AND e.seq > ? AND e.seq <= ?", [log, after, through])
        sql, params = selection.read(
            f"e.log, e.seq, NULL, NULL, {self.dialect.entry}, e.hash, {self.dialect.personal}",
            " ORDER BY e.seq LIMIT ?",
        )
        rows = await self._fetch_rows(self.dialect.sql(sql), [*params, limit])
        return [event_of(row) for row in rows]

    async def stream_states(self, name: str | None) -> list[StreamState]:
        if not await self._value(self.stream_sql.table_exists, []):
            return []
        if name is None:
            rows = await self._fetch_rows(STREAMS + STREAM_ORDER, [])
        else:
            rows = await self._fetch_rows(self.dialect.sql(STREAMS + " WHERE name = ?"), [name])
        return [stream_state_of(row) for row in rows]

    async def claim_stream(
        self, name: str, owner: str, now: float, expires: float, created_at: str
    ) -> StreamState | None:
        if not self._stream_schema_ready:
            await self._write_rows(self.stream_sql.schema, [])
            self._stream_schema_ready = True
        rows = await self._write_rows(
            self.dialect.sql(CLAIM_STREAM), claim_values(name, owner, now, expires, created_at)
        )
        return stream_state_of(rows[0]) if rows else None

    async def save_stream(self, state: StreamState, owner: str) -> bool:
        rows = await self._write_rows(self.dialect.sql(SAVE_STREAM), save_values(state, owner))
        return bool(rows)
