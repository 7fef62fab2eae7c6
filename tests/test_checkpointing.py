"""Issuing signed checkpoints from the stores: when, what, where, and under attack.

Every test runs on real SQLite files and a real PostgreSQL schema (``store_url_factory``).
Roots are recomputed independently from the stored hashes, signatures checked with
``open_checkpoint``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from auditmw import (
    KEY_ROTATED_ACTION,
    AdminApp,
    AuditStore,
    Checkpointing,
    CheckpointingError,
    DirectorySink,
    EventFilter,
    NewEvent,
    SigningKey,
    SinkConflictError,
    StoredCheckpoint,
    open_store,
    read_sink,
    signing_key_from_env,
)
from auditmw._stores.postgres import SCHEMA_VERSION
from auditmw._transparency.merkle import Frontier, root
from auditmw._transparency.notes import log_origin, open_checkpoint, save_signing_key
from auditmw._transparency.proofs import prove_inclusion
from auditmw._transparency.sinks import checkpoint_file_name

from ._postgres import POSTGRES_DSN, stored_schema_version
from ._waiting import eventually
from .test_admin import ADMIN, authorize

KEY = SigningKey.generate("audit.example.com/test")
OTHER_KEY = SigningKey.generate("audit.example.com/next")


def checkpointing(**options: Any) -> Checkpointing:
    options.setdefault("every", None)
    options.setdefault("interval", None)
    return Checkpointing(options.pop("key", KEY), **options)


async def append(store: AuditStore, count: int, log: str = "default") -> None:
    for _ in range(count):
        await store.append(NewEvent(action="a", resource="r", log=log))


async def stored_leaves(store: AuditStore, log: str, size: int) -> list[bytes]:
    return [leaf async for leaf in store.leaf_hashes(log, 0, size)]


async def assert_valid(
    store: AuditStore, key: SigningKey = KEY, *, log: str | None = None
) -> list[StoredCheckpoint]:
    """Every stored checkpoint (of ``log``) has the root of its first ``size`` leaves,
    recomputed here, and a valid signature by ``key`` over exactly that."""
    stored = await store.checkpoints(log)
    for checkpoint in stored:
        hashes = await stored_leaves(store, checkpoint.log, checkpoint.size)
        assert len(hashes) == checkpoint.size
        assert root(hashes) == checkpoint.root
        opened = open_checkpoint(
            checkpoint.note, [key.verifier], origin=log_origin(key.name, checkpoint.log)
        )
        assert (opened.checkpoint.size, opened.checkpoint.root) == (
            checkpoint.size,
            checkpoint.root,
        )
    return stored


async def anchored(store: AuditStore) -> None:
    """Wait until the log's newest key record is covered by a checkpoint of its key (the
    issuer signs one at once, in its own task, when it records a new key)."""
    records = [e async for e in store.iter_events(EventFilter(action=KEY_ROTATED_ACTION))]
    record = records[-1]

    async def covered() -> bool:
        stored = await store.checkpoints(record.log)
        return any(checkpoint.size >= record.seq for checkpoint in stored)

    await eventually(covered)


@contextlib.asynccontextmanager
async def issuing(url: str, config: Checkpointing | None = None) -> AsyncIterator[AuditStore]:
    """A store issuing checkpoints, once the key record it made when opening is anchored:
    the sizes issued after that are exact."""
    async with open_store(url, checkpointing=config or checkpointing()) as store:
        await anchored(store)
        yield store


def count_leaf_reads(store: AuditStore) -> list[tuple[int, int]]:
    """Record the ranges the store is asked to read from now on."""
    ranges: list[tuple[int, int]] = []
    original = store.backend.leaf_hashes

    def recording(log: str, start: int, end: int) -> AsyncIterator[bytes]:
        ranges.append((start, end))
        return original(log, start, end)

    store.backend.leaf_hashes = recording  # type: ignore[method-assign]
    return ranges


class Raw:
    """Statements behind the store's back, as someone with database access runs them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql://")

    async def execute(self, sqlite_sql: str, postgres_sql: str | None = None) -> None:
        if self.postgres:
            schema = parse_qs(urlsplit(self.url).query)["schema"][0]
            conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
            try:
                await conn.execute(postgres_sql or sqlite_sql)
            finally:
                await conn.close()
        else:
            db = sqlite3.connect(self.url, isolation_level=None)
            try:
                db.executescript(sqlite_sql)
            finally:
                db.close()

    async def dump(self) -> bytes:
        """Every byte the store holds, for searching secrets in it."""
        if not self.postgres:
            return b"".join(
                path.read_bytes() for path in Path(self.url).parent.glob(Path(self.url).name + "*")
            )
        schema = parse_qs(urlsplit(self.url).query)["schema"][0]
        conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
        try:
            rows = []
            for table in ("auditmw_events", "auditmw_checkpoints", "auditmw_meta"):
                rows += await conn.fetch(f"SELECT t::text AS row FROM {table} t")
        finally:
            await conn.close()
        return "\n".join(row["row"] for row in rows).encode()


