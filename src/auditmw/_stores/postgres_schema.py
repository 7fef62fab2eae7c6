"""PostgreSQL's schema: tables, append-only triggers, the search index, and the migrations
that bring an older store up to ``SCHEMA_VERSION``."""

from __future__ import annotations

import logging

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auditmw._stores.sql import SEARCH_COLUMNS

logger = logging.getLogger("auditmw")

# 1: events and meta; 2: auditmw_checkpoints; 3: triggers fire ALWAYS; 4: entry format 2,
# its openings in ``personal``, the erasure UPDATE (see create_schema, the migrations).
SCHEMA_VERSION = "4"

# Until version 4: every UPDATE, DELETE and TRUNCATE refused.
REJECT_ALL_CHANGES_BODY = """
BEGIN
    RAISE EXCEPTION 'auditmw_events is append-only: % is not allowed', TG_OP;
END """
# The one UPDATE the events table takes: removing personal data (AuditStore.erase). Every
# column but the openings (personal) and the clear index columns of the committed fields
# stays; the openings left are some of those there were, unchanged (each [salt, value]
# compared as jsonb; the column is text read as json, as a JSON Pointer may hold U+0000,
# which jsonb refuses); an index column is kept, or set NULL where the row had that
# field's opening.
# The one narrow DELETE path (docs/retention.md): a row at or below its log's recorded cut.
# The function runs with the store's schema as its search_path (SET ... FROM CURRENT when
# created), so a session cannot point ``auditmw_cuts`` at a table of its own.
# Anything else is refused.
REJECT_CHANGE_BODY = """
BEGIN
    IF TG_OP = 'DELETE' AND to_regclass('auditmw_cuts') IS NOT NULL THEN
        IF OLD.seq <= (SELECT max(last_seq) FROM auditmw_cuts WHERE log = OLD.log) THEN
            RETURN OLD;
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.log, NEW.seq, NEW.id, NEW.timestamp, NEW.user_id, NEW.action, NEW.resource,
            NEW.resource_id, NEW.outcome, NEW.request_id, NEW.prev_hash, NEW.hash, NEW.entry)
           IS NOT DISTINCT FROM
           (OLD.log, OLD.seq, OLD.id, OLD.timestamp, OLD.user_id, OLD.action, OLD.resource,
            OLD.resource_id, OLD.outcome, OLD.request_id, OLD.prev_hash, OLD.hash, OLD.entry)
           AND (NEW.user_email IS NOT DISTINCT FROM OLD.user_email OR (NEW.user_email IS NULL
                AND OLD.personal::json -> '/user_email' IS NOT NULL))
           AND (NEW.ip_address IS NOT DISTINCT FROM OLD.ip_address OR (NEW.ip_address IS NULL
                AND OLD.personal::json -> '/ip_address' IS NOT NULL))
           AND (NEW.user_agent IS NOT DISTINCT FROM OLD.user_agent OR (NEW.user_agent IS NULL
                AND OLD.personal::json -> '/user_agent' IS NOT NULL))
           AND (NEW.personal IS NOT DISTINCT FROM OLD.personal OR NEW.personal IS NULL
                OR (json_typeof(NEW.personal::json) = 'object' AND NOT EXISTS (
                    SELECT 1 FROM json_each(NEW.personal::json) AS n
                    WHERE (OLD.personal::json -> n.key)::jsonb IS DISTINCT FROM n.value::jsonb)))
        THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'auditmw_events is append-only: % is not allowed', TG_OP;
END """
REJECT_CHANGE_FUNCTION = (
    "CREATE OR REPLACE FUNCTION auditmw_reject_change() RETURNS trigger LANGUAGE plpgsql "
    "SET search_path FROM CURRENT AS $$" + REJECT_CHANGE_BODY + "$$;"
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS auditmw_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS auditmw_events (
    log text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    timestamp text COLLATE "C" NOT NULL,
    user_id text COLLATE "C",
    user_email text COLLATE "C",
    action text COLLATE "C" NOT NULL,
    resource text COLLATE "C" NOT NULL,
    resource_id text COLLATE "C",
    outcome text COLLATE "C" NOT NULL,
    ip_address text,
    user_agent text,
    request_id text,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    entry bytea NOT NULL,
    personal text,
    PRIMARY KEY (log, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS auditmw_events_id ON auditmw_events (id);
CREATE INDEX IF NOT EXISTS auditmw_events_time ON auditmw_events (timestamp, id);
CREATE INDEX IF NOT EXISTS auditmw_events_user_id ON auditmw_events (user_id, timestamp, id);
CREATE INDEX IF NOT EXISTS auditmw_events_user_email
    ON auditmw_events (user_email, timestamp, id);
CREATE INDEX IF NOT EXISTS auditmw_events_action ON auditmw_events (action, timestamp, id);
CREATE INDEX IF NOT EXISTS auditmw_events_resource ON auditmw_events (resource, timestamp, id);
CREATE INDEX IF NOT EXISTS auditmw_events_resource_id
    ON auditmw_events (resource_id, timestamp, id);
CREATE INDEX IF NOT EXISTS auditmw_events_outcome ON auditmw_events (outcome, timestamp, id);
{REJECT_CHANGE_FUNCTION}
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_events_no_change'
                   AND tgrelid = 'auditmw_events'::regclass) THEN
        CREATE TRIGGER auditmw_events_no_change BEFORE UPDATE OR DELETE ON auditmw_events
            FOR EACH ROW EXECUTE FUNCTION auditmw_reject_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_events_no_truncate'
                   AND tgrelid = 'auditmw_events'::regclass) THEN
        CREATE TRIGGER auditmw_events_no_truncate BEFORE TRUNCATE ON auditmw_events
            FOR EACH STATEMENT EXECUTE FUNCTION auditmw_reject_change();
    END IF;
END $$;
INSERT INTO auditmw_meta (key, value) VALUES ('schema_version', '1')
    ON CONFLICT (key) DO NOTHING;
"""
SCHEMA = SCHEMA.replace("{REJECT_CHANGE_FUNCTION}", REJECT_CHANGE_FUNCTION)
TRIGGERS = ("auditmw_events_no_change", "auditmw_events_no_truncate")
# Version 2: signed checkpoints (auditmw._transparency.checkpoints), append-only like the events.
REJECT_CHECKPOINT_CHANGE_BODY = """
BEGIN
    RAISE EXCEPTION 'auditmw_checkpoints is append-only: % is not allowed', TG_OP;
END """
CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS auditmw_checkpoints (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    root bytea NOT NULL,
    frontier bytea NOT NULL,
    note bytea NOT NULL,
    key text NOT NULL,
    created_at text NOT NULL
);
CREATE INDEX IF NOT EXISTS auditmw_checkpoints_log ON auditmw_checkpoints (log, size);
CREATE OR REPLACE FUNCTION auditmw_reject_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql AS $$
{REJECT_CHECKPOINT_CHANGE_BODY}$$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_checkpoints_no_change'
                   AND tgrelid = 'auditmw_checkpoints'::regclass) THEN
        CREATE TRIGGER auditmw_checkpoints_no_change BEFORE UPDATE OR DELETE
            ON auditmw_checkpoints
            FOR EACH ROW EXECUTE FUNCTION auditmw_reject_checkpoint_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_checkpoints_no_truncate'
                   AND tgrelid = 'auditmw_checkpoints'::regclass) THEN
        CREATE TRIGGER auditmw_checkpoints_no_truncate BEFORE TRUNCATE ON auditmw_checkpoints
            FOR EACH STATEMENT EXECUTE FUNCTION auditmw_reject_checkpoint_change();
    END IF;
END $$;
""".replace("{REJECT_CHECKPOINT_CHANGE_BODY}", REJECT_CHECKPOINT_CHANGE_BODY)
CHECKPOINT_TRIGGERS = ("auditmw_checkpoints_no_change", "auditmw_checkpoints_no_truncate")
# Version 3: the append-only triggers fire ALWAYS. A trigger created plainly ('O', origin)
# does not fire in a session with session_replication_role = replica, which any superuser
# may SET without touching the schema: no warning could tell. Only triggers in that
# default state are changed; a disabled one stays disabled, the evidence that it was.
ALWAYS_TRIGGERS = (  # built from the constant trigger names above, no input
    "DO $$ BEGIN\n"  # noqa: S608
    + "".join(
        f"""    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{trigger}'
               AND tgrelid = '{table}'::regclass AND tgenabled = 'O') THEN
        ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger};
    END IF;
"""  # noqa: S608
        for table, triggers in (
            ("auditmw_events", TRIGGERS),
            ("auditmw_checkpoints", CHECKPOINT_TRIGGERS),
        )
        for trigger in triggers
    )
    + "END $$;\n"
)
# Version 4: entry format 2. The openings column, and the trigger function that lets an
# UPDATE remove them (and nothing else).
FORMAT_2 = f"""
ALTER TABLE auditmw_events ADD COLUMN IF NOT EXISTS personal text;
{REJECT_CHANGE_FUNCTION}
"""
# What brings a store of version N - 1 to version N (run in order, under the schema lock).
MIGRATIONS = {2: CHECKPOINT_SCHEMA, 3: ALWAYS_TRIGGERS, 4: FORMAT_2}
# Retention (docs/retention.md): the append-only table of cuts, and the events' trigger
# function that lets a row at or below its log's cut be deleted. Brought in by
# ``ensure_retention_schema`` whatever the version (idempotent; it does not change it).
REJECT_CUT_CHANGE_BODY = """
BEGIN
    RAISE EXCEPTION 'auditmw_cuts is append-only: % is not allowed', TG_OP;
END """
CUT_TRIGGERS = ("auditmw_cuts_no_change", "auditmw_cuts_no_truncate")
RETENTION_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS auditmw_cuts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log text COLLATE "C" NOT NULL,
    last_seq bigint NOT NULL,
    head text NOT NULL,
    frontier text NOT NULL,
    event_id text NOT NULL,
    created_at text NOT NULL
);
CREATE INDEX IF NOT EXISTS auditmw_cuts_log ON auditmw_cuts (log, last_seq);
CREATE OR REPLACE FUNCTION auditmw_reject_cut_change() RETURNS trigger LANGUAGE plpgsql AS $$
{REJECT_CUT_CHANGE_BODY}$$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_cuts_no_change'
                   AND tgrelid = 'auditmw_cuts'::regclass) THEN
        CREATE TRIGGER auditmw_cuts_no_change BEFORE UPDATE OR DELETE ON auditmw_cuts
            FOR EACH ROW EXECUTE FUNCTION auditmw_reject_cut_change();
        ALTER TABLE auditmw_cuts ENABLE ALWAYS TRIGGER auditmw_cuts_no_change;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'auditmw_cuts_no_truncate'
                   AND tgrelid = 'auditmw_cuts'::regclass) THEN
        CREATE TRIGGER auditmw_cuts_no_truncate BEFORE TRUNCATE ON auditmw_cuts
            FOR EACH STATEMENT EXECUTE FUNCTION auditmw_reject_cut_change();
        ALTER TABLE auditmw_cuts ENABLE ALWAYS TRIGGER auditmw_cuts_no_truncate;
    END IF;
