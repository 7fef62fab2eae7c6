"""The SQL of the database backends, written once: an ``EventFilter`` compiled to a WHERE
clause, the newest-first page with its keyset, the chain-order stream, and the statements
every SQL store runs alike (logs, checkpoint rows, Merkle leaves).

Statements are written with ``?`` placeholders; a ``Dialect`` says what differs between
databases: how placeholders are spelled (``Dialect.sql``), how a search and an action
prefix are matched, what breaks timestamp ties, how the entry bytes are read. Every
statement is built from constant fragments; values are always parameters.

The events table is always ``e``.
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditmw._event import Event, stored_event
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import EventFilter
from auditmw._stores.rows import CheckpointRow, StoredCheckpoint

EVENTS = "auditmw_events AS e"  # what queries read, unless a backend starts elsewhere
EXACT_COLUMNS = ("user_id", "user_email", "resource", "resource_id", "outcome")
# Search (EventFilter.search) looks in these columns.
SEARCH_COLUMNS = ("action", "resource", "resource_id", "user_email", "user_id")

CHECKPOINT_COLUMNS = "log, size, root, note, created_at, frontier, key"
# Two issuers that raced store one copy of the same checkpoint.
INSERT_CHECKPOINT = (
    f"INSERT INTO auditmw_checkpoints ({CHECKPOINT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ? "  # noqa: S608
    "WHERE NOT EXISTS (SELECT 1 FROM auditmw_checkpoints WHERE log = ? AND size = ? AND root = ?)"
)
CHECKPOINTS = f"SELECT {CHECKPOINT_COLUMNS} FROM auditmw_checkpoints"  # noqa: S608
CHECKPOINT_ORDER = " ORDER BY log, size, id"
RECENT_CHECKPOINTS = f"{CHECKPOINTS} WHERE log = ? ORDER BY size DESC, id DESC LIMIT ?"
CHECKPOINT_SIZES = "SELECT log, key, max(size) FROM auditmw_checkpoints GROUP BY log, key"
# A loose index scan of the primary key (log, seq): one seek per log.
LOGS = (
    "WITH RECURSIVE l(log) AS (SELECT min(log) FROM auditmw_events "
    "UNION ALL SELECT (SELECT min(log) FROM auditmw_events WHERE log > l.log) "
    "FROM l WHERE l.log IS NOT NULL) SELECT log FROM l WHERE log IS NOT NULL"
)
COUNT = "SELECT count(*) FROM auditmw_events"
# Erasure: a person's rows, through the user_id and resource_id indexes.
SUBJECT_COLUMNS = "e.log, e.seq, e.timestamp, e.user_id, e.resource, e.resource_id"
ACTOR_ROWS = "FROM auditmw_events AS e WHERE e.user_id = ?"
ABOUT_ROWS = (
    "FROM auditmw_events AS e WHERE e.resource_id = ? AND e.resource = ? "
    "AND e.user_id IS DISTINCT FROM ?"
)
ERASE_ACTOR = (
    "UPDATE auditmw_events SET personal = NULL, user_email = NULL, ip_address = NULL, "
    "user_agent = NULL WHERE log = ? AND seq = ?"
)
ERASE_DETAILS = "UPDATE auditmw_events SET personal = ? WHERE log = ? AND seq = ?"
# The erasure records (auditmw._personal.ERASED_ACTION), through the (action, ...) index.
ERASURE_RECORDS = (
    "SELECT log, seq, resource_id, timestamp FROM auditmw_events "
    "WHERE action = 'audit.erased' AND resource = 'user' ORDER BY log, seq"
)
LAST_SEQ = "SELECT max(seq) FROM auditmw_events WHERE log = ?"
LEAF_HASHES = "SELECT hash FROM auditmw_events WHERE log = ? AND seq > ? AND seq <= ? ORDER BY seq"
# A log's entries after a seq, in seq order along the primary key (no sort: the first row
# comes at once however long the log), for a prune's plan.
CHAIN_AFTER = (
    "SELECT seq, hash, timestamp FROM auditmw_events WHERE log = ? AND seq > ? ORDER BY seq"
)
_PLACEHOLDER = re.compile(r"\?")
# A row as a driver returns it (sqlite3.Row, asyncpg.Record): indexed by column position.
Row = Any


def escape_like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself, for ``LIKE ... ESCAPE '\\'``: search
    terms are literal, ``%`` and ``_`` included."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where_clause(conditions: Iterable[str]) -> str:
    """`` WHERE a AND b`` for SQL conditions built from constant fragments; "" for none."""
    joined = " AND ".join(conditions)
    return f" WHERE {joined}" if joined else ""


class Dialect(ABC):
    """What differs between SQL databases, for the statements here. The defaults are
    standard SQL; each backend subclasses what its database does otherwise."""

    entry = "e.entry"  # the entry bytes, as bytes
    personal = "e.personal"  # the openings; "NULL" for a store that predates them
    tiebreak = "e.id"  # what orders events of equal timestamps, in insertion order

    def sql(self, statement: str) -> str:
        """``statement`` with this database's placeholders (``?`` by default)."""
        return statement

    def keyset(self, position: Keyset) -> tuple[str, list[Any]]:
        """The condition that an event comes after ``position`` (timestamp, tie-breaker)
        in newest-first order."""
        return f"(e.timestamp, {self.tiebreak}) < (?, ?)", [*position]

    def action_prefix(self, prefix: str) -> tuple[str, list[Any]]:
        """The condition that ``e.action`` starts with ``prefix`` (never empty)."""
        return "e.action >= ? AND substr(e.action, 1, ?) = ?", [prefix, len(prefix), prefix]

    def action_in(self, actions: Sequence[str]) -> tuple[str, list[Any]]:
        """The condition that ``e.action`` is one of ``actions``."""
        return f"e.action IN ({', '.join('?' * len(actions)) or 'NULL'})", [*actions]

    @abstractmethod
    def search(self, term: str) -> tuple[str, list[Any]]:
        """The condition that one of ``SEARCH_COLUMNS`` holds ``term``, ASCII
        case-insensitively; every character of it literal."""