# --- when checkpoints are issued ----------------------------------------------------------


async def test_every_n_entries_and_on_close(store_url_factory: Callable[[], str]) -> None:
    url = store_url_factory()
    async with issuing(url, checkpointing(every=5)) as store:
        await append(store, 23)  # + the key record: 24 entries

        async def two_issued() -> bool:
            return len(await store.checkpoints()) >= 3  # the key record's, then by count

        await eventually(two_issued)
        stats = store.checkpoint_stats
        assert stats is not None and stats.failures == 0
    async with open_store(url) as store:
        stored = await assert_valid(store)
        sizes = [checkpoint.size for checkpoint in stored]
        assert sizes == sorted(set(sizes)) and sizes[0] == 1 and sizes[1] >= 6
        assert sizes[-1] == 24 == await store.last_seq("default")  # closing issued the last
        # Issued as entries accumulated, not only at the end.
        assert len(sizes) >= 4


async def test_interval(store_url_factory: Callable[[], str]) -> None:
    async with issuing(store_url_factory(), checkpointing(interval=0.1)) as store:
        await append(store, 3)

        async def issued() -> bool:
            return (await store.checkpoints())[-1].size > 1

        await eventually(issued)
        stored = await assert_valid(store)
        assert stored[-1].size == 4
        await append(store, 2)  # a new deadline for the new entries

        async def issued_again() -> bool:
            return (await store.checkpoints())[-1].size == 6

        await eventually(issued_again)
        assert await store.issue_checkpoints() == []  # nothing new: nothing to issue
        assert [c.size for c in await store.checkpoints()] == [1, 4, 6]


async def test_each_log_has_its_own_checkpoints(store_url_factory: Callable[[], str]) -> None:
    async with issuing(store_url_factory()) as store:
        await append(store, 3, log="billing/eu")
        await append(store, 2, log="..")
        issued = await store.issue_checkpoints()
        assert {(c.log, c.size) for c in issued} == {("billing/eu", 3), ("..", 2)}
        assert [c.size for c in await store.checkpoints("default")] == [1]  # the key record
        assert await store.issue_checkpoints() == []  # nothing new: nothing issued
        await assert_valid(store)
        assert await store.logs() == ["..", "billing/eu", "default"]
        assert [c.log for c in await store.checkpoints()] == ["..", "billing/eu", "default"]
        assert [c.size for c in await store.checkpoints("billing/eu")] == [3]


async def test_a_run_that_did_not_close_is_caught_up(store_url_factory: Callable[[], str]) -> None:
    """Entries left without a checkpoint by an earlier run are covered by the next one."""
    url = store_url_factory()
    async with open_store(url) as store:  # no checkpointing at all
        await append(store, 7)
    async with open_store(url, checkpointing=checkpointing()) as store:
        pass  # nothing appended in this run but the key record
    async with open_store(url) as store:
        stored = await assert_valid(store)
        assert [c.size for c in stored] == [8]


async def test_a_new_key_is_anchored_at_once(store_url_factory: Callable[[], str]) -> None:
    """Neither by count nor by time, and the store not closed: the record of a new key
    still gets its checkpoint right away. ``verify`` takes a record without one for
    checkpoints removed, so an open store must not be caught without it for long."""
    url = store_url_factory()
    async with open_store(url, checkpointing=checkpointing()) as store:

        async def covered() -> bool:
            return [c.size for c in await store.checkpoints()] == [1]

        await eventually(covered)
        await assert_valid(store)
        await append(store, 3)  # later entries wait for the usual triggers
        assert [c.size for c in await store.checkpoints()] == [1]
        report = await store.verify()
        assert report.ok and report.findings == [], report.summary()


# --- the sink -----------------------------------------------------------------------------


