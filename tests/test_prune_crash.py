"""``auditmw prune`` killed with SIGKILL at random points, on a real SQLite file and on
PostgreSQL.

Each run starts the command as a child process, waits for an observable state (a
progress line it printed on standard error), then kills it at once or after a random
delay the test chooses. Afterwards the store is either untouched, or the prune is
recorded (the event and the cut rows, one transaction) with all or some of the rows at
or below the cut deleted (they go in batches after recording) — which ``verify``
reports as a warning, not damage, and which running the same command again finishes.
``verify`` exits 0 in every case; never a half-recorded prune.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from auditmw import NewEvent, open_store
from auditmw._cli.exit_codes import ExitCode
from auditmw.testing import append_at

from ._postgres import fresh_schema, require_postgres, store_url
from ._waiting import HANG_GUARD

BEFORE = "2024-06-01"
OLD = 25_000  # entries before BEFORE: more than two of PostgreSQL's delete batches
NEW = 50


def fill(url: str) -> None:
    async def run() -> None:
        async with open_store(url, max_batch=5000) as store:
            old = [
                (
                    NewEvent(action="doc.read", resource="doc", resource_id=str(i)),
                    "2024-05-01T00:00:00.000000Z",
                )
                for i in range(OLD)
            ]
            await append_at(store, old)
            new = [(NewEvent(action="doc.read", resource="doc"), "2024-07-01T00:00:00.000000Z")]
            await append_at(store, new * NEW)

    asyncio.run(run())


def auditmw(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditmw", *argv],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 4,
    )


def prune_killed(url: str, marker: str, delay: float) -> None:
    """Run ``auditmw prune``; once it printed a progress line containing ``marker`` (or
    ended), wait ``delay`` seconds and kill it with SIGKILL."""
    child = subprocess.Popen(
        [sys.executable, "-m", "auditmw", "prune", url, "--before", BEFORE, "--no-archive"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        for line in child.stderr:
            assert "Traceback" not in line, line
            if marker in line:
                break
        if delay:
            # The random kill point; a child done sooner is a valid outcome too.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(delay)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(HANG_GUARD)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr is not None:
            child.stderr.close()


def state(url: str) -> tuple[int, int, int]:
    """(the first seq left in log "default", the cut recorded, how many rows)."""

    async def run() -> tuple[int, int, int]:
        async with open_store(url, create=False) as store:
            first = 0
            async for row in store.iter_chain_rows():
                first = row.seq
                break
            cuts = {r.log: r.cut.last_seq for r in await store.cut_records()}
            return first, cuts.get("default", 0), await store.count()

    return asyncio.run(run())


def verify(url: str) -> dict[str, object]:
    done = auditmw("verify", "--json", url)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    data = orjson.loads(done.stdout)
    assert isinstance(data, dict)
    return data


# Where the kill lands: after the plan (inside or before the recording transaction),
# after recording (PostgreSQL: between delete batches), at once or a little later.
KILLS = [("planned", 0.0), ("planned", 0.02), ("planned", 0.2), ("recorded", 0.0)]


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "audit.db"
    fill(str(path))
    return path


def check_killed_then_finished(url: str) -> None:
    """Either nothing was pruned, or the prune is recorded (and maybe unfinished: rows at
    or below the cut left, a warning, not damage); verify exits 0 either way; the same
    command run again finishes it."""
    first, cut, count = state(url)
    data = verify(url)  # exit 0 whatever the kill left
    if cut == 0:
        assert (first, count) == (1, OLD + NEW)
        assert data["pruned"] is None
    else:
        assert cut == OLD
        assert data["pruned"] is not None
        warnings = data["warnings"]
        assert isinstance(warnings, list)
        if first <= cut:  # recorded, rows left: a warning
            assert any("prune incomplete" in w and "run prune again" in w for w in warnings)
        else:
            assert warnings == []
    again = auditmw("prune", url, "--before", BEFORE, "--no-archive")
    assert again.returncode == ExitCode.OK, again.stderr
    assert state(url) == (OLD + 1, OLD, NEW + 1)
    data = verify(url)
    assert data["warnings"] == []
    assert data["pruned"] is not None


@pytest.mark.parametrize(("marker", "delay"), [*KILLS, ("deleted 10000", 0.0)])
def test_sqlite_prune_killed_is_finished_by_running_it_again(
    sqlite_template: Path, tmp_path: Path, marker: str, delay: float
) -> None:
    path = tmp_path / "audit.db"
    shutil.copy(sqlite_template, path)
    prune_killed(str(path), marker, delay + random.uniform(0, 0.05))
    check_killed_then_finished(str(path))


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_postgres()
    with fresh_schema() as schema:
        url = store_url(schema)
        fill(url)
        yield url


@pytest.mark.parametrize(("marker", "delay"), [*KILLS, ("deleted 10000", 0.0)])
def test_postgres_prune_killed_is_finished_by_running_it_again(
    pg_url: str, marker: str, delay: float
) -> None:
    prune_killed(pg_url, marker, delay + random.uniform(0, 0.05))
    check_killed_then_finished(pg_url)


def test_an_unfinished_prune_is_finished_by_the_next_prune_call(pg_url: str) -> None:
    """Recording without deleting (what a kill after the first transaction leaves),
    made deterministic: the next ``prune()`` finishes it before planning its own."""

    async def run() -> None:
        async with open_store(pg_url) as store:
            backend: Callable[[int], object] = store.backend.delete_pruned
            calls = 0

            async def nothing(limit: int) -> int:
                nonlocal calls
                calls += 1
                return 0

            store.backend.delete_pruned = nothing  # type: ignore[method-assign]
            report = await store.prune(before=BEFORE, archive=None, discard=True)
            assert calls == 2 and report.deleted == 0
            verified = await store.verify()
            assert verified.ok
            assert any("prune incomplete" in w for w in verified.warnings)
            store.backend.delete_pruned = backend  # type: ignore[method-assign]
            again = await store.prune(before=BEFORE, archive=None, discard=True)
            assert again.deleted == OLD and again.moved == ()
            verified = await store.verify()
            assert verified.ok and verified.warnings == []

    asyncio.run(run())