END $$;
""".replace("{REJECT_CUT_CHANGE_BODY}", REJECT_CUT_CHANGE_BODY)
    + REJECT_CHANGE_FUNCTION
)
# The searched text: the five fields, ASCII-lowercased (as the SQLite store matches), joined
# by a control character no search term may contain. Immutable, so a trigram index can hold it.
SEARCH_TEXT = (
    "translate("
    + " || chr(31) || ".join(f"coalesce({name}, '')" for name in SEARCH_COLUMNS)
    + ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
)


async def create_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Create the schema, or bring an older one up to ``SCHEMA_VERSION``, idempotently;
    concurrent first starts serialize on a lock. Then the retention tables
    (``ensure_retention_schema``).
    """
    await _create_versioned(conn, schema)
    await ensure_retention_schema(conn, schema)


async def _create_versioned(conn: asyncpg.Connection, schema: str) -> None:
    """The versioned part of ``create_schema``.

    When the store is up to date nothing is run but one SELECT, so an application role
    that may only INSERT and SELECT (see docs/postgres.md) can open a store its owner
    created (after an upgrade, the owner opens it once first, to migrate it).
    """
    version = await schema_version(conn, schema)
    if version is not None and version >= int(SCHEMA_VERSION):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('auditmw schema'))")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')  # validated name
        version = await schema_version(conn, schema)  # again, now that we hold the lock
        if version is not None and version >= int(SCHEMA_VERSION):
            return
        trigram_ops = await trigram_operator_class(conn)
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        if version is None:
            await conn.execute(SCHEMA)
            if trigram_ops is not None:
                await conn.execute(
                    "CREATE INDEX IF NOT EXISTS auditmw_events_search ON auditmw_events "
                    f"USING gin (({SEARCH_TEXT}) {trigram_ops})"
                )
            version = 1
        for target in range(version + 1, int(SCHEMA_VERSION) + 1):
            await conn.execute(MIGRATIONS[target])
        await conn.execute(
            "UPDATE auditmw_meta SET value = $1 WHERE key = 'schema_version'", SCHEMA_VERSION
        )


