"""The in-memory reference backend: the whole contract of ``StoreBackend`` in plain Python.

It chains, validates and answers exactly as the database backends do (the contract tests
run it beside them), so an application's tests can use it (``auditmw.testing.MemoryStore``)
without a file or a server. Append-only like them: nothing here removes or changes a row.
Its rows live in a ``MemoryTables``, which several stores may share, as processes share
a database file: a store opened again over the same tables finds its log as it left it.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import AsyncIterator, Sequence
from operator import itemgetter
from typing import Any

from auditmw._errors import EventRefusedError, PruneRefusedError, StoreClosedError
from auditmw._event import (
    GENESIS_HASH,
    ROW_FIELDS,
    Event,
    PreparedEvent,
    chain,
    entry_hash,
    stored_event,
)
from auditmw._personal import ERASED_ACTION, ERASED_RESOURCE
from auditmw._retention.cuts import CutRecord, latest_cuts
from auditmw._stores.backend import StoreBackend
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import EventFilter, ascii_lower
from auditmw._stores.histogram import BucketLayout
from auditmw._stores.personal_check import ErasureRecord
from auditmw._stores.rows import (
    CheckpointRow,
    PersonalUpdate,
    StoredCheckpoint,
    SubjectRow,
    leaf_of,
)
from auditmw._stores.stream_state import StreamState
from auditmw._stores.verify import INDEX_COLUMNS, ChainRow

_COLUMN = {name: index for index, name in enumerate(ROW_FIELDS)}
_LOG, _SEQ, _ID, _TIMESTAMP, _HASH, _ENTRY, _PERSONAL = (
    _COLUMN[name] for name in ("log", "seq", "id", "timestamp", "hash", "entry", "personal")
)
_INDEX_COLUMNS = itemgetter(*(_COLUMN[name] for name in INDEX_COLUMNS))
EXACT_COLUMNS = tuple(
    _COLUMN[name] for name in ("user_id", "user_email", "resource", "resource_id", "outcome")
)
EXACT_FIELDS = ("user_id", "user_email", "resource", "resource_id", "outcome")
SEARCH_COLUMNS = tuple(
    _COLUMN[name] for name in ("action", "resource", "resource_id", "user_email", "user_id")
)


class MemoryTables:
    """The rows of one in-memory store: events (``ROW_FIELDS`` tuples) in insertion order,
    and checkpoints; shared by every ``MemoryBackend`` made over it."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.by_log: dict[str, list[int]] = {}  # positions in ``events``, in seq order
        self.ids: dict[str, int] = {}  # event id -> position in ``events``
        self.checkpoints: list[CheckpointRow] = []  # in insertion order (their id)
        self.cuts: list[CutRecord] = []  # append-only, as the databases' auditmw_cuts
        self.streams: dict[str, StreamState] = {}  # by name (auditmw._stores.stream_state)

    def reindex(self) -> None:
        """Rebuild ``by_log`` and ``ids`` after rows were removed (a prune)."""
        self.by_log, self.ids = {}, {}
        for position, row in enumerate(self.events):
            self.by_log.setdefault(row[_LOG], []).append(position)
            self.ids[row[_ID]] = position


