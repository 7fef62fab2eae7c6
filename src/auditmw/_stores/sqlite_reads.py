"""How the SQLite backend reads: its queries planned for SQLite's indexes.

An action prefix reads as the distinct actions it stands for; a search for a rare term
starts from the FTS5 trigram index; a histogram counts each interval's range of an index;
the planner gets statistics once the log has grown. Every read maps SQLite's errors through
the backend's one mapping (``auditmw._stores.sqlite_errors.store_error``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sqlite3
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from auditmw._errors import StoreClosedError, StoreError
from auditmw._event import Event
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import MIN_SEARCH_INDEX_CHARS, EventFilter
from auditmw._stores.histogram import AFTER_ANY, BEFORE_ANY, BucketLayout
from auditmw._stores.sql import EVENTS, Row, Selection, escape_like, select
from auditmw._stores.sql_backend import SQLBackend
from auditmw._stores.sqlite_errors import store_error
from auditmw._stores.sqlite_sql import FTS_PHRASE, TIMESTAMP_MICROS

logger = logging.getLogger("auditmw")

# Up to this many matches, a search starts from the index (see SQLiteReads._search_index_matches).
SEARCH_INDEX_MAX_MATCHES = 5000
# A histogram counts every match: looking them up through the index beats testing every
# event (about 1 s per million) up to this many times more matches (tens of thousands).
HISTOGRAM_SEARCH_INDEX_FACTOR = 10
# Below this many events the planner's choice of index makes no difference worth an ANALYZE.
STATISTICS_MIN_EVENTS = 1000
# The distinct user_email values, one index seek each (the recursive CTE ``v``).
DISTINCT_EMAILS = (
    "WITH RECURSIVE v(value) AS (SELECT min(user_email) FROM auditmw_events "
    "UNION ALL SELECT (SELECT min(user_email) FROM auditmw_events WHERE user_email > v.value) "
    "FROM v WHERE v.value IS NOT NULL)"
)
# An action prefix is expanded to the actions that have it, up to this many.
MAX_PREFIX_ACTIONS = 1000


def is_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SQLiteReads(SQLBackend):
    """The reads of ``SQLiteBackend``, which connects, appends and owns what these use."""

    path: Path
    _read_conn: aiosqlite.Connection | None
    _write_conn: sqlite3.Connection | None
    _search_index: bool | None  # does the file have one? (see _has_search_index)
    _search_index_max_matches: int
    _statistics_checked: bool
    _checkpoint_table: bool  # known to exist (see _has_checkpoint_table)

    @abstractmethod
    async def _analyze_between_batches(self) -> None:
        """Give the planner statistics (a sampled ANALYZE), on the write connection."""

    def _reader(self) -> aiosqlite.Connection:
        if self._read_conn is None:
            raise StoreClosedError("the audit store is not open")
        return self._read_conn

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
        return [row[0] for row in rows if is_text(row[0])]

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
            # The index leaves out the user_email of format-2 rows (it could not forget an
            # erased one, see SEARCH_TEXT): those are matched in their column. Its distinct
            # values are read by a loose scan of its index (one seek per address, far
            # fewer than events), and the rows of those that match looked up by value.
            f"{DISTINCT_EMAILS} SELECT rowid FROM auditmw_search "  # noqa: S608
            f"WHERE auditmw_search MATCH {FTS_PHRASE} "
            "UNION SELECT e.rowid FROM v JOIN auditmw_events AS e "
            "INDEXED BY auditmw_events_user_email ON e.user_email = v.value "
            "WHERE v.value LIKE ? ESCAPE '\\' LIMIT ?",
            [term, "%" + escape_like(term) + "%", max_matches + 1],
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
                await self._analyze_between_batches()
        except (sqlite3.Error, StoreError) as exc:
            logger.debug("%s: could not refresh planner statistics: %s", self.path, exc)

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
        return store_error(f"audit store {self.path}: read failed", exc)

    # --- signed checkpoints (auditmw._transparency.checkpoints, table auditmw_checkpoints) --