class NumberedDialect(Dialect, ABC):
    """A database whose placeholders are numbered: ``$1``, ``$2`` ... (PostgreSQL)."""

    def sql(self, statement: str) -> str:
        numbers = iter(range(1, statement.count("?") + 1))
        return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", statement)


@dataclass(slots=True)
class Selection:
    """Which events a statement reads: ``FROM source WHERE conditions``, with the values
    of the source's placeholders, then of the conditions'."""

    source: str = EVENTS
    source_params: list[Any] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, condition: str, params: Sequence[Any]) -> None:
        self.conditions.append(condition)
        self.params.extend(params)

    def read(self, columns: str, rest: str = "") -> tuple[str, list[Any]]:
        """``SELECT columns FROM source WHERE ... rest`` and its values."""
        sql = f"SELECT {columns} FROM {self.source}{where_clause(self.conditions)}{rest}"  # noqa: S608
        return sql, [*self.source_params, *self.params]


def select(
    filter: EventFilter, dialect: Dialect, *, actions: Sequence[str] | None = None
) -> Selection:
    """The events matching ``filter``. ``actions``, when given, stands for an action
    prefix: the actions the store holds with that prefix (``e.action IN`` them)."""
    selection = Selection()
    for name in EXACT_COLUMNS:
        value = getattr(filter, name)
        if value is not None:
            selection.add(f"e.{name} = ?", [value])
    prefix = filter.action_prefix
    if prefix and actions is not None:
        selection.add(*dialect.action_in(actions))
    elif prefix:
        selection.add(*dialect.action_prefix(prefix))
    elif prefix is None and filter.action is not None:
        selection.add("e.action = ?", [filter.action])
    if filter.since is not None:
        selection.add("e.timestamp >= ?", [filter.since])
    if filter.until is not None:
        selection.add("e.timestamp < ?", [filter.until])
    if filter.search:
        selection.add(*dialect.search(filter.search))
    return selection