async def test_sink_gets_every_committed_checkpoint(
    store_url_factory: Callable[[], str], tmp_path: Path
) -> None:
    url, sink = store_url_factory(), tmp_path / "sink"
    async with open_store(url, checkpointing=checkpointing(sink=DirectorySink(sink))) as store:
        await append(store, 4)
        await store.issue_checkpoints()
        await append(store, 3, log="billing/eu")
    async with open_store(url) as store:
        stored = await assert_valid(store)
    files = read_sink(sink)
    assert sorted(note for _, note in files) == sorted(c.note for c in stored)
    assert sorted(Path(path).relative_to(sink).as_posix() for path, _ in files) == sorted(
        checkpoint_file_name(c.log, c.size) for c in stored
    )
    assert "billing%2Feu/00000000000000000003.checkpoint" in {
        Path(path).relative_to(sink).as_posix() for path, _ in files
    }
    assert [p.name for p in sink.rglob("*") if p.is_file() and p.suffix != ".checkpoint"] == []


def test_directory_sink_never_overwrites(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    path = sink.write("default", 5, b"note one\n")
    assert path == tmp_path / "default" / "00000000000000000005.checkpoint"
    sink.write("default", 5, b"note one\n")  # the same again: a no-op
    with pytest.raises(SinkConflictError):
        sink.write("default", 5, b"note two\n")
    assert path.read_bytes() == b"note one\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "00000000000000000005.checkpoint",
        "default",
    ]  # no temporary file left behind
    # Log names never escape the directory or hide.
    assert checkpoint_file_name("..", 1) == "%2E./00000000000000000001.checkpoint"
    assert checkpoint_file_name(".x", 1).startswith("%2Ex/")
    assert checkpoint_file_name("a/b", 1).startswith("a%2Fb/")


async def test_a_failing_sink_does_not_fail_appends(
    store_url_factory: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, int]] = []

    async def broken(log: str, size: int, note: bytes) -> None:
        calls.append((log, size))
        raise OSError("bucket unreachable")

    url = store_url_factory()
    with caplog.at_level(logging.ERROR, logger="auditmw"):
        async with open_store(url, checkpointing=checkpointing(every=3, sink=broken)) as store:
            await append(store, 10)
            stats = store.checkpoint_stats
        assert stats is not None
    assert stats.sink_failures == len(calls) >= 2 and stats.failures == 0
    assert "sink failed" in caplog.text
    async with open_store(url) as store:
        assert await store.last_seq("default") == 11
        assert len(await assert_valid(store)) == stats.issued == len(calls)


