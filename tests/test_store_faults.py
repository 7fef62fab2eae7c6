"""Faults injected on every backend surface as the same documented ``StoreError``s.

(Unavailable servers and locked files: tests/test_store_outage.py; what verify reports of
damaged pages: tests/test_verify_storage.py.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from auditmw import (
    EventFilter,
    NewEvent,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from auditmw._errors import StorageDamagedError

from ._postgres import POSTGRES_DSN
from .conftest import StoreFactory
from .test_store_outage import READS
from .test_verify_storage import BLOCK, fill, overwrite_block, overwrite_page, relation_file


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


async def test_every_read_of_a_closed_store_raises_store_closed(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        event = await store.append(NewEvent(action="a", resource="r"))
        await store.checkpoints()  # what a store learns of its tables must not outlive it
    for name, read in READS.items():
        with pytest.raises(StoreClosedError, match="not open"):
            await read(store, event)
        # Closed is "not available now": callers that handle that handle this too.
        assert issubclass(StoreClosedError, StoreUnavailableError), name


# What makes an event's stored entry unreadable, behind the store's back (the triggers
# that forbid it dropped first, as only someone with the database's keys can).
DAMAGE = {
    "sqlite": ("DROP TRIGGER auditmw_events_no_update; UPDATE auditmw_events SET entry = x'7b7d'"),
    "postgres": (
        "DROP TRIGGER auditmw_events_no_change ON auditmw_events; "
        "UPDATE auditmw_events SET entry = '\\x7b7d'::bytea"
    ),
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_damaged_entry_reads_as_the_same_error_on_every_path(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """``get`` included: every read that returns the event says which entry is damaged
    and what to run, instead of a parser's exception."""
    if backend == "sqlite":
        url = str(tmp_path / "audit.db")
    else:
        url = f"{POSTGRES_DSN}?schema={request.getfixturevalue('pg_schema')}"
    async with open_store(url) as store:
        event = await store.append(NewEvent(action="a", resource="r"))
    if backend == "sqlite":
        with closing(sqlite3.connect(url, isolation_level=None)) as conn:
            conn.executescript(DAMAGE[backend])
    else:
        schema = url.rsplit("=", 1)[1]
        conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
        try:
            await conn.execute(DAMAGE[backend])
        finally:
            await conn.close()
    async with open_store(url, create=False) as store:
        reads = {
            "get": store.get(event.id),
            "query": store.query(EventFilter()),
            "iter_events": _collect(store.iter_events(EventFilter())),
        }
        for name, read in reads.items():
            with pytest.raises(StoreError) as raised:
                await read
            assert type(raised.value) is StoreError, name
            message = str(raised.value)
            assert "log 'default' seq 1" in message and "auditmw verify" in message, name
        report = await store.verify()
        assert not report.ok


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_damaged_table_page_reads_as_storage_damaged_on_every_backend(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A page of the events table overwritten (a failing disk, a stray write): the reads
    that go through it raise ``StorageDamagedError`` on both backends, not a driver's
    exception."""
    if backend == "sqlite":
        url = str(tmp_path / "audit.db")
        fill(url)
        overwrite_page(Path(url), "auditmw_events")
    else:
        server = request.getfixturevalue("pg_server")
        url = f"{server.dsn}?schema=damaged"
        fill(url)
        table = relation_file(server, "damaged.auditmw_events")
        server.stop("fast")  # every page written out to its file
        overwrite_block(table, table.stat().st_size // BLOCK // 2)
        server.start()

    async def read_all() -> None:
        async with open_store(url, create=False) as store:
            reads = {
                "iter_events": _collect(store.iter_events(EventFilter())),
                "iter_chain_rows": _collect(store.iter_chain_rows()),
            }
            for read in reads.values():
                with pytest.raises(StorageDamagedError):
                    await read

    asyncio.run(read_all())
