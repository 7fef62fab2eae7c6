"""A store error reaches the caller as a clear ``StoreError``; an event is never lost
silently: either its append returns (it is committed) or it raises (it is not stored)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditmw import (
    Event,
    NewEvent,
    SQLiteStore,
    StoreClosedError,
    StoreError,
    ValidationError,
)

from ._waiting import until

TESTS = Path(__file__).resolve().parent


def event(action: str, **fields: Any) -> NewEvent:
    return NewEvent(action=action, resource="thing", **fields)


async def stored_actions(store: SQLiteStore) -> list[str]:
    report = await store.verify()
    assert report.ok, report.findings
    actions = []
    async for row in store.iter_chain_rows():
        actions.append(orjson.loads(row.entry)["action"])
    return actions


# ---------------------------------------------------------------------------------------
# (a) Locked past the timeout


async def test_locked_past_the_timeout_raises_and_stores_nothing(store_path: Path) -> None:
    async with SQLiteStore(store_path, busy_timeout=0.2) as store:
        first = await store.append(event("before"))
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreError, match="locked") as caught:
                await store.append(event("while-locked"))
            assert str(store_path) in str(caught.value)
            # Every caller of a failed batch gets the error, each its own exception.
            results = await asyncio.gather(
                *(store.append(event("while-locked")) for _ in range(5)), return_exceptions=True
            )
            assert all(isinstance(result, StoreError) for result in results)
            assert len({id(result) for result in results}) == 5
            other.execute("ROLLBACK")

        # The lock is gone: appends work again and continue the chain without a gap.
        after = await store.append(event("after"))
        assert after.seq == first.seq + 1
        assert after.prev_hash == first.hash
        assert await stored_actions(store) == ["before", "after"]


async def test_a_lock_held_shorter_than_the_timeout_only_delays_the_append(
    store_path: Path,
) -> None:
    async with SQLiteStore(store_path, busy_timeout=5) as store:
        first = await store.append(event("before"))
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            appends = asyncio.gather(*(store.append(event("waited")) for _ in range(3)))
            await until(lambda: store.backend.lock_waits > 0)
            assert not appends.done()  # waiting for the lock, not failed, not written
            other.execute("COMMIT")
            waited = await appends
        assert [e.seq for e in waited] == [first.seq + 1, first.seq + 2, first.seq + 3]
        assert waited[0].prev_hash == first.hash
        assert await stored_actions(store) == ["before", "waited", "waited", "waited"]


async def test_a_commit_failing_midway_leaves_no_transaction_open(store_path: Path) -> None:
    """After a lock timeout the connection is usable: a later batch is not rolled into a
    stale transaction, and another connection can write as soon as the store is idle."""
    async with SQLiteStore(store_path, busy_timeout=0.1) as store:
        await store.append(event("one"))
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError):
                await store.append(event("refused"))
            other.execute("COMMIT")
            await store.append(event("two"))
            other.execute("BEGIN IMMEDIATE")  # the store holds no lock between batches
            other.execute("ROLLBACK")
        assert await stored_actions(store) == ["one", "two"]


# ---------------------------------------------------------------------------------------
# (b) Disk full, and a read-only file system: a real, small tmpfs in a private namespace


def disk_full_child(directory: str) -> None:
    """Runs in a child process inside its own mount namespace, where ``directory`` is a
    1 MiB tmpfs; prints what happened as JSON for the test to check."""
    print(orjson.dumps(asyncio.run(_disk_full_scenario(Path(directory)))).decode())


def _error(exc: BaseException) -> dict[str, Any]:
    return {"store_error": isinstance(exc, StoreError), "message": str(exc)}


async def _disk_full_scenario(directory: Path) -> dict[str, Any]:
    path = directory / "audit.db"
    facts: dict[str, Any] = {}
    async with SQLiteStore(path) as store:
        before = [await store.append(event("ok")) for _ in range(3)]
        filler = directory / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        for size in (1 << 16, 1 << 12, 1):  # fill to the last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                facts["filled"] = exc.errno == errno.ENOSPC
        os.close(fd)

        errors = []
        try:
            await store.append(event("refused", details={"blob": "x" * 50_000}))
        except Exception as exc:
            errors.append(_error(exc))
        for result in await asyncio.gather(
            *(store.append(event("refused")) for _ in range(5)), return_exceptions=True
        ):
            errors.append(_error(result) if isinstance(result, BaseException) else {})
        facts["errors"] = errors
        facts["count_while_full"] = await store.count()

        filler.unlink()  # space is back
        after = await store.append(event("after"))
        facts["after"] = [after.seq, after.prev_hash == before[-1].hash]

    async with SQLiteStore(path) as store:  # what a restarted application finds
        facts["actions"] = await stored_actions(store)

    # Read-only file system: the store refuses to open, with a clear error.
    remount = ["mount", "-o", "remount,ro", str(directory)]
    await asyncio.to_thread(subprocess.run, remount, check=True)
    for create in (True, False):
        try:
            async with SQLiteStore(path, create=create):
                facts[f"readonly_open_{create}"] = {}
        except Exception as exc:
            facts[f"readonly_open_{create}"] = _error(exc)
    return facts


def in_private_tmpfs(directory: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a new user and mount namespace where ``directory`` is a fresh
    1 MiB tmpfs (no privileges needed where unprivileged user namespaces are allowed)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    script = 'mount -t tmpfs -o size=1m auditmw-test "$1" && shift && exec "$@"'
    namespace = [unshare, "--user", "--map-root-user", "--mount"]
    return subprocess.run(
        [*namespace, "sh", "-c", script, "sh", str(directory), *command],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_disk_full_raises_and_stores_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "fs"
    directory.mkdir()
    probe = in_private_tmpfs(directory, "true")
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()}")
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS.parent)!r}); "
        "from tests.test_store_errors import disk_full_child; disk_full_child(sys.argv[1])"
    )
    child = in_private_tmpfs(directory, sys.executable, "-c", code, str(directory))
    assert child.returncode == 0, child.stderr
    facts = orjson.loads(child.stdout)

    assert facts["filled"]
    assert len(facts["errors"]) == 6
    for error in facts["errors"]:
        assert error["store_error"], error
        assert "full" in error["message"]
        assert str(directory / "audit.db") in error["message"]
    assert facts["count_while_full"] == 3
    assert facts["after"] == [4, True]  # no seq was used up by the failed appends
    assert facts["actions"] == ["ok", "ok", "ok", "after"]
    for create in (True, False):
        error = facts[f"readonly_open_{create}"]
        assert error["store_error"], error
        assert "cannot open the audit store" in error["message"]


# ---------------------------------------------------------------------------------------
# (c) Closed store


async def test_append_to_a_closed_store_raises(store_path: Path) -> None:
    store = SQLiteStore(store_path)
    with pytest.raises(StoreClosedError):
        await store.append(event("never-opened"))
    async with store:
        await store.append(event("open"))
    with pytest.raises(StoreClosedError, match=r"closed|not open"):
        await store.append(event("after-close"))
    with pytest.raises(StoreClosedError):
        await store.verify()
    await store.close()  # closing twice is harmless
    assert issubclass(StoreClosedError, StoreError)
    async with SQLiteStore(store_path) as reopened:
        assert await stored_actions(reopened) == ["open"]


async def test_append_during_close_raises_instead_of_hanging(store_path: Path) -> None:
    store = await SQLiteStore(store_path).open()
    pending = [asyncio.create_task(store.append(event("queued"))) for _ in range(50)]
    await until(lambda: store.pending == 50)  # the 50 are queued
    closing_task = asyncio.create_task(store.close())
    await until(lambda: not store.is_open)  # close() has begun
    with pytest.raises(StoreClosedError):
        await store.append(event("late"))
    await closing_task
    assert all(isinstance(result, Event) for result in await asyncio.gather(*pending))


# ---------------------------------------------------------------------------------------
# (d) A bad event never poisons a batch


BAD_EVENTS = [
    NewEvent(action="", resource="thing"),
    NewEvent(action="x", resource="thing", details={"n": float("nan")}),
    NewEvent(action="x", resource="thing", details={"n": 2**60}),
    NewEvent(action="x", resource="thing", details={1: "non-string key"}),  # type: ignore[dict-item]
    NewEvent(action="x", resource="r" * 10_000),
    NewEvent(action="x", resource="thing", ip_address="not-an-ip"),
    NewEvent(action="x", resource="thing", outcome="maybe"),  # type: ignore[arg-type]
    NewEvent(action="x", resource="thing", details={"s": "\ud800"}),
]


async def test_bad_events_never_poison_a_batch(store: SQLiteStore) -> None:
    calls = []
    for i in range(200):
        calls.append(store.append(event("good", resource_id=str(i))))
        if i % 25 == 0:
            calls.append(store.append(BAD_EVENTS[i // 25]))
    results = await asyncio.gather(*calls, return_exceptions=True)

    good = [result for result in results if isinstance(result, Event)]
    bad = [result for result in results if not isinstance(result, Event)]
    assert len(good) == 200
    assert sorted(event.seq for event in good) == list(range(1, 201))
    assert len(bad) == len(BAD_EVENTS)
    assert all(isinstance(error, ValidationError) for error in bad)
    assert all(error.field for error in bad if isinstance(error, ValidationError))
    assert await stored_actions(store) == ["good"] * 200


# ---------------------------------------------------------------------------------------
# (e) Closing drains


@pytest.mark.parametrize(
    "options",
    [{}, {"max_pending": 16, "max_batch": 7}],
    ids=["default-queue", "back-pressure"],
)
async def test_close_commits_every_append_already_made(
    store_path: Path, options: dict[str, int]
) -> None:
    store = await SQLiteStore(store_path, **options).open()
    tasks = [
        asyncio.create_task(store.append(event("drained", resource_id=str(i)))) for i in range(1000)
    ]
    await until(lambda: store.pending == 1000)  # every append is queued, or waiting for room
    await store.close()

    assert all(task.done() for task in tasks)
    events = [task.result() for task in tasks]
    assert sorted(event.seq for event in events) == list(range(1, 1001))
    async with SQLiteStore(store_path) as reopened:
        assert await reopened.count() == 1000
        assert (await reopened.verify()).ok
        for sample in events[::97]:
            assert await reopened.get(sample.id) == sample
