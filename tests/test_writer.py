"""The SQLite writer commits on its own thread: a busy event loop does not hold it up."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from auditmw import NewEvent, SQLiteStore


def committed_rows(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM auditmw_events").fetchone()[0])


async def test_batches_commit_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with SQLiteStore(path, max_batch=1) as store:
        appends = [
            asyncio.create_task(store.append(NewEvent(action="a", resource="r"))) for _ in range(5)
        ]
        await asyncio.sleep(0)  # every append is queued
        # Block the loop (as a long request handler would): five batches of one event
        # must still commit, one after the other, without the loop's help.
        deadline = time.monotonic() + 10
        while committed_rows(path) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 (blocking the loop is the point)
        assert committed_rows(path) == 5
        events = await asyncio.gather(*appends)
    assert [event.seq for event in events] == [1, 2, 3, 4, 5]


async def test_a_cancelled_append_is_still_committed_and_the_rest_are_answered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    async with SQLiteStore(path) as store:
        appends = [
            asyncio.create_task(
                store.append(NewEvent(action="a", resource="r", resource_id=str(i)))
            )
            for i in range(50)
        ]
        await asyncio.sleep(0)
        appends[7].cancel()
        results = await asyncio.gather(*appends, return_exceptions=True)
        assert isinstance(results[7], asyncio.CancelledError)
        assert sum(1 for result in results if not isinstance(result, BaseException)) == 49
        assert await store.count() == 50  # queued before the cancel: committed anyway
        assert (await store.verify()).ok
