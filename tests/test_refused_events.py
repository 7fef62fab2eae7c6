"""One event the database refuses costs only its own caller, on every backend.

Concurrent appends share a transaction (group commit). When the database refuses the data
of one of them (here: a trigger, as an operator might add; tests/_refusals.py), the writer
splits the batch until the refused event is alone: every other event is committed, in
order, in one gapless chain, and only the refused event's caller gets
``EventRefusedError``. An outage is not a refusal: it fails the batch at once, unsplit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from dataclasses import replace
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import pytest

from auditmw import (
    GENESIS_HASH,
    AuditStore,
    Event,
    EventFilter,
    EventRefusedError,
    FailurePolicy,
    NewEvent,
    SQLiteStore,
    StoreError,
    open_store,
)

from ._pg_server import ThrowawayPostgres
from ._postgres import POSTGRES_DSN, store_url
from ._refusals import (
    REFUSAL_MESSAGE,
    REFUSED_PREFIX,
    items_app,
    refuse_marked_rows,
    watch_commits,
)

LOGS = ("default", "tenant-b")


def new_event(index: int, refused: bool) -> NewEvent:
    """Event ``index`` of a test: in one of two logs, refused by the trigger or not."""
    resource_id = f"{REFUSED_PREFIX}{index:05d}" if refused else f"good-{index}"
    log = LOGS[1] if index % 3 == 0 else LOGS[0]
    return NewEvent(action="item.created", resource="item", resource_id=resource_id, log=log)


async def append_concurrently(
    store: AuditStore, count: int, refused: set[int]
) -> list[Event | BaseException]:
    """``count`` appends at once (they share batches), event ``i`` refused if in ``refused``."""
    return await asyncio.gather(
        *(store.append(new_event(i, i in refused)) for i in range(count)),
        return_exceptions=True,
    )


async def assert_only_refused_failed(
    store: AuditStore,
    results: Sequence[Event | BaseException],
    refused: set[int],
    *,
    why: str = REFUSAL_MESSAGE,
    other_events: int = 0,
) -> None:
    """Every good event committed and returned as stored, each refused one's caller told
    ``why``, nothing else: one gapless chain per log, in the order of the appends, that
    verifies; and the next append follows the stored head (no stale head in the store).
    ``other_events``: how many the store held before, outside LOGS."""
    for index, result in enumerate(results):
        if index in refused:
            assert isinstance(result, EventRefusedError), (index, result)
            assert why in str(result)
        else:
            assert isinstance(result, Event), (index, result)
    committed = [result for result in results if isinstance(result, Event)]
    stored = [event async for event in store.iter_events(EventFilter(action="item.created"))]
    assert {event.id: event for event in stored} == {event.id: event for event in committed}
    for log in LOGS:
        chain = sorted((event for event in committed if event.log == log), key=lambda e: e.seq)
        assert [event.seq for event in chain] == list(range(1, len(chain) + 1))
        order = [int(str(event.resource_id).removeprefix("good-")) for event in chain]
        assert order == sorted(order)  # committed in the order they were appended
        following = await store.append(NewEvent(action="after", resource="item", log=log))
        assert following.seq == len(chain) + 1
        assert following.prev_hash == (chain[-1].hash if chain else GENESIS_HASH)
    report = await store.verify()
    assert report.ok, report.findings
    assert report.entries == other_events + len(committed) + len(LOGS) == await store.count()


LAYOUTS = {
    "one-among-many": (128, {77}),
    "several-spread-out": (300, {0, 1, 37, 150, 151, 298, 299}),
    "only-refused": (24, set(range(24))),
}


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
async def test_only_the_refused_events_callers_fail(any_store: AuditStore, layout: str) -> None:
    count, refused = LAYOUTS[layout]
    await refuse_marked_rows(any_store)
    commits = watch_commits(any_store)
    results = await append_concurrently(any_store, count, refused)
    tries = commits.sizes[:]
    await assert_only_refused_failed(any_store, results, refused)
    if layout == "one-among-many":
        assert tries[0] == count  # they did share a batch
        # Halving: one refused event among n costs at most 2 log2(n) more commits.
        assert len(tries) <= 1 + 2 * math.ceil(math.log2(count))


async def test_a_refused_event_in_a_batch_of_several_statements(
    store_url_factory: Callable[[], str],
) -> None:
    """SQLite writes a batch of over ROWS_PER_INSERT rows in several statements of one
    transaction, and a smaller one in a single statement outside any: both kinds of
    batches are split and their other events committed."""
    async with open_store(store_url_factory(), max_batch=3000) as store:
        await refuse_marked_rows(store)
        refused = {5, 700, 1500, 2099}
        results = await append_concurrently(store, 2100, refused)
        await assert_only_refused_failed(store, results, refused)


@pytest.mark.parametrize("count", [120, 1500], ids=["one-statement", "several-statements"])
@pytest.mark.parametrize("how", ["FAIL", "ROLLBACK"])
async def test_every_way_a_sqlite_trigger_refuses(store_path: Path, how: str, count: int) -> None:
    """RAISE(FAIL) outside a transaction keeps (commits) the rows the statement inserted
    before the refused one: their callers are told they are committed, not refused, and
    nothing is written twice. RAISE(ROLLBACK) ends the transaction itself."""
    async with SQLiteStore(store_path, max_batch=3000) as store:
        await refuse_marked_rows(store, sqlite_raise=how)
        refused = {10, 60, 61, count - 1}
        results = await append_concurrently(store, count, refused)
        await assert_only_refused_failed(store, results, refused)


async def test_a_value_over_sqlites_length_limit_fails_only_its_caller(store_path: Path) -> None:
    """ "string or blob too big" (a DataError) is a refusal too. The limit is lowered on
    the store's connection as a SQLite built with a smaller SQLITE_MAX_LENGTH has it."""
    async with SQLiteStore(store_path) as store:
        connection = store.backend._write_conn
        lower_the_limit = partial(connection.setlimit, sqlite3.SQLITE_LIMIT_LENGTH, 20_000)
        await store.backend._in_write_thread(lower_the_limit)
        refused = {3, 50, 99}
        big = {"blob": "x" * 30_000}  # within the event limits (64 KiB), not SQLite's
        results = await asyncio.gather(
            *(
                store.append(replace(new_event(i, False), details=big if i in refused else None))
                for i in range(100)
            ),
            return_exceptions=True,
        )
        await assert_only_refused_failed(store, results, refused, why="string or blob too big")