async def test_sink_sees_only_committed_checkpoints(
    store_url_factory: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint that could not be stored is not published, and is retried."""
    seen: list[int] = []

    def sink(log: str, size: int, note: bytes) -> None:  # a plain (synchronous) sink
        seen.append(size)

    url = store_url_factory()
    async with issuing(url, checkpointing(sink=sink)) as store:
        assert seen == [1]  # the key record's
        original = store.backend.insert_checkpoint

        async def refuse(row: Any) -> bool:
            raise OSError("disk full")

        store.backend.insert_checkpoint = refuse  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="auditmw"):
            await append(store, 5)  # appends are unaffected
            with pytest.raises(OSError):
                await store.issue_checkpoints()
        stats = store.checkpoint_stats
        assert stats is not None and stats.failures == 1 and "disk full" in str(stats.last_error)
        assert seen == [1] and [c.size for c in await store.checkpoints()] == [1]
        store.backend.insert_checkpoint = original  # type: ignore[method-assign]
    assert seen == [1, 6]  # closing retried it
    async with open_store(url) as store:
        assert [c.size for c in await assert_valid(store)] == [1, 6]


# --- extending the stored tree --------------------------------------------------------------


async def test_reopening_extends_the_stored_frontier(store_url_factory: Callable[[], str]) -> None:
    url = store_url_factory()
    async with issuing(url) as store:
        await append(store, 99)
    async with open_store(url, checkpointing=checkpointing()) as store:
        reads = count_leaf_reads(store)
        await append(store, 10)
        assert [c.size for c in await store.issue_checkpoints()] == [110]
        assert reads == [(100, 110)]  # only the new entries, not the 100 before
        await append(store, 1)
    async with open_store(url) as store:
        assert [c.size for c in await assert_valid(store)] == [1, 100, 110, 111]


@pytest.mark.parametrize("damage", ["garbage", "another tree"])
async def test_a_damaged_frontier_is_rebuilt(
    store_url_factory: Callable[[], str], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = store_url_factory()
    raw = Raw(url)
    async with open_store(url, checkpointing=checkpointing()) as store:
        await append(store, 9)
    bad = (
        b"\x01garbage"
        if damage == "garbage"
        else Frontier.from_leaves([bytes([n]) * 32 for n in range(10)]).to_bytes()
    )
    literal = bad.hex()
    await raw.execute(
        "DROP TRIGGER auditmw_checkpoints_no_update;"
        f"UPDATE auditmw_checkpoints SET frontier = x'{literal}';",
        "ALTER TABLE auditmw_checkpoints DISABLE TRIGGER auditmw_checkpoints_no_change;"
        f"UPDATE auditmw_checkpoints SET frontier = '\\x{literal}'::bytea;"
        "ALTER TABLE auditmw_checkpoints ENABLE TRIGGER auditmw_checkpoints_no_change;",
    )
    async with open_store(url, checkpointing=checkpointing()) as store:
        reads = count_leaf_reads(store)
        await append(store, 5)
        with caplog.at_level(logging.WARNING, logger="auditmw"):
            assert [c.size for c in await store.issue_checkpoints()] == [15]
        assert "frontier" in caplog.text
        assert reads == [(0, 10), (10, 15)]  # rebuilt, checked against the signed root
        await assert_valid(store)


async def test_never_signs_over_a_rewritten_log(tmp_path: Path) -> None:
    """Damaged frontier and rewritten leaves: the issuer refuses rather than sign a
    tree that contradicts its own earlier checkpoint."""
    url = str(tmp_path / "audit.db")
    async with issuing(url) as store:
        await append(store, 4)
    await Raw(url).execute(
        "DROP TRIGGER auditmw_checkpoints_no_update; DROP TRIGGER auditmw_events_no_update;"
        "UPDATE auditmw_checkpoints SET frontier = x'00';"
        f"UPDATE auditmw_events SET hash = '{'ab' * 32}' WHERE seq = 2;"
    )
    async with open_store(url, checkpointing=checkpointing()) as store:
        await append(store, 1)
        with pytest.raises(CheckpointingError, match="rewritten"):
            await store.issue_checkpoints()
        assert [c.size for c in await store.checkpoints()] == [1, 5]


async def test_issuers_sharing_a_store(
    store_url_factory: Callable[[], str], tmp_path: Path
) -> None:
    """Two stores (as two processes would) on one database, both issuing: every
    checkpoint is right, and racing issuers store one copy of a checkpoint."""
    url = store_url_factory()
    config = checkpointing(every=4, sink=DirectorySink(tmp_path / "sink"))
    first = await open_store(url, checkpointing=config).open()
    second = await open_store(url, checkpointing=config).open()
    try:
        await asyncio.gather(append(first, 30), append(second, 30), append(first, 5, log="x"))
        await asyncio.gather(first.issue_checkpoints(), second.issue_checkpoints())
    finally:
        await asyncio.gather(first.close(), second.close())
    async with open_store(url) as store:
        stored = await assert_valid(store)
        assert len({(c.log, c.size) for c in stored}) == len(stored)  # no duplicates
        assert stored[-1].size == await store.last_seq("x") == 5
        assert max(c.size for c in stored if c.log == "default") == 61
        rotations = [e async for e in store.iter_events(EventFilter(action=KEY_ROTATED_ACTION))]
        assert 1 <= len(rotations) <= 2  # opened at once: both may record the key
    assert len(read_sink(tmp_path / "sink")) == len(stored)


ISSUER = """
import asyncio, sys
from auditmw import Checkpointing, NewEvent, open_store, signing_key_from_env

async def main() -> None:
    config = Checkpointing(signing_key_from_env(), every=5, interval=None)
    async with open_store(sys.argv[1], checkpointing=config) as store:
        for n in range(40):
            await store.append(NewEvent(action="a", resource="r", log=("one", "two")[n % 2]))

asyncio.run(main())
"""


@pytest.mark.slow
async def test_issuing_processes_sharing_a_store(store_url_factory: Callable[[], str]) -> None:
    """Real processes, the key given in the environment: every checkpoint is right."""
    url = store_url_factory()
    async with open_store(url):
        pass  # create it once, so the processes race on appends, not on the schema
    env = {**os.environ, "AUDITMW_SIGNING_KEY": KEY.encode()}
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", ISSUER, url, env=env)
        for _ in range(3)
    ]
    assert [await process.wait() for process in processes] == [0, 0, 0]
    async with open_store(url) as store:
        stored = await assert_valid(store)
        for log in ("one", "two"):
            assert max(c.size for c in stored if c.log == log) == await store.last_seq(log) == 60
        assert len({(c.log, c.size) for c in stored}) == len(stored)


# --- the key ------------------------------------------------------------------------------


async def test_key_rotation_is_recorded_with_public_keys_only(
    store_url_factory: Callable[[], str], tmp_path: Path
) -> None:
    url, sink = store_url_factory(), tmp_path / "sink"
    async with issuing(url, checkpointing(sink=DirectorySink(sink))) as store:
        await append(store, 3)
    async with open_store(url, checkpointing=checkpointing(sink=DirectorySink(sink))) as store:
        await append(store, 1)  # same key: nothing recorded
    async with issuing(url, checkpointing(key=OTHER_KEY, sink=DirectorySink(sink))) as store:
        await append(store, 2)
    async with open_store(url) as store:
        events = [e async for e in store.iter_events(EventFilter())]
        records = [e for e in events if e.action == KEY_ROTATED_ACTION]
        assert [(e.seq, e.resource, e.details) for e in records] == [
            (1, "checkpoint_key", {"old_key": None, "new_key": KEY.verifier.encode()}),
            (
                6,
                "checkpoint_key",
                {"old_key": KEY.verifier.encode(), "new_key": OTHER_KEY.verifier.encode()},
            ),
        ]
        stored = await store.checkpoints()
        assert [c.size for c in stored] == [1, 4, 5, 6, 8]  # each record anchored at once
        for checkpoint in stored:
            key = KEY if checkpoint.size < 6 else OTHER_KEY  # the record precedes the new key
            open_checkpoint(checkpoint.note, [key.verifier])
        assert root(await stored_leaves(store, "default", 8)) == stored[-1].root
    everything = await Raw(url).dump() + b"".join(note for _, note in read_sink(sink))
    for key in (KEY, OTHER_KEY):
        for secret in [
            key.seed,
            key.seed.hex().encode(),
            base64.b64encode(key.seed),
            base64.b64encode(b"\x01" + key.seed),
            key.encode().encode(),
        ]:
            assert secret not in everything
    assert KEY.verifier.encode().encode() in everything  # (the dump is searchable)


def test_signing_key_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITMW_SIGNING_KEY", KEY.encode())
    assert signing_key_from_env() == KEY
    save_signing_key(KEY, tmp_path / "audit.key")
    monkeypatch.setenv("MY_KEY", str(tmp_path / "audit.key"))
    assert signing_key_from_env("MY_KEY") == KEY
    monkeypatch.delenv("AUDITMW_SIGNING_KEY")
    with pytest.raises(ValueError, match="AUDITMW_SIGNING_KEY"):
        signing_key_from_env()
    assert KEY.seed.hex() not in repr(Checkpointing(KEY))


def test_configuration_is_checked() -> None:
    for bad in ({"every": 0}, {"interval": 0}, {"interval": -1.0}, {"origin_prefix": ""}):
        with pytest.raises(ValueError):
            Checkpointing(KEY, **bad)
    assert Checkpointing(KEY).prefix == KEY.name
    assert Checkpointing(KEY, origin_prefix="example.com/x").prefix == "example.com/x"


async def test_without_checkpointing(tmp_path: Path) -> None:
    async with open_store(tmp_path / "a.db") as store:
        assert store.checkpoint_stats is None
        with pytest.raises(ValueError, match="without checkpointing"):
            await store.issue_checkpoints()
        assert await store.checkpoints() == []


# --- the table is append-only ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE auditmw_checkpoints SET size = 0",
        "DELETE FROM auditmw_checkpoints",
        "TRUNCATE auditmw_checkpoints",
    ],
)
async def test_the_checkpoint_table_refuses_changes(
    store_url_factory: Callable[[], str], statement: str
) -> None:
    url = store_url_factory()
    if statement.startswith("TRUNCATE") and not url.startswith("postgresql://"):
        pytest.skip("SQLite has no TRUNCATE (DELETE covers it)")
    async with issuing(url) as store:
        await append(store, 2)
    with pytest.raises((sqlite3.DatabaseError, asyncpg.RaiseError), match="append-only"):
        await Raw(url).execute(statement)
    async with open_store(url) as store:
        assert [c.size for c in await assert_valid(store)] == [1, 3]


async def test_dropped_checkpoint_triggers_are_reported(
    store_url_factory: Callable[[], str],
) -> None:
    url = store_url_factory()
    async with open_store(url, checkpointing=checkpointing()) as store:
        await append(store, 1)
        assert await store.schema_warnings() == []
        await Raw(url).execute(
            "DROP TRIGGER auditmw_checkpoints_no_delete;",
            "DROP TRIGGER auditmw_checkpoints_no_truncate ON auditmw_checkpoints;"
            "ALTER TABLE auditmw_checkpoints DISABLE TRIGGER auditmw_checkpoints_no_change;",
        )
        warnings = await store.schema_warnings()
        assert warnings and all("auditmw_checkpoints" in w for w in warnings)
        assert len(warnings) == (1 if not url.startswith("postgresql://") else 2)
        report = await store.verify()
        assert report.warnings == warnings


async def test_a_store_older_than_the_table(tmp_path: Path) -> None:
    """Opened read-only, a store created before checkpoints simply has none."""
    path = tmp_path / "old.db"
    async with open_store(path) as store:
        await append(store, 2)
    await Raw(str(path)).execute("DROP TABLE auditmw_checkpoints;")
    async with open_store(path, create=False) as store:
        assert await store.checkpoints() == [] and await store.schema_warnings() == []
    async with issuing(str(path)) as store:  # gets the table
        await append(store, 1)
    async with open_store(path, create=False) as store:
        assert [c.size for c in await assert_valid(store)] == [3, 4]


# --- anchored proofs ----------------------------------------------------------------------


async def test_proofs_are_anchored_in_the_newest_covering_checkpoint(
    store_url_factory: Callable[[], str],
) -> None:
    async with open_store(store_url_factory(), checkpointing=checkpointing()) as store:
        await append(store, 6)
        await store.issue_checkpoints()  # size 7
        await append(store, 4)
        await store.issue_checkpoints()  # size 11
        await append(store, 2)  # 12 and 13: not yet anchored
        stored = await store.checkpoints()
        for seq in (1, 7, 8, 11):
            proof = await prove_inclusion(store, "default", seq)
            assert proof is not None and proof.anchored and proof.verify()
            assert proof.tree_size == 11 and proof.checkpoint == stored[-1].note.decode()
            opened = open_checkpoint(proof.checkpoint, [KEY.verifier])
            assert opened.checkpoint.root.hex() == proof.root
        proof = await prove_inclusion(store, "default", 12)
        assert proof is not None and not proof.anchored and proof.verify()
        assert proof.tree_size == 13 and proof.to_dict()["checkpoint"] is None

        events = [e async for e in store.iter_events(EventFilter())]
        transport = httpx.ASGITransport(AdminApp(store, authorize=authorize))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = (await client.get(f"/events/{events[2].id}/proof", headers=ADMIN)).json()
            assert body["anchored"] is True and body["tree_size"] == 11
            assert body["checkpoint"] == stored[-1].note.decode()
            body = (await client.get(f"/events/{events[12].id}/proof", headers=ADMIN)).json()
            assert body["anchored"] is False and body["checkpoint"] is None


async def test_a_proof_is_not_anchored_in_a_checkpoint_the_log_contradicts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = str(tmp_path / "audit.db")
    async with open_store(url, checkpointing=checkpointing()) as store:
        await append(store, 4)
    await Raw(url).execute(
        "DROP TRIGGER auditmw_events_no_update;"
        f"UPDATE auditmw_events SET hash = '{'ab' * 32}' WHERE seq = 2;"
    )
    async with open_store(url) as store:
        with caplog.at_level(logging.WARNING, logger="auditmw"):
            proof = await prove_inclusion(store, "default", 3)
        assert proof is not None and not proof.anchored and proof.verify()
        assert "no longer matches" in caplog.text


# --- PostgreSQL: the schema migration ---------------------------------------------------------


async def test_postgres_version_1_store_is_migrated(pg_schema: str) -> None:
    from ._postgres import store_url

    url = store_url(pg_schema)
    async with open_store(url) as store:
        await append(store, 2)
    raw = Raw(url)
    await raw.execute(
        "DROP TABLE auditmw_checkpoints; DROP FUNCTION auditmw_reject_checkpoint_change();"
        "UPDATE auditmw_meta SET value = '1' WHERE key = 'schema_version';"
    )
    async with open_store(url, create=False) as store:
        assert await store.checkpoints() == []
    async with issuing(url) as store:
        await append(store, 1)
        assert await store.schema_warnings() == []
    async with open_store(url) as store:
        assert [c.size for c in await assert_valid(store)] == [3, 4]
    conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": pg_schema})
    try:
        version = await stored_schema_version(conn)
    finally:
        await conn.close()
    assert version == SCHEMA_VERSION
