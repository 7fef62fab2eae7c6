"""Several OS processes on one store, and processes killed with SIGKILL mid-stream.

The appenders are real processes (``tests/_appender.py``) that print every append that
returned, flushed at once, to a file. A printed event is an acknowledged event: it must
be in the store, exactly once, with the seq and hash the append returned.

Both stores: one SQLite file, or one PostgreSQL schema (whose processes serialize on the
server, each with its own connections, as separate hosts would).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
import orjson
import pytest

from auditmw import GENESIS_HASH, NewEvent, open_store
from auditmw._stores.postgres import PostgresStore

from ._postgres import POSTGRES_DSN, store_url

APPENDER = Path(__file__).with_name("_appender.py")
HANG_GUARD = 120.0  # seconds: only to fail instead of hanging forever, never a measure


@dataclass(frozen=True)
class Returned:
    """One append that returned in a child process."""

    id: str
    seq: int
    hash: str
    log: str


class Appender:
    """A child process appending to the store at ``url``; its stdout goes to a file in
    ``directory``."""

    def __init__(self, url: str, directory: Path, tag: str, *args: str) -> None:
        self.tag = tag
        self.out_path = directory / f"{tag}.out"
        self.err_path = directory / f"{tag}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(APPENDER), url, "--tag", tag, *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )

    def lines(self) -> list[str]:
        """Complete lines printed so far (a line cut by a kill is not one)."""
        text = self.out_path.read_text()
        return text.split("\n")[:-1]

    def returned(self) -> list[Returned]:
        return [Returned(*parse(line)) for line in self.lines() if not is_control(line)]

    def backend_pids(self) -> list[int]:
        """The server processes of a PostgreSQL appender's writer connection."""
        return [int(line.split(" ")[1]) for line in self.lines() if line.startswith("backend ")]

    def wait_until(self, condition: Callable[[list[str]], bool], what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD
        while not condition(self.lines()):
            if self.process.poll() is not None:
                pytest.fail(f"{self.tag} exited ({self.process.returncode}) {what}: {self.err()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.tag}: gave up waiting {what}")
            time.sleep(0.005)

    def wait_ready(self) -> None:
        self.wait_until(lambda lines: "ready" in lines, "before it was ready")

    def wait_appended(self, count: int) -> None:
        self.wait_until(
            lambda lines: sum(not is_control(line) for line in lines) >= count,
            f"before {count} appends",
        )

    def appended(self) -> int:
        return len(self.returned())

    def go(self) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write(b"go\n")
        stdin.close()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(HANG_GUARD) == -signal.SIGKILL
        self.close()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def finish(self) -> None:
        code = self.process.wait(HANG_GUARD)
        self.close()
        assert code == 0, self.err()
        assert self.lines()[-1] == "done"

    def err(self) -> str:
        return self.err_path.read_text()


def is_control(line: str) -> bool:
    return line in ("ready", "done") or line.startswith("backend ")


def parse(line: str) -> tuple[str, int, str, str]:
    id_, seq, hash_, log = line.split(" ")
    return id_, int(seq), hash_, log


def wait_until_sessions_end(url: str, killed: list[Appender]) -> None:
    """PostgreSQL: wait until the server has ended the sessions of killed appenders.

    A session outlives its killed client until the server notices the closed socket; a
    COMMIT the client sent just before it died may still be carried out then. Checking
    the store after that is what makes "the head before the next append" well defined.
    (A SQLite writer dies with its process.)
    """
    if not url.startswith("postgresql://"):
        return
    pids = [pid for appender in killed for pid in appender.backend_pids()]

    async def alive() -> int:
        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
            )
        finally:
            await conn.close()
        return int(count)

    deadline = time.monotonic() + HANG_GUARD
    while asyncio.run(alive()):
        if time.monotonic() > deadline:
            pytest.fail(f"the sessions {pids} of killed appenders did not end")
        time.sleep(0.01)