class MemoryBackend(StoreBackend):
    """A ``StoreBackend`` over ``tables`` (new, empty ones by default)."""

    tiebreak = int  # the position in insertion order, like SQLite's rowid

    def __init__(self, tables: MemoryTables | None = None) -> None:
        self.tables = tables if tables is not None else MemoryTables()
        self._connected = False

    async def connect(self) -> None:
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False

    def _rows(self) -> MemoryTables:
        if not self._connected:
            raise StoreClosedError("the audit store is not open")
        return self.tables

    def committed_events(self) -> list[Event]:
        """Every event held, over all logs, in the order they were committed."""
        return [_event(row) for row in self.tables.events]

    # --- appending -----------------------------------------------------------------------

    async def append_batch(self, batch: list[PreparedEvent], deadline: float) -> list[Event]:
        tables = self._rows()
        heads = {}
        for log in {prepared.log for prepared in batch}:
            positions = tables.by_log.get(log)
            last = tables.events[positions[-1]] if positions else None
            heads[log] = (0, GENESIS_HASH) if last is None else (last[_SEQ], last[_HASH])
            cut = latest_cuts(tables.cuts).get(log)
            if last is None and cut is not None:  # every entry of the log was pruned
                heads[log] = (cut.last_seq, cut.head)
        rows, events = chain(batch, heads)
        ids = [row[_ID] for row in rows]
        # The databases' unique index on id: the whole batch is refused, nothing stored.
        if len(set(ids)) != len(ids) or not tables.ids.keys().isdisjoint(ids):
            raise EventRefusedError("in-memory audit store: append refused: duplicate event id")
        for row in rows:
            tables.by_log.setdefault(row[_LOG], []).append(len(tables.events))
            tables.ids[row[_ID]] = len(tables.events)
            tables.events.append(row)
        return events

    # --- ranges --------------------------------------------------------------------------

    async def iter_chain_rows(self) -> AsyncIterator[ChainRow]:
        tables = self._rows()
        for log in sorted(tables.by_log):
            for position in list(tables.by_log[log]):
                row = tables.events[position]
                columns = _INDEX_COLUMNS(row)
                yield ChainRow(
                    row[_LOG], row[_SEQ], row[_HASH], row[_ENTRY], columns, row[_PERSONAL]
                )

    async def chain_after(self, log: str, seq: int) -> AsyncIterator[tuple[int, str, str]]:
        tables = self._rows()
        for position in list(tables.by_log.get(log, ())):
            row = tables.events[position]
            if row[_SEQ] > seq:
                yield row[_SEQ], row[_HASH], row[_TIMESTAMP]

    async def iter_events_after(self, log: str, seq: int) -> AsyncIterator[Event]:
        tables = self._rows()
        for position in list(tables.by_log.get(log, ())):
            row = tables.events[position]
            if row[_SEQ] > seq:
                yield _event(row)

    async def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]:
        tables = self._rows()
        positions = tables.by_log.get(log, [])
        first = tables.events[positions[0]][_SEQ] if positions else 1  # after a prune, > 1
        for position in positions[max(start + 1 - first, 0) : max(end + 1 - first, 0)]:
            yield leaf_of(tables.events[position][_HASH])

    async def get(self, event_id: str) -> Event | None:
        tables = self._rows()
        position = tables.ids.get(event_id)
        return None if position is None else _event(tables.events[position])

    # --- queries of a filter -------------------------------------------------------------

    async def page(
        self, filter: EventFilter, limit: int, position: Keyset | None, offset: int
    ) -> tuple[list[Event], Keyset | None]:
        matches = [
            (row[_TIMESTAMP], index)
            for index, row in enumerate(self._rows().events)
            if _matches(row, filter)
        ]
        matches.sort(reverse=True)  # newest first: timestamp, then insertion order
        if position is not None:
            matches = [key for key in matches if key < position]
        selected = matches[offset : offset + limit + 1]
        events = [_event(self.tables.events[index]) for _, index in selected[:limit]]
        return events, (selected[limit - 1] if len(selected) > limit else None)

    async def stream(self, filter: EventFilter) -> AsyncIterator[Event]:
        tables = self._rows()
        for log in sorted(tables.by_log):
            for position in list(tables.by_log[log]):
                row = tables.events[position]
                if _matches(row, filter):
                    yield _event(row)

    async def time_span(self, filter: EventFilter) -> tuple[str, str] | None:
        times = [row[_TIMESTAMP] for row in self._rows().events if _matches(row, filter)]
        return (min(times), max(times)) if times else None

    async def interval_counts(self, filter: EventFilter, layout: BucketLayout) -> list[int]:
        edges = layout.edges
        counts = [0] * layout.count
        for row in self._rows().events:
            if _matches(row, filter):
                counts[bisect.bisect_right(edges, row[_TIMESTAMP])] += 1
        return counts

    async def distinct_values(self, column: str, limit: int) -> list[str]:
        index = _COLUMN[column]
        values = {row[index] for row in self._rows().events if row[index] is not None}
        return sorted(values)[:limit]  # code point order: the databases' byte order

    # --- checkpoint rows -----------------------------------------------------------------

    async def checkpoints(self, log: str | None) -> list[StoredCheckpoint]:
        rows = [
            (row.checkpoint.log, row.checkpoint.size, number, row.checkpoint)
            for number, row in enumerate(self._rows().checkpoints)
            if log is None or row.checkpoint.log == log
        ]
        return [checkpoint for *_, checkpoint in sorted(rows, key=itemgetter(0, 1, 2))]

    async def recent_checkpoints(self, log: str, limit: int) -> list[CheckpointRow]:
        rows = [
            (row.checkpoint.size, number, row)
            for number, row in enumerate(self._rows().checkpoints)
            if row.checkpoint.log == log
        ]
        rows.sort(key=itemgetter(0, 1), reverse=True)
        return [row for *_, row in rows[:limit]]

    async def insert_checkpoint(self, row: CheckpointRow) -> bool:
        stored = self._rows().checkpoints
        c = row.checkpoint
        if any(
            (s.checkpoint.log, s.checkpoint.size, s.checkpoint.root) == (c.log, c.size, c.root)
            for s in stored
        ):
            return False
        stored.append(row)
        return True

    # --- meta ----------------------------------------------------------------------------

    async def logs(self) -> list[str]:
        return sorted(self._rows().by_log)

    async def count(self) -> int:
        return len(self._rows().events)

    async def last_seq(self, log: str) -> int:
        positions = self._rows().by_log.get(log)
        if positions:
            return int(self.tables.events[positions[-1]][_SEQ])
        cut = latest_cuts(self.tables.cuts).get(log)  # every entry pruned
        return 0 if cut is None else cut.last_seq

    async def schema_warnings(self) -> list[str]:
        self._rows()
        return []  # nothing here can drop a protection

    async def subject_rows(self, user_id: str, resources: Sequence[str]) -> list[SubjectRow]:
        c = _COLUMN
        return [
            SubjectRow(
                row[_LOG],
                row[_SEQ],
                row[_TIMESTAMP],
                row[c["user_id"]],
                row[c["resource"]],
                row[c["resource_id"]],
                row[_ENTRY],
                row[_PERSONAL],
            )
            for row in self._rows().events
            if row[c["user_id"]] == user_id
            or (row[c["resource"]] in resources and row[c["resource_id"]] == user_id)
        ]

    async def remove_personal(self, updates: list[PersonalUpdate]) -> list[str]:
        # The one change a row takes (as the databases' UPDATE trigger allows).
        tables = self._rows()
        cleared = [_COLUMN[name] for name in ("user_email", "ip_address", "user_agent")]
        for update in updates:
            position = tables.by_log[update.log][update.seq - 1]
            row = list(tables.events[position])
            row[_PERSONAL] = update.personal
            if update.actor:
                for index in cleared:
                    row[index] = None
            tables.events[position] = tuple(row)
        return []

    async def erasure_records(self) -> list[ErasureRecord]:
        action, resource = _COLUMN["action"], _COLUMN["resource"]
        return [
            ErasureRecord(row[_LOG], row[_SEQ], row[_COLUMN["resource_id"]], row[_TIMESTAMP])
            for log in sorted(self._rows().by_log)
            for row in (self.tables.events[position] for position in self.tables.by_log[log])
            if row[action] == ERASED_ACTION
            and row[resource] == ERASED_RESOURCE
            and row[_COLUMN["resource_id"]] is not None
        ]

    async def storage_damage(self) -> list[str]:
        self._rows()
        return []

    async def removed_checkpoints(self) -> list[str]:
        self._rows()
        return []  # nothing here removes one

    # --- retention -------------------------------------------------------------------------

    async def cut_rows(self) -> list[tuple[object, ...]]:
        return [record.values() for record in self._rows().cuts]

    async def prune(
        self,
        event: PreparedEvent,
        records: list[CutRecord],
        recorded: dict[str, int],
        deadline: float,
    ) -> tuple[Event, int]:
        tables = self._rows()
        now = {log: cut.last_seq for log, cut in latest_cuts(tables.cuts).items()}
        if now != recorded:
            raise PruneRefusedError("another prune ran meanwhile; nothing was pruned: run it again")
        for record in records:
            cut = record.cut
            if recorded.get(record.log) == cut.last_seq:
                continue
            position = tables.ids.get(_id_at(tables, record.log, cut.last_seq) or "")
            if position is None or entry_hash(tables.events[position][_ENTRY]) != cut.head:
                raise PruneRefusedError(
                    f"log {record.log!r}: the entry at the cut is not the one planned"
                )
        [committed] = await self.append_batch([event], deadline)
        tables.cuts.extend(records)
        limits = {record.log: record.cut.last_seq for record in records}
        kept = [row for row in tables.events if row[_SEQ] > limits.get(row[_LOG], 0)]
        deleted = len(tables.events) - len(kept)
        tables.events = kept
        tables.reindex()
        return committed, deleted

    async def delete_pruned(self, limit: int) -> int:
        self._rows()
        return 0  # a prune here is all at once

    async def checkpoint_sizes(self) -> dict[tuple[str, str], int]:
        sizes: dict[tuple[str, str], int] = {}
        for row in self._rows().checkpoints:
            key = (row.checkpoint.log, row.key)
            sizes[key] = max(sizes.get(key, 0), row.checkpoint.size)
        return sizes

    # --- log streams ---------------------------------------------------------------------

    async def events_after(
        self, log: str, after: int, through: int, limit: int, filter: EventFilter
    ) -> list[Event]:
        tables = self._rows()
        events = []
        positions = tables.by_log.get(log, [])
        # Seqs are consecutive from the first kept one (1, or the one after a prune's cut).
        first = tables.events[positions[0]][_SEQ] if positions else 1
        for position in positions[max(after - first + 1, 0) : max(through - first + 1, 0)]:
            row = tables.events[position]
            if _matches(row, filter):
                events.append(_event(row))
                if len(events) == limit:
                    break
        return events

    async def stream_states(self, name: str | None) -> list[StreamState]:
        streams = self._rows().streams
        return [streams[key] for key in sorted(streams) if name is None or key == name]

    async def claim_stream(
        self, name: str, owner: str, now: float, expires: float, created_at: str
    ) -> StreamState | None:
        streams = self._rows().streams
        state = streams.get(name) or StreamState(name, created_at=created_at)
        if state.lease_owner not in (None, owner) and state.lease_expires >= now:
            return None
        state = streams[name] = dataclasses.replace(state, lease_owner=owner, lease_expires=expires)
        return state

    async def save_stream(self, state: StreamState, owner: str) -> bool:
        streams = self._rows().streams
        stored = streams.get(state.name)
        if stored is None or stored.lease_owner != owner:
            return False
        streams[state.name] = state
        return True


