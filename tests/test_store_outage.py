"""A store that is down, frozen or locked: every call fails in bounded time with
``StoreUnavailableError``, and the store recovers by itself once the database is back.

PostgreSQL runs as a throwaway server of this module (tests/_pg_server.py), stopped
(``pg_ctl stop -m immediate``) or frozen (SIGSTOP) under load. SQLite's equivalent is a
lock another process holds beyond ``busy_timeout``.

The bounds are the configured time plus ``MARGIN``, generous for a loaded 2-core CI
machine, yet far below what a stalled database used to cost: a request hung for as long
as the freeze, and one queued behind a failing batch waited two reconnect windows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from auditmw import (
    AuditStore,
    Event,
    EventFilter,
    NewEvent,
    SQLiteStore,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from auditmw._cli import main
from auditmw._stores.postgres import PostgresStore
from auditmw._transparency.proofs import prove_inclusion

from ._pg_server import ThrowawayPostgres
from ._waiting import until

T = TypeVar("T")
MARGIN = 2.5  # seconds on top of a configured time: scheduling on a loaded CI machine
RETRY_FOR = 2.0  # PostgreSQL: how long an append may take, from its call
TIMEOUT = 1.0  # PostgreSQL: connect_timeout and command_timeout
BUSY_TIMEOUT = 2.0  # SQLite
PACE = 0.05  # seconds between two paced appends
ARRIVALS = 30  # appends made while the server is frozen
FAILED_BEFORE_THAW = 20  # of them, failed (their deadline passed) before it thaws


@dataclass(frozen=True)
class Attempt:
    """One append: when it was called, when it returned or raised, and what it gave."""

    submitted: float
    finished: float
    event: Event | None
    error: StoreError | None

    @property
    def took(self) -> float:
        return self.finished - self.submitted


async def attempt(store: AuditStore, new: NewEvent) -> Attempt:
    submitted = time.monotonic()
    try:
        event = await store.append(new)
    except StoreError as exc:
        return Attempt(submitted, time.monotonic(), None, exc)
    return Attempt(submitted, time.monotonic(), event, None)


def paced_appends(
    store: AuditStore, action: str, count: int, answered: list[Attempt] | None = None
) -> Awaitable[list[Attempt]]:
    """``count`` appends, one every ``PACE`` seconds (started in the background, each in
    its own task; each outcome also goes to ``answered`` as soon as it is known);
    awaited, their outcomes in the order they were called."""

    async def one(new: NewEvent) -> Attempt:
        outcome = await attempt(store, new)
        if answered is not None:
            answered.append(outcome)
        return outcome

    async def stream() -> list[Attempt]:
        tasks: list[asyncio.Task[Attempt]] = []
        for index in range(count):
            new = NewEvent(action=action, resource="r", resource_id=str(index))
            tasks.append(asyncio.create_task(one(new)))
            await asyncio.sleep(PACE)  # pacing the arrivals, not waiting for anything
        return list(await asyncio.gather(*tasks))

    return asyncio.ensure_future(stream())


async def within(seconds: float, awaitable: Awaitable[T], what: str = "it") -> T:
    """What ``awaitable`` gives, if it takes at most ``seconds``: else the test fails
    (rather than hang, as a stalled store used to)."""
    try:
        async with asyncio.timeout(seconds) as limit:
            return await awaitable
    except TimeoutError:
        if limit.expired():
            pytest.fail(f"{what}: not done within {seconds} s")
        raise


async def outcome_of(awaitable: Awaitable[Any]) -> Any:
    """What ``awaitable`` returns, or the ``StoreError`` it raises."""
    try:
        return await awaitable
    except StoreError as exc:
        return exc


def pg_store(server: ThrowawayPostgres, **options: Any) -> AuditStore:
    options = {
        "retry_for": RETRY_FOR,
        "connect_timeout": TIMEOUT,
        "command_timeout": TIMEOUT,
        **options,
    }
    return open_store(server.store_url(), **options)


async def assert_intact(store: AuditStore, acknowledged: list[Event]) -> None:
    """Every acknowledged event is stored as acknowledged, none twice, the chain intact."""
    report = await store.verify()
    assert report.ok, report.findings
    rows = [row async for row in store.iter_chain_rows()]
    ids = [orjson.loads(row.entry)["id"] for row in rows]
    assert len(ids) == len(set(ids)), "an event was written twice"
    for event in acknowledged:
        assert await store.get(event.id) == event


# --- appends: one deadline per append ---------------------------------------------------


async def test_a_frozen_server_fails_each_append_within_retry_for_then_recovers(
    pg_server: ThrowawayPostgres,
) -> None:
    """Appends in flight when the server freezes and appends arriving while it is frozen
    each fail within retry_for of their own call; after the thaw the same store appends
    again, and nothing acknowledged is lost or doubled."""
    attempts: list[Attempt] = []
    stop = asyncio.Event()
    async with pg_store(pg_server) as store:

        async def keep_appending(worker: int) -> None:
            count = 0
            while not stop.is_set():
                new = NewEvent(action="steady", resource="r", resource_id=f"{worker}-{count}")
                attempts.append(await attempt(store, new))
                count += 1

        workers = [asyncio.create_task(keep_appending(n)) for n in range(4)]
        await until(lambda: sum(a.event is not None for a in attempts) >= 40)  # flowing
        pg_server.freeze()
        frozen_at = time.monotonic()
        arrived: list[Attempt] = []
        arriving = paced_appends(store, "arrived", ARRIVALS, arrived)
        # Thawed once appends that arrived while frozen failed: their deadlines passed.
        await until(lambda: sum(a.error is not None for a in arrived) >= FAILED_BEFORE_THAW)
        pg_server.thaw()
        thawed_at = time.monotonic()
        stop.set()
        await asyncio.gather(*workers)
        await arriving
        attempts += arrived

        for a in attempts:
            assert a.took <= RETRY_FOR + MARGIN, a
            if a.error is not None:
                assert isinstance(a.error, StoreUnavailableError), a.error
        # While frozen nothing could commit: what was called and answered then failed.
        during = [a for a in attempts if frozen_at <= a.submitted and a.finished < thawed_at]
        assert len(during) >= FAILED_BEFORE_THAW
        assert all(a.error is not None for a in during)

        # Recovered without reopening the store.
        after = await store.append(NewEvent(action="after", resource="r"))
        acknowledged = [a.event for a in attempts if a.event is not None] + [after]
        await assert_intact(store, acknowledged)


async def test_a_stopped_server_fails_each_append_within_its_own_window(
    pg_server: ThrowawayPostgres,
) -> None:
    """Appends queued behind a failing batch get no second window: a stream of appends
    to a stopped server each fail within retry_for of their own call."""
    window = 1.5 * RETRY_FOR  # wider than the usual test's: the bound must tell 1 from 2
    async with pg_store(pg_server, retry_for=window) as store:
        first = await store.append(NewEvent(action="before", resource="r"))
        pg_server.stop()
        attempts = await paced_appends(store, "while-down", round(3 * window / PACE))
        assert all(isinstance(a.error, StoreUnavailableError) for a in attempts)
        # Before: the appends queued while a batch retried waited up to two windows.
        assert max(a.took for a in attempts) <= window + MARGIN
        assert attempts[0].took >= window - 0.2  # the window was used to reconnect

        pg_server.start()
        after = await store.append(NewEvent(action="after", resource="r"))
        assert after.seq == first.seq + 1  # nothing of the failed appends was stored
        await assert_intact(store, [first, after])


async def test_a_lock_held_too_long_fails_each_sqlite_append_within_its_busy_timeout(
    store_path: Path,
) -> None:
    """The same contract on SQLite: another process holding the write lock."""
    window = 1.5 * BUSY_TIMEOUT
    async with SQLiteStore(store_path, busy_timeout=window) as store:
        first = await store.append(NewEvent(action="before", resource="r"))
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            attempts = await paced_appends(store, "while-locked", round(3 * window / PACE))
            other.execute("ROLLBACK")
        assert all(isinstance(a.error, StoreUnavailableError) for a in attempts)
        assert max(a.took for a in attempts) <= window + MARGIN
        assert attempts[0].took >= window - 0.2
        after = await store.append(NewEvent(action="after", resource="r"))
        assert after.seq == first.seq + 1
        await assert_intact(store, [first, after])


async def test_a_lock_released_in_time_delays_queued_appends_without_failing_them(
    store_path: Path,
) -> None:
    """Deadlines only cut appends short when they pass: a lock released before them
    delays the queue, and every append made meanwhile is committed."""
    async with SQLiteStore(store_path, busy_timeout=10) as store:
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            pending = paced_appends(store, "delayed", round(1.0 / PACE))
            await until(lambda: store.backend.lock_waits > 0)  # a batch waits for it
            other.execute("COMMIT")
            attempts = await pending
        assert attempts and all(a.event is not None for a in attempts)
        await assert_intact(store, [a.event for a in attempts if a.event is not None])


# --- reads ------------------------------------------------------------------------------


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


READS: dict[str, Callable[[AuditStore, Event], Awaitable[Any]]] = {
    "query": lambda store, event: store.query(EventFilter()),
    "query with filters": lambda store, event: store.query(
        EventFilter(action="a", user_id="u", search="abc"), limit=5
    ),
    "get": lambda store, event: store.get(event.id),
    "count": lambda store, event: store.count(),
    "iter_events": lambda store, event: _collect(store.iter_events(EventFilter())),
    "iter_chain_rows": lambda store, event: _collect(store.iter_chain_rows()),
    "distinct_values": lambda store, event: store.distinct_values("action"),
    "histogram": lambda store, event: store.histogram(EventFilter()),
    "verify": lambda store, event: store.verify(),
    "schema_warnings": lambda store, event: store.schema_warnings(),
    "checkpoints": lambda store, event: store.checkpoints(),
    "logs": lambda store, event: store.logs(),
    "last_seq": lambda store, event: store.last_seq(event.log),
    "leaf_hashes": lambda store, event: _collect(store.leaf_hashes(event.log, 0, 1)),
    "prove_inclusion": lambda store, event: prove_inclusion(store, event.log, event.seq),
}


@asynccontextmanager
async def unavailable_store(
    how: str, tmp_path: Path, server: ThrowawayPostgres | None
) -> AsyncIterator[tuple[AuditStore, Event, float, Callable[[], object]]]:
    """An open store holding one event, made unavailable ``how``; yields it, the event,
    how long a call may wait before it fails, and what makes the store available again."""
    if how == "sqlite-locked":
        # A store file in rollback-journal mode (someone converted it; the library makes
        # WAL files, where readers never wait): a writer's exclusive lock blocks readers.
        path = tmp_path / "audit.db"
        async with SQLiteStore(path) as store:
            event = await store.append(NewEvent(action="a", resource="r"))
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
        async with SQLiteStore(path, create=False, busy_timeout=TIMEOUT) as store:
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN EXCLUSIVE")
                yield store, event, TIMEOUT, lambda: other.execute("ROLLBACK")
        return
    assert server is not None
    async with pg_store(server) as store:
        event = await store.append(NewEvent(action="a", resource="r"))
        if how == "postgres-stopped":
            server.stop()
            yield store, event, TIMEOUT, server.start
        else:
            server.freeze()
            yield store, event, TIMEOUT, server.thaw


@pytest.fixture(params=["sqlite-locked", "postgres-stopped", "postgres-frozen"])
def unavailable(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    server = request.getfixturevalue("pg_server") if "postgres" in request.param else None
    return lambda: unavailable_store(request.param, tmp_path, server)


async def test_every_read_fails_in_bounded_time_and_works_again_after(unavailable: Any) -> None:
    async with unavailable() as (store, event, timeout, restore):
        for name, read in READS.items():
            # One wait for a connection and one for an answer, at most.
            outcome = await within(2 * timeout + MARGIN, outcome_of(read(store, event)), name)
            assert isinstance(outcome, StoreUnavailableError), (name, outcome)
        restore()
        # The same open store answers again: no restart.
        assert (await store.query(EventFilter())).events == [event]
        for read in READS.values():
            await read(store, event)
        assert (await store.verify()).ok


# --- opening and closing ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_opening_a_store_on_an_unavailable_server_fails_in_bounded_time(
    pg_server: ThrowawayPostgres, how: str
) -> None:
    url = pg_server.store_url()
    async with open_store(url):  # the schema exists: only connecting is tested below
        pass
    pg_server.stop() if how == "stopped" else pg_server.freeze()
    store = open_store(url, connect_timeout=TIMEOUT, command_timeout=TIMEOUT)
    with pytest.raises(StoreUnavailableError, match="cannot open"):
        await within(2 * TIMEOUT + MARGIN, store.open())


async def test_closing_during_a_freeze_fails_what_is_pending_and_returns(
    pg_server: ThrowawayPostgres,
) -> None:
    store = await pg_store(pg_server).open()
    assert isinstance(store, PostgresStore)
    url = f"{pg_server.dsn}?schema={store.schema}"
    first = await store.append(NewEvent(action="before", resource="r"))
    pg_server.freeze()
    pending = asyncio.create_task(attempt(store, NewEvent(action="p", resource="r")))
    await until(lambda: store.committing)  # its batch is being committed
    # Closing drains the writer: what cannot be committed fails.
    await within(RETRY_FOR + TIMEOUT + MARGIN, store.close())
    outcome = await pending
    assert isinstance(outcome.error, StoreUnavailableError)
    assert not isinstance(outcome.error, StoreClosedError)
    with pytest.raises(StoreClosedError):
        await store.append(NewEvent(action="late", resource="r"))
    pg_server.thaw()
    async with open_store(url) as reopened:
        await assert_intact(reopened, [first])


# --- what is "unavailable" --------------------------------------------------------------


def test_unavailable_is_a_store_error_and_closed_is_unavailable() -> None:
    """Callers catching StoreError (appends: "not committed") keep working; a closed
    store is unavailable too: try again later, elsewhere."""
    assert issubclass(StoreUnavailableError, StoreError)
    assert issubclass(StoreClosedError, StoreUnavailableError)


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_the_cli_exits_3_while_postgres_is_unavailable(
    pg_server: ThrowawayPostgres, how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_server.store_url(connect_timeout=TIMEOUT, command_timeout=TIMEOUT)

    async def fill() -> None:
        async with open_store(url) as store:
            await store.append(NewEvent(action="a", resource="r"))

    asyncio.run(fill())
    assert main(["verify", url]) == 0
    capsys.readouterr()
    pg_server.stop() if how == "stopped" else pg_server.freeze()
    export = ["export", url, "--format", "jsonl", "-o", str(tmp_path / "out.jsonl")]
    for command in (["verify", url], export):
        started = time.monotonic()
        assert main(command) == 3, command
        assert time.monotonic() - started <= 2 * TIMEOUT + MARGIN
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "try again later" in error, error
    pg_server.recover()
    assert main(["verify", url]) == 0


def test_the_cli_exits_3_while_sqlite_is_locked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.db"

    async def fill() -> None:
        async with SQLiteStore(path) as store:
            await store.append(NewEvent(action="a", resource="r"))

    asyncio.run(fill())
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("PRAGMA journal_mode=DELETE")  # (see unavailable_store)
        other.execute("BEGIN EXCLUSIVE")
        assert main(["verify", str(path)]) == 3  # after busy_timeout's default, 5 s
        other.execute("ROLLBACK")
    assert "database is locked (try again later)" in capsys.readouterr().err
    assert main(["verify", str(path)]) == 0


def test_the_time_limits_can_be_set_in_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    """For the CLI and settings read from the environment; other parameters stay asyncpg's."""
    store = open_store(
        "postgresql://audit@db.internal/app?schema=audit&retry_for=3&connect_timeout=0.5"
        "&command_timeout=30&sslmode=disable"
    )
    assert isinstance(store, PostgresStore)
    assert store.schema == "audit"
    assert store._append_timeout == 3.0
    assert (store.backend._connect_timeout, store.backend._command_timeout) == (0.5, 30.0)
    assert store.dsn == "postgresql://audit@db.internal/app?sslmode=disable"
    for bad in ("retry_for=soon", "retry_for=0", "command_timeout=-1", "connect_timeout=inf"):
        with pytest.raises(ValueError, match="positive number of seconds"):
            open_store(f"postgresql://audit@db.internal/app?{bad}")
        assert main(["verify", f"postgresql://audit@db.internal/app?{bad}"]) == 2
    assert "must be a positive number of seconds" in capsys.readouterr().err
