"""SQLite's SQL: the schema, the dialect of the shared statements (``auditmw._stores.sql``)
and the statements of an append. Every statement is built from constant names, never
from input.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from auditmw._event import ROW_FIELDS
from auditmw._stores.cursor import Keyset
from auditmw._stores.sql import SEARCH_COLUMNS, Dialect, escape_like
from auditmw._stores.verify import INDEX_COLUMNS

# Search (EventFilter.search) looks in these columns, through the search index defined in
# SCHEMA, or by LIKE (ASCII case-insensitive, as the index, which holds lowercased text).
SEARCH_LIKE = "(" + " OR ".join(f"e.{name} LIKE ? ESCAPE '\\'" for name in SEARCH_COLUMNS) + ")"
# The FTS5 query for a search term: one phrase, so every character is literal.
FTS_PHRASE = """'"' || replace(lower(?), '"', '""') || '"'"""
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
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('schema_version', '1');
-- Search (EventFilter.search): an FTS5 trigram index of one text per event, its searchable
-- fields lowercased and joined by char(31), a character search terms cannot contain.
-- Contentless (it holds only the index), keyed by the event's rowid, which never changes
-- as the table is append-only. The trigger keeps it in step; the INSERT after it indexes,
-- once, the events of a store created before the index existed.
CREATE VIRTUAL TABLE IF NOT EXISTS auditmw_search USING fts5(
    text, content='', columnsize=0, tokenize='trigram case_sensitive 1');
CREATE TRIGGER IF NOT EXISTS auditmw_events_search AFTER INSERT ON auditmw_events BEGIN
    INSERT INTO auditmw_search (rowid, text) VALUES (new.rowid, {SEARCH_TEXT_NEW});
END;
INSERT INTO auditmw_search (rowid, text) SELECT rowid, {SEARCH_TEXT_ROW}
    FROM auditmw_events WHERE NOT EXISTS (SELECT 1 FROM auditmw_meta WHERE key = 'search_index');
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('search_index', 'trigram-1');
"""
# The text the search index holds for an event: its searchable fields lowercased, joined by
# char(31). One expression for indexing (new.) and for the FTS5 'delete' of a pruned row
# (old.): a contentless index can only forget exactly the text it was given.
SEARCH_TEXT = (
    "lower(coalesce({row}action, '') || char(31) || coalesce({row}resource, '') "
    "|| char(31) || coalesce({row}resource_id, '') || char(31) "
    "|| coalesce({row}user_email, '') || char(31) || coalesce({row}user_id, ''))"
)
SCHEMA = SCHEMA.replace("{SEARCH_TEXT_NEW}", SEARCH_TEXT.format(row="new.")).replace(
    "{SEARCH_TEXT_ROW}", SEARCH_TEXT.format(row="")
)
# Retention (docs/retention.md): the append-only table of cuts, and the one narrow DELETE
# path: a row of the events table may be deleted only at or below its log's recorded cut.
# The DELETE trigger is dropped and created again on every open that may create (one
# transaction with the rest of the schema): that migrates a store whose trigger refused
# every DELETE, and is idempotent.
DELETE_TRIGGER = (
    "CREATE TRIGGER auditmw_events_no_delete BEFORE DELETE ON auditmw_events "
    "WHEN old.seq > coalesce((SELECT max(last_seq) FROM auditmw_cuts WHERE log = old.log), 0) "
    "BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: DELETE is allowed only at or "
    "below a recorded prune cut'); END"
)
RETENTION_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS auditmw_cuts (
    log TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    head TEXT NOT NULL,
    frontier TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS auditmw_cuts_log ON auditmw_cuts (log, last_seq);
CREATE TRIGGER IF NOT EXISTS auditmw_cuts_no_update BEFORE UPDATE ON auditmw_cuts
BEGIN SELECT RAISE(ABORT, 'auditmw_cuts is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER IF NOT EXISTS auditmw_cuts_no_delete BEFORE DELETE ON auditmw_cuts
BEGIN SELECT RAISE(ABORT, 'auditmw_cuts is append-only: DELETE is not allowed'); END;
DROP TRIGGER IF EXISTS auditmw_events_no_delete;
{DELETE_TRIGGER};
CREATE TRIGGER IF NOT EXISTS auditmw_events_unsearch AFTER DELETE ON auditmw_events BEGIN
    INSERT INTO auditmw_search (auditmw_search, rowid, text)
        VALUES ('delete', old.rowid, {SEARCH_TEXT.format(row="old.")});
END;
"""  # noqa: S608 (built from the constants above only)
TRIGGERS = ("auditmw_events_no_update", "auditmw_events_no_delete")
CUT_TRIGGERS = ("auditmw_cuts_no_update", "auditmw_cuts_no_delete")
CUT_COLUMNS_SQL = "log, CAST(last_seq AS INTEGER), head, frontier, event_id, created_at"
CUT_ROWS = f"SELECT {CUT_COLUMNS_SQL} FROM auditmw_cuts ORDER BY rowid"  # noqa: S608
INSERT_CUT = (
    "INSERT INTO auditmw_cuts (log, last_seq, head, frontier, event_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
LOG_CUT = "SELECT max(last_seq) FROM auditmw_cuts WHERE log = ?"
LOG_CUT_HEAD = (
    "SELECT last_seq, head FROM auditmw_cuts WHERE log = ? ORDER BY last_seq DESC LIMIT 1"
)
# Pruned rows still there (a prune not finished), oldest first, a batch at a time.
DELETE_PRUNED = (
    "DELETE FROM auditmw_events WHERE log = ? AND seq IN "
    "(SELECT seq FROM auditmw_events WHERE log = ? AND seq <= ? ORDER BY seq LIMIT ?)"
)
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
HEAD_QUERY = (
    "SELECT seq, CAST(entry AS BLOB) FROM auditmw_events WHERE log = ? ORDER BY seq DESC LIMIT 1"
)
CHAIN_QUERY = (
    "SELECT log, CAST(seq AS INTEGER), hash, coalesce(CAST(entry AS BLOB), x''), "  # noqa: S608
    f"{', '.join(INDEX_COLUMNS)} FROM auditmw_events ORDER BY log, seq"
)


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


@functools.cache
def insert_sql(rows: int) -> str:
    """An INSERT of ``rows`` rows (built from the constant column names only)."""
    values = ", ".join(["(" + ", ".join("?" * len(ROW_COLUMNS)) + ")"] * rows)
    return f"INSERT INTO auditmw_events ({', '.join(ROW_COLUMNS)}) VALUES {values}"  # noqa: S608


def rows_per_insert(conn: sqlite3.Connection) -> int:
    """How many rows one INSERT takes: ROWS_PER_INSERT, or fewer if SQLite allows
    fewer ? per statement."""
    max_rows = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(ROW_COLUMNS)
    return max(1, min(ROWS_PER_INSERT, max_rows))


def insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` in few statements (see ROWS_PER_INSERT)."""
    size = rows_per_insert(conn)
    done = 0
    while done < len(rows):
        # The rest in halving sizes: only a dozen statement sizes ever exist, each
        # prepared once and then found in the connection's statement cache.
        while size > len(rows) - done:
            size //= 2
        params = list(itertools.chain.from_iterable(rows[done : done + size]))
        conn.execute(insert_sql(size), params)
        done += size
