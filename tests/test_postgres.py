"""What only the PostgreSQL store has to prove: triggers, lost connections, schema."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from auditmw import Checkpointing, Event, NewEvent, SigningKey, open_store
from auditmw._stores.postgres import SCHEMA_VERSION, PostgresStore

from ._postgres import POSTGRES_DSN, store_url, stored_schema_version
from ._waiting import until
from .test_checkpointing import anchored


async def _raw(schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})


@pytest.mark.parametrize("replica_session", [False, True])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE auditmw_events SET action = 'x'",
        "DELETE FROM auditmw_events",
        "TRUNCATE auditmw_events",
        "TRUNCATE auditmw_checkpoints",
    ],
)
async def test_the_database_refuses_changes(
    pg_schema: str, statement: str, replica_session: bool
) -> None:
    """Also in a session that acts as a replica (how restore and replication tools skip
    ordinary triggers): any superuser may SET that, and it changes nothing a warning
    could see, so the triggers fire ALWAYS."""
    async with open_store(store_url(pg_schema)) as store:
        await store.append(NewEvent(action="a", resource="r"))
    conn = await _raw(pg_schema)
    try:
        if replica_session:
            await conn.execute("SET session_replication_role = replica")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM auditmw_events") == 1
    finally:
        await conn.close()


async def test_version_2_triggers_are_made_to_fire_always_but_a_disabled_one_stays_so(
    pg_schema: str,
) -> None:
    url = store_url(pg_schema)
    async with open_store(url) as store:
        await store.append(NewEvent(action="a", resource="r"))
    conn = await _raw(pg_schema)
    try:
        # As version 2 left them (created plainly), but one disabled by someone since.
        await conn.execute(
            "ALTER TABLE auditmw_events ENABLE TRIGGER auditmw_events_no_change;"
            "ALTER TABLE auditmw_events DISABLE TRIGGER auditmw_events_no_truncate;"
            "ALTER TABLE auditmw_checkpoints ENABLE TRIGGER auditmw_checkpoints_no_change;"
            "ALTER TABLE auditmw_checkpoints ENABLE TRIGGER auditmw_checkpoints_no_truncate;"
            "UPDATE auditmw_meta SET value = '2' WHERE key = 'schema_version'"
        )
        async with open_store(url, create=False) as store:  # not migrated: only read
            warnings = await store.schema_warnings()
        assert len(warnings) == 4
        assert sum("session_replication_role = replica" in w for w in warnings) == 3
        assert any("auditmw_events_no_truncate is missing or disabled" in w for w in warnings)

        async with open_store(url) as store:  # as the owner: migrated to version 3 and on
            warnings = await store.schema_warnings()
        # The disabled trigger is still reported: the migration does not hide it.
        assert len(warnings) == 1 and "auditmw_events_no_truncate" in warnings[0]
        states = dict(
            await conn.fetch(
                "SELECT t.tgname::text, t.tgenabled::text FROM pg_trigger AS t "
                "JOIN pg_class AS c ON c.oid = t.tgrelid "
                "WHERE t.tgname LIKE 'auditmw\\_%' AND c.relnamespace = $1::regnamespace",
                pg_schema,
            )
        )
        assert states == {
            "auditmw_events_no_change": "A",
            "auditmw_events_no_truncate": "D",
            "auditmw_checkpoints_no_change": "A",
            "auditmw_checkpoints_no_truncate": "A",
            "auditmw_cuts_no_change": "A",
            "auditmw_cuts_no_truncate": "A",
        }
        assert await stored_schema_version(conn) == SCHEMA_VERSION == "4"
    finally:
        await conn.close()


async def test_entries_are_stored_as_exact_bytes(pg_schema: str) -> None:
    async with open_store(store_url(pg_schema)) as store:
        event = await store.append(
            NewEvent(action="a", resource="r", details={"nul": "a\u0000b", "b": 1, "a": 2})
        )
    conn = await _raw(pg_schema)
    try:
        entry = await conn.fetchval("SELECT entry FROM auditmw_events")
        column_type = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'auditmw_events' AND column_name = 'entry'",
            pg_schema,
        )
    finally:
        await conn.close()
    assert column_type == "bytea"
    assert b'"details":{"a":2,"b":1,"nul":"a\\u0000b"}' in entry
    assert Event.from_entry(entry, event.hash) == event


async def test_schema_creation_is_idempotent_and_concurrent(pg_schema: str) -> None:
    stores = [PostgresStore(POSTGRES_DSN, schema=pg_schema) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    events = await asyncio.gather(
        *(store.append(NewEvent(action="a", resource="r")) for store in stores)
    )
    await asyncio.gather(*(store.close() for store in stores))
    assert sorted(event.seq for event in events) == [1, 2, 3, 4]
    conn = await _raw(pg_schema)
    try:
        assert await stored_schema_version(conn) == SCHEMA_VERSION == "4"
    finally:
        await conn.close()


async def test_stores_sharing_a_log_keep_one_gapless_chain(pg_schema: str) -> None:
    """Several stores (separate connections, as separate hosts would have) at once."""
    stores = [await PostgresStore(POSTGRES_DSN, schema=pg_schema).open() for _ in range(3)]
    try:
        events = await asyncio.gather(
            *(
                stores[i % 3].append(NewEvent(action="a", resource="r", resource_id=str(i)))
                for i in range(600)
            )
        )
        assert sorted(event.seq for event in events) == list(range(1, 601))
        report = await stores[0].verify()
        assert report.ok, report.findings
    finally:
        for store in stores:
            await store.close()


KILLS = 6


async def test_a_killed_connection_loses_and_duplicates_nothing(pg_schema: str) -> None:
    """pg_terminate_backend on the writer, again and again, while appends go on."""
    acknowledged: list[Event] = []
    stop = asyncio.Event()
    async with open_store(store_url(pg_schema)) as store:
        assert isinstance(store, PostgresStore)

        async def keep_appending(worker: int) -> None:
            count = 0
            while not stop.is_set():
                event = await store.append(
                    NewEvent(action="a", resource="r", resource_id=f"{worker}-{count}")
                )
                acknowledged.append(event)
                count += 1

        writers = [asyncio.create_task(keep_appending(n)) for n in range(8)]
        killer = await asyncpg.connect(POSTGRES_DSN)
        try:
            kills, killed = 0, None
            for _ in range(KILLS):
                # The store recovered from the last kill: more appends were acknowledged,
                # through a new live writer connection.
                seen = len(acknowledged)
                await until(
                    lambda seen=seen, killed=killed: (
                        len(acknowledged) > seen and store.backend.writer_pid not in (None, killed)
                    )
                )
                killed = store.backend.writer_pid
                kills += bool(await killer.fetchval("SELECT pg_terminate_backend($1)", killed))
        finally:
            await killer.close()
        seen = len(acknowledged)
        await until(lambda: len(acknowledged) > seen)  # and after the last one
        stop.set()
        await asyncio.gather(*writers)
        assert kills == KILLS

        rows = [row async for row in store.iter_chain_rows()]
        ids = [orjson.loads(row.entry)["id"] for row in rows]
        assert len(ids) == len(set(ids)), "an event was written twice"
        assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
        for event in acknowledged:
            assert await store.get(event.id) == event  # present, with the seq it was given
        report = await store.verify()
        assert report.ok, report.findings


async def test_an_insert_and_select_only_role_can_append_but_not_change(pg_schema: str) -> None:
    """The GRANTs of docs/postgres.md: the app's role appends and reads, nothing more."""
    role = f"{pg_schema}_app"
    async with open_store(store_url(pg_schema)) as owner_store:  # the owner creates it
        await owner_store.append(NewEvent(action="a", resource="r"))
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO "{role}"')
        await admin.execute(f'GRANT SELECT, INSERT ON "{pg_schema}".auditmw_events TO "{role}"')
        await admin.execute(f'GRANT SELECT ON "{pg_schema}".auditmw_meta TO "{role}"')
        await admin.execute(
            f'GRANT SELECT, INSERT ON "{pg_schema}".auditmw_checkpoints TO "{role}"'
        )
        await admin.execute(f'GRANT SELECT ON "{pg_schema}".auditmw_cuts TO "{role}"')
        parts = urlsplit(POSTGRES_DSN)
        app_dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        key = SigningKey.generate("audit.example.com")
        checkpointing = Checkpointing(key, every=None, interval=None)
        async with PostgresStore(app_dsn, schema=pg_schema, checkpointing=checkpointing) as app:
            await anchored(app)  # the key record's checkpoint (INSERT into auditmw_checkpoints)
            event = await app.append(NewEvent(action="b", resource="r"))
            assert event.seq == 3  # after the record of the checkpoint key
            assert (await app.verify()).ok
        async with PostgresStore(app_dsn, schema=pg_schema) as app:
            # Closing issued another one.
            assert [c.size for c in await app.checkpoints()] == [2, 3]
            stats = app.checkpoint_stats
        assert stats is None
        conn = await asyncpg.connect(app_dsn, server_settings={"search_path": pg_schema})
        try:
            for statement in (
                "UPDATE auditmw_events SET action = 'x'",
                "DELETE FROM auditmw_events",
                "UPDATE auditmw_checkpoints SET size = 0",
                "DELETE FROM auditmw_checkpoints",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_neutered_trigger_function_is_reported(pg_schema: str) -> None:
    """Triggers that stay enabled but call a function that lets changes through."""
    async with open_store(store_url(pg_schema)) as store:
        await store.append(NewEvent(action="a", resource="r"))
        assert await store.schema_warnings() == []
        conn = await _raw(pg_schema)
        try:
            await conn.execute(
                "CREATE OR REPLACE FUNCTION auditmw_reject_change() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
            )
            await conn.execute("UPDATE auditmw_events SET action = 'forged'")
        finally:
            await conn.close()
        report = await store.verify()
        assert any("auditmw_reject_change" in warning for warning in report.warnings)
        assert not report.ok  # and the chain catches the edit itself
