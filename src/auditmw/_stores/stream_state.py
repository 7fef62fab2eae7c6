"""The durable state of log streams (``auditmw._streams``): one row per stream name in the
table ``auditmw_streams``, kept by every backend.

This is bookkeeping, not the audit record: rows change (the cursor moves, the lease is
renewed) and are not chained or hashed. A stream's row holds

- ``cursors``: per log, the seq of the last event the destination acknowledged (JSON text,
  ``{"default": 1200}``); a log missing from it has had nothing delivered;
- ``settings``: what the stream was last run with (destination without credentials,
  format, filter), for people reading ``auditmw streams``;
- ``delivered_at``, ``last_error``, ``created_at``: timestamps in the log's format, and the
  last failure (None once a batch is delivered again);
- ``lease_owner`` and ``lease_expires`` (Unix seconds): the one forwarder allowed to deliver
  for the stream, until then (see ``StoreBackend.claim_stream``).

The table is created on first use (``CREATE TABLE IF NOT EXISTS``, one statement), so a
store that never streams has none, and the events' schema is untouched. On PostgreSQL the
same statement also adds (once, when the role owns ``auditmw_events``) a statement-level
trigger on it that sends ``NOTIFY auditmw_append`` (payload: the schema), delivered at
each commit, so a forwarder wakes when events arrive instead of polling
(``APPEND_CHANNEL``). The trigger creation briefly locks the events table, so it runs only
when the trigger is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditmw._stores.sql import Row

APPEND_CHANNEL = "auditmw_append"  # PostgreSQL's channel (payload: the schema); in the DDL too
STREAM_COLUMNS = (
    "name, cursors, settings, delivered_at, last_error, lease_owner, lease_expires, created_at"
)


@dataclass(frozen=True, slots=True)
class StreamState:
    """One stream's row (see the module docstring)."""

    name: str
    cursors: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    delivered_at: str | None = None
    last_error: str | None = None
    lease_owner: str | None = None
    lease_expires: float = 0.0
    created_at: str = ""

    def with_cursor(self, log: str, seq: int) -> StreamState:
        return dataclasses.replace(self, cursors={**self.cursors, log: seq})


@dataclass(frozen=True, slots=True)
class StreamSQL:
    """A SQL backend's statements for ``auditmw_streams``: its idempotent DDL (one
    statement) and the query that tells whether the table exists."""

    schema: str
    table_exists: str


SQLITE_STREAM_SQL = StreamSQL(
    schema="""CREATE TABLE IF NOT EXISTS auditmw_streams (
    name TEXT PRIMARY KEY,
    cursors TEXT NOT NULL DEFAULT '{}',
    settings TEXT NOT NULL DEFAULT '{}',
    delivered_at TEXT,
    last_error TEXT,
    lease_owner TEXT,
    lease_expires REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
)""",
    table_exists="SELECT count(*) FROM sqlite_master WHERE type = 'table' "
    "AND name = 'auditmw_streams'",
)

# One DO block: one statement, one transaction, serialized by an advisory lock, so two
# forwarders starting at once do not race on CREATE (PostgreSQL's IF NOT EXISTS is not
# safe against a concurrent CREATE).
POSTGRES_STREAM_SQL = StreamSQL(
    schema="""DO $do$ BEGIN
PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext('auditmw streams'));
CREATE TABLE IF NOT EXISTS auditmw_streams (
    name text COLLATE "C" PRIMARY KEY,
    cursors text NOT NULL DEFAULT '{}',
    settings text NOT NULL DEFAULT '{}',
    delivered_at text,
    last_error text,
    lease_owner text,
    lease_expires double precision NOT NULL DEFAULT 0,
    created_at text NOT NULL
);
IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_notify_append'
        AND tgrelid = to_regclass('auditmw_events')) THEN
    BEGIN
        CREATE OR REPLACE FUNCTION auditmw_notify_append() RETURNS trigger
        LANGUAGE plpgsql AS $fn$ BEGIN
            PERFORM pg_notify('auditmw_append', current_schema());
            RETURN NULL;
        END $fn$;
        CREATE TRIGGER auditmw_notify_append AFTER INSERT ON auditmw_events
        FOR EACH STATEMENT EXECUTE FUNCTION auditmw_notify_append();
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;  -- not the table's owner: forwarders poll instead
    END;
END IF;
END $do$""",
    table_exists="SELECT count(*) FROM pg_class WHERE oid = to_regclass('auditmw_streams')",
)

# Insert the stream's row, or take its lease when it is free, expired or already ours;
# returns the row only when the lease is ours afterwards.
CLAIM_STREAM = (
    "INSERT INTO auditmw_streams (name, created_at, lease_owner, lease_expires) "  # noqa: S608
    "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
    "lease_owner = excluded.lease_owner, lease_expires = excluded.lease_expires "
    "WHERE auditmw_streams.lease_owner IS NULL "
    "OR auditmw_streams.lease_owner = excluded.lease_owner "
    "OR auditmw_streams.lease_expires < ? "
    f"RETURNING {STREAM_COLUMNS}"
)
# Write the whole row, only while the lease is the caller's.
SAVE_STREAM = (
    "UPDATE auditmw_streams SET cursors = ?, settings = ?, delivered_at = ?, "
    "last_error = ?, lease_owner = ?, lease_expires = ? "
    "WHERE name = ? AND lease_owner = ? RETURNING name"
)
STREAMS = f"SELECT {STREAM_COLUMNS} FROM auditmw_streams"  # noqa: S608
STREAM_ORDER = " ORDER BY name"


def claim_values(name: str, owner: str, now: float, expires: float, created_at: str) -> list[Any]:
    return [name, created_at, owner, expires, now]


def save_values(state: StreamState, owner: str) -> list[Any]:
    return [
        encode(state.cursors),
        encode(state.settings),
        state.delivered_at,
        state.last_error,
        state.lease_owner,
        state.lease_expires,
        state.name,
        owner,
    ]


def encode(value: dict[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def stream_state_of(row: Row) -> StreamState:
    """A row of ``STREAM_COLUMNS``."""
    name, cursors, settings, delivered_at, last_error, owner, expires, created_at = row
    return StreamState(
        name=str(name),
        cursors={str(log): int(seq) for log, seq in _object(cursors).items()},
        settings=_object(settings),
        delivered_at=delivered_at,
        last_error=last_error,
        lease_owner=owner,
        lease_expires=float(expires),
        created_at=str(created_at),
    )


def _object(text: object) -> dict[str, Any]:
    try:
        value = orjson.loads(str(text))
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
