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
# The text the search index holds for a row: its searchable fields lowercased, joined by
# char(31), a character search terms cannot contain. ``{row}`` is ``new.``, ``old.`` or
# "" (the row's columns). One expression for every trigger that adds or deletes index
# entries: a contentless FTS5 table deletes an entry only given the text it indexed.
# A row of format 2 (its openings in ``personal``) has its user_email left out: the index
# could not forget it when the person is erased; search finds it through the column
# (SQLiteReads._search_index_matches). An erased row's user_email and personal are both
# NULL, so the text stays the one indexed.
SEARCH_TEXT = (
    "lower(coalesce({row}action, '') || char(31) || coalesce({row}resource, '') "
    "|| char(31) || coalesce({row}resource_id, '') || char(31) "
    "|| CASE WHEN {row}personal IS NULL THEN coalesce({row}user_email, '') ELSE '' END "
    "|| char(31) || coalesce({row}user_id, ''))"
)


def search_text(row: str) -> str:
    """``SEARCH_TEXT`` of the row ``row`` (``"new."``, ``"old."`` or ``""``)."""
    return SEARCH_TEXT.replace("{row}", row)


# The one UPDATE the events table takes: removing personal data (AuditStore.erase). Every
# column but the openings (personal) and the clear index columns of the committed fields
# stays; the openings left are some of those there were, unchanged; an index column is
# kept, or set NULL where the row had that field's opening. Anything else is refused.
_KEPT = (
    "log",
    "seq",
    "id",
    "timestamp",
    "user_id",
    "action",
    "resource",
    "resource_id",
    "outcome",
    "request_id",
    "prev_hash",
    "hash",
    "entry",
)
ERASURE_ONLY = (  # built from the constant names above, no input
    "new.rowid IS old.rowid AND "  # noqa: S608
    + " AND ".join(f"new.{name} IS old.{name}" for name in _KEPT)
    + "".join(
        f" AND (new.{name} IS old.{name} OR (new.{name} IS NULL "
        f"AND json_extract(old.personal, '$.\"/{name}\"') IS NOT NULL))"
        for name in ("user_email", "ip_address", "user_agent")
    )
    + " AND (new.personal IS old.personal OR new.personal IS NULL OR ("
    "json_valid(new.personal) AND json_type(new.personal) = 'object' AND NOT EXISTS ("
    "SELECT 1 FROM json_each(new.personal) AS n WHERE n.value IS NOT ("
    "SELECT o.value FROM json_each(old.personal) AS o WHERE o.key = n.key))))"
)
UPDATE_TRIGGER = f"""
CREATE TRIGGER IF NOT EXISTS auditmw_events_no_update BEFORE UPDATE ON auditmw_events
WHEN NOT ({ERASURE_ONLY})
BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: UPDATE is not allowed'); END;
"""
SEARCH_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS auditmw_events_search AFTER INSERT ON auditmw_events BEGIN
    INSERT INTO auditmw_search (rowid, text) VALUES (new.rowid, {SEARCH_TEXT_OF_NEW});
END;
""".replace("{SEARCH_TEXT_OF_NEW}", search_text("new."))
SCHEMA_VERSION = "2"  # 2: entry format 2, its openings in ``personal``, the erasure UPDATE
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
    personal TEXT,
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
{UPDATE_TRIGGER}
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
-- Search (EventFilter.search): an FTS5 trigram index of one text per event (SEARCH_TEXT).
-- Contentless (it holds only the index), keyed by the event's rowid, which never changes
-- as the table is append-only. The trigger keeps it in step; the INSERT after it indexes,
-- once, the events of a store created before the index existed.
CREATE VIRTUAL TABLE IF NOT EXISTS auditmw_search USING fts5(
    text, content='', columnsize=0, tokenize='trigram case_sensitive 1');
{SEARCH_TRIGGER}
INSERT INTO auditmw_search (rowid, text) SELECT rowid, {SEARCH_TEXT_OF_ROWS}
    FROM auditmw_events WHERE NOT EXISTS (SELECT 1 FROM auditmw_meta WHERE key = 'search_index');
INSERT OR IGNORE INTO auditmw_meta (key, value) VALUES ('search_index', 'trigram-1');
"""
SCHEMA = (
    SCHEMA.replace("{UPDATE_TRIGGER}", UPDATE_TRIGGER)
    .replace("{SEARCH_TRIGGER}", SEARCH_TRIGGER)
    .replace("{SEARCH_TEXT_OF_ROWS}", search_text(""))
    .replace("{SCHEMA_VERSION}", SCHEMA_VERSION)
)
# Version 1 -> 2 (a store created before entry format 2): the openings column is added
# first (ADD_PERSONAL, when missing), then the two triggers that read it are replaced.
ADD_PERSONAL = "ALTER TABLE auditmw_events ADD COLUMN personal TEXT;"
MIGRATION_2 = (  # constant names only
    "DROP TRIGGER IF EXISTS auditmw_events_no_update;"  # noqa: S608
    + UPDATE_TRIGGER
    + "DROP TRIGGER IF EXISTS auditmw_events_search;"
    + SEARCH_TRIGGER
    + f"UPDATE auditmw_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';"  # noqa: S608
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
        VALUES ('delete', old.rowid, {search_text("old.")});
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
    f"{', '.join(INDEX_COLUMNS)}, {{personal}} FROM auditmw_events AS e ORDER BY log, seq"
)


def setup_script(conn: sqlite3.Connection) -> str:
    """The script that creates the store, or brings it up to ``SCHEMA_VERSION``: one
    transaction. Built from what the file holds now; when another process changed it
    meanwhile, the script fails and is built again (see SQLiteBackend)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(auditmw_events)")}
    version = 0
    if columns:
        row = conn.execute("SELECT value FROM auditmw_meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row is not None and str(row[0]).isdigit() else 1
    return (
        "BEGIN IMMEDIATE;"
        + (ADD_PERSONAL if columns and "personal" not in columns else "")
        + SCHEMA
        + CHECKPOINT_SCHEMA
        + RETENTION_SCHEMA
        + (MIGRATION_2 if columns and version < int(SCHEMA_VERSION) else "")
        + "COMMIT;"
    )


def has_personal_column(conn: sqlite3.Connection) -> bool:
    """Whether the events table has the openings column (a store of version 2 or later)."""
    return any(row[1] == "personal" for row in conn.execute("PRAGMA table_info(auditmw_events)"))


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