def _id_at(tables: MemoryTables, log: str, seq: int) -> str | None:
    for position in tables.by_log.get(log, ()):
        if tables.events[position][_SEQ] == seq:
            return str(tables.events[position][_ID])
    return None


def _event(row: tuple[Any, ...]) -> Event:
    return stored_event(row[_ENTRY], row[_HASH], row[_LOG], row[_SEQ], row[_PERSONAL])


def _matches(row: tuple[Any, ...], filter: EventFilter) -> bool:
    """Whether the stored ``row`` matches ``filter`` (``EventFilter``'s meaning, on the
    stored columns as the databases compare them)."""
    for name, index in zip(EXACT_FIELDS, EXACT_COLUMNS, strict=True):
        wanted = getattr(filter, name)
        if wanted is not None and row[index] != wanted:
            return False
    action = row[_COLUMN["action"]]
    prefix = filter.action_prefix
    if prefix is not None:
        if not action.startswith(prefix):
            return False
    elif filter.action is not None and action != filter.action:
        return False
    timestamp = row[_TIMESTAMP]
    if filter.since is not None and timestamp < filter.since:
        return False
    if filter.until is not None and timestamp >= filter.until:
        return False
    if filter.search:
        term = ascii_lower(filter.search)
        return any(
            row[index] is not None and term in ascii_lower(row[index]) for index in SEARCH_COLUMNS
        )
    return True