async def ensure_retention_schema(
    conn: asyncpg.Connection | PoolConnectionProxy, schema: str
) -> None:
    """Create the cut table and the narrow DELETE path when missing or altered (one
    SELECT when the store has them), under the schema lock, in one transaction."""
    if await _retention_schema_current(conn, schema):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('auditmw schema'))")
        if await _retention_schema_current(conn, schema):
            return
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')  # validated name
        await conn.execute(RETENTION_SCHEMA)


async def _retention_schema_current(
    conn: asyncpg.Connection | PoolConnectionProxy, schema: str
) -> bool:
    found = await conn.fetchrow(
        "SELECT to_regclass(quote_ident($1) || '.auditmw_cuts') IS NOT NULL AS cuts, "
        "(SELECT prosrc FROM pg_proc WHERE proname = 'auditmw_reject_change' "
        "AND pronamespace = to_regnamespace(quote_ident($1))) AS source",
        schema,
    )
    source = None if found is None else found["source"]
    return found is not None and (
        bool(found["cuts"])
        and source is not None
        and (source.split() == REJECT_CHANGE_BODY.split())
    )


async def schema_version(conn: asyncpg.Connection, schema: str) -> int | None:
    """The store's schema version; None when ``schema`` holds no store. A store without
    a readable version is taken as version 1 (the migrations are idempotent)."""
    if not await store_exists(conn, schema):
        return None
    value = await conn.fetchval(
        f"SELECT value FROM \"{schema}\".auditmw_meta WHERE key = 'schema_version'"  # noqa: S608
    )
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


async def trigram_operator_class(conn: asyncpg.Connection) -> str | None:
    """pg_trgm's GIN operator class, installing the extension if allowed; None without it
    (search then reads the table instead of the index)."""
    try:
        async with conn.transaction():  # a savepoint: a refusal must not abort the rest
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except asyncpg.PostgresError as exc:
        logger.warning("pg_trgm unavailable (%s): search will not be indexed", exc)
    schema = await conn.fetchval(
        "SELECT quote_ident(n.nspname) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
    )
    return None if schema is None else f"{schema}.gin_trgm_ops"


async def store_exists(conn: asyncpg.Connection, schema: str) -> bool:
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 "
        "AND tablename IN ('auditmw_meta', 'auditmw_events')",
        schema,
    )
    return bool(found == 2)