# What else PostgreSQL refuses, each through its own error class (a trigger's RAISE is P0):
# the statement making the schema refuse ``refuse-`` ids, and what the error says.
PG_REFUSALS = {
    "check-constraint": (  # class 23
        "ALTER TABLE auditmw_events ADD CONSTRAINT test_refuses_marked_rows "
        f"CHECK (NOT starts_with(resource_id, '{REFUSED_PREFIX}')) NOT VALID",
        "violates check constraint",
    ),
    "value-too-long-for-its-column": (  # class 22; every good id has at most 9 characters
        'ALTER TABLE auditmw_events ALTER COLUMN resource_id TYPE varchar(9) COLLATE "C"',
        "value too long",
    ),
    "unique-index": (  # class 23, as a lost commit's retry would be: the ids decide
        "CREATE UNIQUE INDEX test_refuses_marked_rows ON auditmw_events "
        f"((true)) WHERE starts_with(resource_id, '{REFUSED_PREFIX}')",
        "duplicate key value violates unique constraint",
    ),
}


@pytest.mark.parametrize("how", PG_REFUSALS, ids=list(PG_REFUSALS))
async def test_every_way_postgres_refuses_a_row(pg_schema: str, how: str) -> None:
    statement, why = PG_REFUSALS[how]
    async with open_store(store_url(pg_schema)) as store:
        # One marked event is stored before the rule exists (the unique index's first).
        seed = NewEvent(action="seed", resource="item", resource_id="refuse-!", log="seed")
        await store.append(seed)
        admin = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": pg_schema})
        try:
            await admin.execute(statement)
        finally:
            await admin.close()
        refused = {0, 17, 64, 65, 250}
        results = await append_concurrently(store, 251, refused)
        await assert_only_refused_failed(store, results, refused, why=why, other_events=1)