def page_filter(filter: EventFilter, position: Keyset | None) -> EventFilter:
    """``filter`` for the page after ``position``: the position's bound implies ``until``
    when it is earlier, and keeping both upper bounds makes the database start its index
    scan at ``until`` and step over every earlier page."""
    if position is not None and filter.until is not None and position[0] < filter.until:
        return dataclasses.replace(filter, until=None)
    return filter


# The columns of a page's rows: an event, with its keyset position (timestamp, tie-breaker).
def _event_columns(dialect: Dialect) -> str:
    return (
        f"e.log, e.seq, {dialect.tiebreak}, e.timestamp, {dialect.entry}, e.hash, "
        f"{dialect.personal}"
    )


def page_statement(
    selection: Selection, dialect: Dialect, position: Keyset | None, limit: int, offset: int
) -> tuple[str, list[Any]]:
    """The newest-first page after ``position``: one more row than ``limit`` (is there a
    next page?). Filter, order and keyset are one range of a (column, timestamp) index."""
    if position is not None:
        selection.add(*dialect.keyset(position))
    sql, params = selection.read(
        _event_columns(dialect),
        f" ORDER BY e.timestamp DESC, {dialect.tiebreak} DESC LIMIT ? OFFSET ?",
    )
    return dialect.sql(sql), [*params, limit + 1, offset]


def page_of(rows: Sequence[Row], limit: int) -> tuple[list[Event], Keyset | None]:
    """The events of ``page_statement``'s rows, and the position of the last one when
    another page follows."""
    events = [event_of(row) for row in rows[:limit]]
    if len(rows) > limit:
        last = rows[limit - 1]
        return events, (last[3], last[2])
    return events, None


def stream_statement(selection: Selection, dialect: Dialect) -> tuple[str, list[Any]]:
    """Every matching event in chain order: by log, then seq ascending."""
    sql, params = selection.read(_event_columns(dialect), " ORDER BY e.log, e.seq")
    return dialect.sql(sql), params


def event_of(row: Row) -> Event:
    """The event of a row of ``page_statement`` or ``stream_statement``."""
    return stored_event(bytes(row[4]), row[5], row[0], row[1], row[6])


def time_span_statement(selection: Selection, dialect: Dialect) -> tuple[str, list[Any]]:
    """The first and the last matching timestamps: each the first row of an index range
    read in order (as a page is)."""
    first, params = selection.read("e.timestamp", " ORDER BY e.timestamp LIMIT 1")
    last, _ = selection.read("e.timestamp", " ORDER BY e.timestamp DESC LIMIT 1")
    return dialect.sql(f"SELECT ({first}), ({last})"), [*params, *params]


def checkpoints_statement(dialect: Dialect, log: str | None) -> tuple[str, list[Any]]:
    """The stored checkpoints of ``log`` (of every log when None), ordered by log, size,
    then insertion order."""
    if log is None:
        return CHECKPOINTS + CHECKPOINT_ORDER, []
    return dialect.sql(f"{CHECKPOINTS} WHERE log = ?{CHECKPOINT_ORDER}"), [log]


def insert_checkpoint_values(row: CheckpointRow) -> list[Any]:
    """The values of ``INSERT_CHECKPOINT`` for ``row``: its columns, then its log, size
    and root again for the check that no copy is stored."""
    c = row.checkpoint
    return [
        c.log,
        c.size,
        c.root,
        c.note,
        c.created_at,
        row.frontier,
        row.key,
        c.log,
        c.size,
        c.root,
    ]


def checkpoint_row(row: Row) -> CheckpointRow:
    """A row of ``CHECKPOINT_COLUMNS``; text where bytes belong (an edit) reads as its
    bytes."""
    log, size, root, note, created_at, frontier, key = row
    checkpoint = StoredCheckpoint(str(log), int(size), _blob(root), _blob(note), str(created_at))
    return CheckpointRow(checkpoint, _blob(frontier), str(key))


def checkpoint_sizes(rows: Sequence[Row]) -> dict[tuple[str, str], int]:
    """``CHECKPOINT_SIZES``'s rows as a mapping; a size that is not an integer (an edit)
    counts as none."""
    return {(str(log), str(key)): size for log, key, size in rows if type(size) is int}


def _blob(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")