@pytest.fixture
def appenders() -> Iterator[list[Appender]]:
    """Children started by a test; any still running at the end are killed."""
    started: list[Appender] = []
    yield started
    for appender in started:
        if appender.process.poll() is None:
            appender.process.kill()
            appender.process.wait()
        appender.close()


def start_all(appenders: list[Appender], new: list[Appender]) -> None:
    """Start ``new`` appending at the same moment, once all have opened the store."""
    appenders.extend(new)
    for appender in new:
        appender.wait_ready()
    for appender in new:
        appender.go()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store goes, not created yet: the first children race to create it."""
    if request.param == "sqlite":
        return str(tmp_path / "audit.db")
    return store_url(request.getfixturevalue("pg_schema"))


async def check_store(url: str, returned: list[Returned]) -> dict[str, tuple[int, str]]:
    """Every returned event is stored once, as returned; every log gapless and valid.

    Returns each log's head (last seq, head hash).
    """
    assert len({event.id for event in returned}) == len(returned)
    async with open_store(url) as store:
        report = await store.verify()
        assert report.ok, report.findings[:5]
        stored: dict[str, Returned] = {}
        async for row in store.iter_chain_rows():
            id_ = orjson.loads(row.entry)["id"]
            assert id_ not in stored, f"event {id_} was stored twice"
            stored[id_] = Returned(id_, row.seq, row.hash, row.log)
        for event in returned:
            assert event.id in stored, f"acknowledged event {event} was lost"
            assert stored[event.id] == event
        return {name: (s.last_seq, s.head_hash) for name, s in report.logs.items()}


def test_processes_racing_to_create_a_new_store_all_open_it(
    tmp_path: Path, appenders: list[Appender]
) -> None:
    """Six processes open one SQLite file that does not exist yet, at the same moment.

    Turning the new file to WAL takes an exclusive lock without SQLite's busy handler;
    every process must still open the store (within its busy timeout), not fail with
    "database is locked"."""
    for round_ in range(3):
        path = str(tmp_path / f"audit-{round_}.db")
        children = [
            Appender(path, tmp_path, f"r{round_}c{n}", "--coroutines", "1", "--per-coroutine", "1")
            for n in range(6)
        ]
        appenders.extend(children)
        for child in children:
            child.finish()
        returned = [event for child in children for event in child.returned()]
        assert sorted(event.seq for event in returned) == list(range(1, 7))
        asyncio.run(check_store(path, returned))


@pytest.mark.slow
def test_processes_append_concurrently_into_one_gapless_chain(
    tmp_path: Path, appenders: list[Appender]
) -> None:
    """Three processes (20 coroutines each) create the store and append at once."""
    path = str(tmp_path / "audit.db")  # not created yet: the children race to create it
    per_process = 20 * 40
    children = [
        Appender(
            path, tmp_path, f"p{n}", *("--coroutines", "20", "--per-coroutine", "40"), "--wait-go"
        )
        for n in range(3)
    ]
    start_all(appenders, children)
    for child in children:
        child.finish()

    returned = [event for child in children for event in child.returned()]
    assert len(returned) == 3 * per_process
    assert sorted(event.seq for event in returned) == list(range(1, 3 * per_process + 1))
    heads = asyncio.run(check_store(path, returned))
    assert heads["default"][0] == 3 * per_process
    # The processes really did interleave: no process got one contiguous block of seqs.
    blocks = [sorted(event.seq for event in child.returned()) for child in children]
    assert any(block[-1] - block[0] + 1 > len(block) for block in blocks)
    # ...and fairly: each got into the first half of the chain. (With SQLite's busy
    # handler alone one process could run to the end while the others slept in its
    # growing back-off; see SQLiteStore._write_transaction.)
    assert all(block[0] <= 3 * per_process // 2 for block in blocks)


def wait_until_appended_together(children: list[Appender], count: int) -> None:
    """Until ``children`` have together printed ``count`` returned appends, whichever of
    them did (a child that stops early fails the test)."""
    deadline = time.monotonic() + HANG_GUARD
    while sum(child.appended() for child in children) < count:
        for child in children:
            if child.process.poll() is not None:
                pytest.fail(f"{child.tag} exited ({child.process.returncode}): {child.err()}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {count} appends")
        time.sleep(0.005)


@pytest.mark.slow
def test_processes_appending_flat_out_share_the_sqlite_write_lock_fairly(
    tmp_path: Path, appenders: list[Appender]
) -> None:
    """Three processes with 32 coroutines each, never idle, until the log holds 1,500 of
    their entries: none may be shut out of it for long. (Behind SQLite's own busy handler,
    whose sleeps grow to 100 ms, one process could go on committing while the others
    waited for up to a second; see SQLiteStore._write_transaction.) The run is measured
    in entries, not seconds, so a slow machine runs it longer instead of testing less."""
    path = str(tmp_path / "audit.db")
    asyncio.run(check_store(path, []))  # created before the race: this is about appends
    children = [
        Appender(path, tmp_path, f"p{n}", "--coroutines", "32", "--wait-go") for n in range(3)
    ]
    start_all(appenders, children)
    wait_until_appended_together(children, 5000)
    # All stopped at once: killing one at a time would leave the end of the log to the
    # ones still running, a stretch the first one had no part in.
    for child in children:
        child.process.send_signal(signal.SIGKILL)
    for child in children:
        child.kill()

    asyncio.run(check_store(path, [event for child in children for event in child.returned()]))
    blocks = [sorted(event.seq for event in child.returned()) for child in children]
    assert all(blocks), [len(block) for block in blocks]
    total = max(block[-1] for block in blocks)
    assert total >= 1500
    for block in blocks:
        # The longest stretch of the chain this process had no part in (its first and
        # last entries included: shut out at the start or the end counts too).
        edges = [0, *block, total + 1]
        longest = max(after - before - 1 for before, after in itertools.pairwise(edges))
        assert longest < total // 10, (longest, total, [len(b) for b in blocks])


@pytest.mark.slow
def test_postgres_processes_append_concurrently_into_one_gapless_chain(
    pg_schema: str, tmp_path: Path, appenders: list[Appender]
) -> None:
    """Four processes (40 coroutines each) create the schema and append to one log at once,
    each through its own connections, as four hosts would."""
    url = store_url(pg_schema)  # the schema does not exist yet: the children race to create it
    per_process = 40 * 25
    children = [
        Appender(
            url, tmp_path, f"p{n}", *("--coroutines", "40", "--per-coroutine", "25"), "--wait-go"
        )
        for n in range(4)
    ]
    start_all(appenders, children)
    for child in children:
        child.finish()

    returned = [event for child in children for event in child.returned()]
    assert len(returned) == 4 * per_process
    assert sorted(event.seq for event in returned) == list(range(1, 4 * per_process + 1))
    heads = asyncio.run(check_store(url, returned))
    assert heads == {"default": (4 * per_process, max(returned, key=lambda e: e.seq).hash)}
    # The processes really did interleave: no process got one contiguous block of seqs.
    blocks = [sorted(event.seq for event in child.returned()) for child in children]
    assert any(block[-1] - block[0] + 1 > len(block) for block in blocks)


async def test_postgres_writers_locking_logs_in_opposite_orders_do_not_deadlock(
    pg_schema: str,
) -> None:
    """Two writers (as two hosts would have) whose batches name the same logs in opposite
    orders. Locking each log when the batch first names it would let each writer hold one
    log's lock while waiting for the other's: PostgreSQL breaks such a deadlock by failing
    one transaction, and its appends would fail. Each round has a good chance to deadlock
    that way; the logs must be locked in one order by every writer."""
    first, second = (PostgresStore(POSTGRES_DSN, schema=pg_schema) for _ in range(2))
    async with first, second:
        for _ in range(20):
            await asyncio.gather(
                first.append(NewEvent(action="a", resource="r", log="x")),
                first.append(NewEvent(action="a", resource="r", log="y")),
                second.append(NewEvent(action="a", resource="r", log="y")),
                second.append(NewEvent(action="a", resource="r", log="x")),
            )
        report = await first.verify()
        assert report.ok, report.findings[:5]
        assert {name: s.last_seq for name, s in report.logs.items()} == {"x": 40, "y": 40}


@pytest.mark.slow
def test_processes_share_several_logs(url: str, tmp_path: Path, appenders: list[Appender]) -> None:
    """Batches that mix logs, from several processes: each log is its own gapless chain."""
    logs = ("default", "billing", "admin")
    children = [
        Appender(
            url,
            tmp_path,
            f"p{n}",
            *("--coroutines", "12", "--per-coroutine", "20", "--wait-go"),
            *("--logs", ",".join(logs)),
        )
        for n in range(3)
    ]
    start_all(appenders, children)
    for child in children:
        child.finish()

    returned = [event for child in children for event in child.returned()]
    assert len(returned) == 3 * 12 * 20
    heads = asyncio.run(check_store(url, returned))
    for log in logs:
        seqs = sorted(event.seq for event in returned if event.log == log)
        assert seqs == list(range(1, 3 * 4 * 20 + 1))
        assert heads[log][0] == len(seqs)


async def append_after_crash(url: str, heads: dict[str, tuple[int, str]]) -> None:
    """The reopened store continues the chain exactly where the stored bytes end."""
    last_seq, head_hash = heads.get("default", (0, GENESIS_HASH))
    async with open_store(url) as store:
        event = await store.append(NewEvent(action="app.restarted", resource="app"))
        assert event.seq == last_seq + 1
        assert event.prev_hash == head_hash
        report = await store.verify()
        assert report.ok, report.findings[:5]
        assert report.logs["default"].last_seq == event.seq
        assert report.logs["default"].head_hash == event.hash


@pytest.mark.slow
def test_kill_9_mid_stream_loses_no_acknowledged_event(
    url: str, tmp_path: Path, appenders: list[Appender]
) -> None:
    """SIGKILL at different moments of heavy appending (50 coroutines; SQLite with
    synchronous=FULL, PostgreSQL with the transaction the killed process left open).

    After each kill: every event whose append had returned is stored as returned, the
    store reopens, verifies, and the next append continues the chain. The rounds use
    one store, so every round also starts from the previous crash.
    """
    acknowledged: list[Returned] = []
    for round_, kill_after in enumerate([0, 1, 150, 1500]):
        child = Appender(url, tmp_path, f"crash{round_}", "--coroutines", "50")
        appenders.append(child)
        child.wait_ready()
        if kill_after:
            child.wait_appended(kill_after)
        child.kill()
        returned = child.returned()
        assert len(returned) >= kill_after
        acknowledged.extend(returned)
        wait_until_sessions_end(url, [child])
        heads = asyncio.run(check_store(url, acknowledged))
        asyncio.run(append_after_crash(url, heads))


@pytest.mark.slow
def test_a_writer_killed_mid_commit_does_not_stop_the_others(
    url: str, tmp_path: Path, appenders: list[Appender]
) -> None:
    """Two processes append; one is killed (likely holding the write lock, mid-commit).
    The other keeps appending past that moment; then it is killed too."""
    victim, survivor = (
        Appender(url, tmp_path, tag, "--coroutines", "50", "--wait-go") for tag in "vs"
    )
    start_all(appenders, [victim, survivor])
    victim.wait_appended(300)
    victim.kill()
    after_kill = survivor.appended()
    survivor.wait_appended(after_kill + 300)
    survivor.kill()

    returned = victim.returned() + survivor.returned()
    wait_until_sessions_end(url, [victim, survivor])
    heads = asyncio.run(check_store(url, returned))
    asyncio.run(append_after_crash(url, heads))