# --- an outage is not a refusal --------------------------------------------------------


async def assert_outage_fails_the_batch_at_once(
    store: AuditStore, outage: AbstractAsyncContextManager[None]
) -> None:
    """A batch (holding a refused event too) tried during ``outage`` fails whole, at its
    first try; once the outage is over the chain goes on."""
    await store.append(new_event(1, refused=False))
    await refuse_marked_rows(store)  # a refused event in the batch must not make it split
    commits = watch_commits(store)
    async with outage:
        results = await append_concurrently(store, 40, {20})
    assert commits.sizes == [40]  # one try of the whole batch, none of a part
    for result in results:
        assert isinstance(result, StoreError) and not isinstance(result, EventRefusedError)
    recovered = await store.append(new_event(1, refused=False))
    assert recovered.seq == 2 and await store.count() == 2


async def test_a_locked_sqlite_database_fails_the_batch_at_once(store_path: Path) -> None:
    @asynccontextmanager
    async def another_process_holds_the_write_lock() -> AsyncIterator[None]:
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")

    async with SQLiteStore(store_path, busy_timeout=0.1) as store:
        await assert_outage_fails_the_batch_at_once(store, another_process_holds_the_write_lock())


async def test_a_stopped_postgres_server_fails_the_batch_at_once(
    pg_server: ThrowawayPostgres,
) -> None:
    """A server that stays down past ``retry_for`` fails the batch at its first (and
    only) try; once it is back the store reconnects at the next append."""

    @asynccontextmanager
    async def the_server_stopped() -> AsyncIterator[None]:
        pg_server.stop()
        yield
        pg_server.start()

    async with open_store(pg_server.store_url(retry_for=0.5)) as store:
        await assert_outage_fails_the_batch_at_once(store, the_server_stopped())


# --- under the middleware --------------------------------------------------------------


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
async def test_under_the_middleware_only_the_offenders_request_fails(
    any_store: AuditStore, fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    await refuse_marked_rows(any_store)
    policy = FailurePolicy(fail_open=fail_open)
    transport = httpx.ASGITransport(items_app(any_store, policy))
    rids = [f"good-{i}" for i in range(40)]
    rids.insert(20, f"{REFUSED_PREFIX}me")
    commits = watch_commits(any_store)
    with caplog.at_level(logging.ERROR, logger="auditmw"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(*(client.post(f"/items/{rid}") for rid in rids))
    assert max(commits.refused) > 1  # the refused event shared a transaction with others

    offender = responses.pop(20)
    if fail_open:
        assert offender.status_code == 201 and offender.json() == {"recorded": False}
    else:
        # The database refused its data: not "try again later" (no Retry-After).
        assert offender.status_code == 422
        assert offender.json()["error"]["code"] == "audit_event_refused"
        assert "retry-after" not in offender.headers
    for response in responses:
        assert response.status_code == 201 and response.json() == {"recorded": True}
    assert policy.failures == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "auditmw"]
    assert len(logged) == 1
    assert ("fail-open" if fail_open else "fail-closed") in logged[0]
    assert REFUSAL_MESSAGE in logged[0]
    stored = [event async for event in any_store.iter_events(EventFilter())]
    assert sorted(event.resource_id or "" for event in stored) == sorted(rids[:20] + rids[21:])
    assert (await any_store.verify()).ok
