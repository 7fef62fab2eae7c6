"""``auditmw prune`` and ``store.prune``: delete each log's old prefix as one recorded
operation, on both backends (and the in-memory one where it applies).

Each test writes a real store (a SQLite file, or a fresh PostgreSQL schema), archives
and prunes it through the command line or the API, then verifies it, or tampers with it
as someone with database access would (the triggers dropped or disabled first where the
change needs it).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from auditmw import (
    AuditStore,
    Checkpointing,
    EventFilter,
    NewEvent,
    PruneRefusedError,
    RetentionPolicy,
    SigningKey,
    acting_as,
    open_store,
)
from auditmw._cli.exit_codes import ExitCode
from auditmw._event import utc_timestamp
from auditmw._transparency.notes import save_verifier_key
from auditmw._transparency.proofs import prove_inclusion
from auditmw.testing import MemoryStore, append_at

from ._command import cli
from ._postgres import POSTGRES_DSN
from ._waiting import until

DAYS = [1, 2, 3, 7, 4, 5, 8, 9]  # seq 4 came with a clock ahead: it ends a cut at day 5
OTHER_DAYS = [2, 6]


def at(day: int) -> str:
    return f"2024-05-{day:02d}T12:00:00.000000Z"


async def fill_store(store: AuditStore) -> None:
    for log, days in (("default", DAYS), ("other", OTHER_DAYS)):
        events = [
            (NewEvent(action="doc.read", resource="doc", resource_id=f"doc{i}", log=log), at(d))
            for i, d in enumerate(days, 1)
        ]
        await append_at(store, events)


def fill(url: str) -> None:
    async def run() -> None:
        async with open_store(url) as store:
            await fill_store(store)

    asyncio.run(run())


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    made = store_url_factory()
    fill(made)
    return made


def run_sql(url: str, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Run SQL as someone with direct access to the database (a superuser on PostgreSQL)."""
    if not url.startswith("postgresql://"):
        conn = sqlite3.connect(url, isolation_level=None)
        try:
            for sql, params in statements:
                conn.execute(sql, params)
        finally:
            conn.close()
        return
    schema = url.rpartition("schema=")[2]

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
        try:
            for sql, params in statements:
                numbered = sql
                for n in range(1, len(params) + 1):
                    numbered = numbered.replace("?", f"${n}", 1)
                await conn.execute(numbered, *params)
        finally:
            await conn.close()

    asyncio.run(run())


def drop_delete_protection(url: str) -> list[tuple[str, Sequence[Any]]]:
    if url.startswith("postgresql://"):
        return [
            ("ALTER TABLE auditmw_events DISABLE TRIGGER auditmw_events_no_change", ()),
            ("ALTER TABLE auditmw_cuts DISABLE TRIGGER auditmw_cuts_no_change", ()),
        ]
    return [
        ("DROP TRIGGER auditmw_events_no_delete", ()),
        ("DROP TRIGGER auditmw_cuts_no_update", ()),
        ("DROP TRIGGER auditmw_cuts_no_delete", ()),
    ]


def seqs(url: str) -> dict[str, list[int]]:
    async def run() -> dict[str, list[int]]:
        async with open_store(url, create=False) as store:
            found: dict[str, list[int]] = {}
            async for row in store.iter_chain_rows():
                found.setdefault(row.log, []).append(row.seq)
            return found

    return asyncio.run(run())


def verify_json(capsys: pytest.CaptureFixture[str], url: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = cli(capsys, "verify", "--json", url)
    data = orjson.loads(out)
    assert isinstance(data, dict)
    return code, data


def kinds(data: dict[str, Any]) -> list[str]:
    return [finding["kind"] for finding in data["findings"]]


@pytest.fixture
def archive(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The archive of ``url`` before May 5th: "default" seqs 1..3, "other" seq 1."""
    path = tmp_path / "old.jsonl"
    code, _, err = cli(capsys, "archive", url, "--before", "2024-05-05", "-o", str(path))
    assert (code, err) == (ExitCode.OK, "")
    return path


@pytest.fixture
def pruned(url: str, archive: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, out, _ = cli(
        capsys, "prune", url, "--before", "2024-05-05", "--archive", str(archive), "--actor", "ops"
    )
    assert code == ExitCode.OK, out
    assert out.startswith("pruned 4 entries before 2024-05-05T00:00:00.000000Z")
    assert "log 'default': starts after seq 3" in out
    assert "log 'other': starts after seq 1" in out
    return url


# --- prune, then verify ------------------------------------------------------------------


def test_prune_deletes_exactly_the_archived_prefix_and_verify_proves_the_rest(
    pruned: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seqs(pruned) == {"default": [4, 5, 6, 7, 8, 9], "other": [2]}
    code, out, _ = cli(capsys, "verify", pruned)
    assert code == ExitCode.OK, out
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "pruned before 2024-05-05T00:00:00.000000Z" in out
    assert f"archive sha256 {digest}" in out
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.OK
    assert data["pruned"]["archive_sha256"] == digest
    assert data["pruned"]["cuts"] == {"default": 3, "other": 1}
    assert data["pruned"]["entries"] == 4
    assert data["warnings"] == []


def test_the_prune_is_an_event_stating_every_cut(pruned: str) -> None:
    async def run() -> None:
        async with open_store(pruned, create=False) as store:
            page = await store.query(EventFilter(action="audit.pruned"))
            [event] = page.events
            assert event.user_id == "ops"
            assert event.resource == "audit_log"
            assert event.log == "default"
            details = event.details
            assert details is not None
            assert set(details) == {"before", "archive_sha256", "entries", "cuts"}
            assert set(details["cuts"]) == {"default", "other"}
            assert details["cuts"]["default"]["last_seq"] == 3
            assert details["cuts"]["default"]["frontier"]["size"] == 3
            records = await store.cut_records()
            assert {r.log for r in records} == {"default", "other"}
            assert {r.event_id for r in records} == {event.id}

    asyncio.run(run())


def test_a_second_prune_restates_the_earlier_cuts_and_appends_go_on(
    pruned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "prune", pruned, "--before", "2024-05-08", "--no-archive")
    assert code == ExitCode.OK, out
    assert seqs(pruned)["default"] == [7, 8, 9, 10]  # seq 10: the first audit.pruned
    assert "other" not in seqs(pruned)  # its last entry (May 6th) went too

    async def run() -> None:
        async with open_store(pruned, create=False) as store:
            event = await store.append(NewEvent(action="a", resource="r", log="other"))
            assert event.seq == 3
            page = await store.query(EventFilter(action="audit.pruned"))
            newest = page.events[0]
            assert newest.details is not None
            assert newest.details["discarded"] is True
            assert newest.details["archive_sha256"] is None
            assert {log: c["last_seq"] for log, c in newest.details["cuts"].items()} == {
                "default": 6,
                "other": 2,
            }

    asyncio.run(run())
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.OK, data
    assert data["pruned"]["cuts"] == {"default": 6, "other": 2}


def test_a_log_pruned_whole_goes_on_after_its_cut(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "prune", url, "--before", "2024-05-07", "--no-archive")
    assert code == ExitCode.OK, out
    assert "other" not in seqs(url)  # both of its entries were older

    async def run() -> None:
        async with open_store(url, create=False) as store:
            assert await store.last_seq("other") == 2  # the tree goes on after the cut
            event = await store.append(NewEvent(action="a", resource="r", log="other"))
            assert event.seq == 3
            records = {r.log: r.cut for r in await store.cut_records()}
            assert event.prev_hash == records["other"].head

    asyncio.run(run())
    code, data = verify_json(capsys, url)
    assert code == ExitCode.OK, data


def test_the_memory_store_prunes_alike() -> None:
    async def run() -> None:
        async with MemoryStore() as store:
            await fill_store(store)
            report = await store.prune(before="2024-05-05", archive=None, discard=True)
            assert report.moved == ("default", "other")
            assert report.entries == 4
            assert [e.seq for e in store.events if e.log == "default"] == [4, 5, 6, 7, 8, 9]
            assert (await store.append(NewEvent(action="a", resource="r"))).seq == 10
            verified = await store.verify()
            assert verified.ok, verified.findings
            assert verified.pruned is not None

    asyncio.run(run())


def test_concurrent_appends_go_on_during_a_prune(url: str) -> None:
    async def run() -> None:
        async with open_store(url) as store:
            # Backdated appends: a long prefix to prune while appends keep coming.
            await append_at(
                store,
                [(NewEvent(action="old", resource="r", log="bulk"), at(1)) for _ in range(3000)],
            )
            appends = [
                asyncio.create_task(store.append(NewEvent(action="new", resource="r")))
                for _ in range(200)
            ]
            report = await store.prune(before="2024-05-05", archive=None, discard=True)
            events = await asyncio.gather(*appends)
            assert report.cuts["bulk"].last_seq == 3000
            assert len({e.seq for e in events}) == 200
            verified = await store.verify()
            assert verified.ok, verified.findings

    asyncio.run(run())


# --- refused: nothing deleted ------------------------------------------------------------


def test_an_archive_of_another_date_is_refused(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.jsonl"
    assert cli(capsys, "archive", url, "--before", "2024-05-03", "-o", str(other))[0] == 0
    before = seqs(url)
    code, _, err = cli(capsys, "prune", url, "--before", "2024-05-05", "--archive", str(other))
    assert code == ExitCode.USAGE
    assert "does not hold exactly the entries to prune" in err
    assert "nothing was pruned" in err
    assert seqs(url) == before


def test_a_damaged_archive_is_refused(
    url: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = archive.read_bytes().splitlines(keepends=True)
    archive.write_bytes(b"".join([lines[0], lines[1].replace(b"doc1", b"docX"), *lines[2:]]))
    before = seqs(url)
    code, _, err = cli(capsys, "prune", url, "--before", "2024-05-05", "--archive", str(archive))
    assert code == ExitCode.DAMAGED
    assert "the archive is damaged" in err
    assert seqs(url) == before


def test_an_archive_with_an_entry_dropped_is_refused(
    url: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = archive.read_bytes().splitlines(keepends=True)
    archive.write_bytes(b"".join([lines[0], *lines[2:]]))
    before = seqs(url)
    code, _, _ = cli(capsys, "prune", url, "--before", "2024-05-05", "--archive", str(archive))
    assert code == ExitCode.DAMAGED
    assert seqs(url) == before


@pytest.mark.parametrize(
    ("date", "message"),
    [("May 5th", "before"), ("2999-01-01", "in the future")],
)
def test_a_wrong_date_is_refused(
    url: str, date: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = seqs(url)
    code, _, err = cli(capsys, "prune", url, "--before", date, "--no-archive")
    assert code == ExitCode.USAGE
    assert message in err
    assert "Traceback" not in err
    assert seqs(url) == before


def test_archive_or_no_archive_is_required(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "prune", url, "--before", "2024-05-05")
    assert code == ExitCode.USAGE
    assert "--archive" in err

    async def run() -> None:
        async with open_store(url) as store:
            with pytest.raises(ValueError, match="discard=True"):
                await store.prune(before="2024-05-05", archive=None)

    asyncio.run(run())


def test_a_store_changed_by_another_prune_meanwhile_is_refused(url: str) -> None:
    async def run() -> None:
        async with open_store(url) as first, open_store(url) as second:
            await first.prune(before="2024-05-03", archive=None, discard=True)
            # ``second`` planned from no cut: its transaction finds one recorded.
            records = await second.backend.cut_rows()
            assert records
            prepared_from_nothing: dict[str, int] = {}
            from auditmw._event import prepare
            from auditmw._retention.prune import _Plan, prune_event, records_of

            plan = _Plan({})
            event = prepare(
                prune_event("2024-05-05T00:00:00.000000Z", plan, None, "x"), second.limits
            )
            with pytest.raises(PruneRefusedError, match="another prune"):
                await second.backend.prune(
                    event, records_of(plan, event.id, "now"), prepared_from_nothing, 1e12
                )

    asyncio.run(run())


# --- the narrow DELETE path --------------------------------------------------------------


def test_a_plain_delete_beyond_the_cut_is_refused(pruned: str) -> None:
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
        run_sql(pruned, [("DELETE FROM auditmw_events WHERE log = 'default' AND seq = 4", ())])
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
        run_sql(pruned, [("DELETE FROM auditmw_events", ())])
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
        run_sql(pruned, [("UPDATE auditmw_cuts SET last_seq = 9", ())])
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
        run_sql(pruned, [("DELETE FROM auditmw_cuts", ())])
    assert seqs(pruned) == {"default": [4, 5, 6, 7, 8, 9], "other": [2]}


def test_a_store_never_pruned_refuses_every_delete(url: str) -> None:
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
        run_sql(url, [("DELETE FROM auditmw_events WHERE seq = 1", ())])


# --- tampering after a prune is detected -------------------------------------------------


def test_deleting_beyond_the_cut_is_detected(
    pruned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_sql(
        pruned,
        [
            *drop_delete_protection(pruned),
            ("DELETE FROM auditmw_events WHERE log = 'default' AND seq = 4", ()),
        ],
    )
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.DAMAGED
    assert ("default", 4, "gap") in [(f["log"], f["seq"], f["kind"]) for f in data["findings"]]


def test_a_forged_cut_row_is_detected(pruned: str, capsys: pytest.CaptureFixture[str]) -> None:
    """INSERT is what the triggers allow: a cut row further on, then the DELETE it lets
    through. The newest audit.pruned entry says otherwise."""
    run_sql(
        pruned,
        [
            (
                "INSERT INTO auditmw_cuts (log, last_seq, head, frontier, event_id, created_at) "
                "SELECT log, 5, hash, ?, 'forged', 'now' FROM auditmw_events "
                "WHERE log = 'default' AND seq = 5",
                ('{"size": 5, "nodes": ["' + "00" * 32 + '", "' + "11" * 32 + '"]}',),
            ),
            ("DELETE FROM auditmw_events WHERE log = 'default' AND seq <= 5", ()),
        ],
    )
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.DAMAGED
    assert "forged_prune" in kinds(data)


def test_an_edited_cut_is_detected(pruned: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_sql(
        pruned,
        [*drop_delete_protection(pruned), ("UPDATE auditmw_cuts SET head = ?", ("ab" * 32,))],
    )
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.DAMAGED
    assert "forged_prune" in kinds(data) or "broken_link" in kinds(data)
    assert "forged_prune" in kinds(data)


def test_a_removed_prune_entry_is_detected(pruned: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_sql(
        pruned,
        [
            *drop_delete_protection(pruned),
            ("DELETE FROM auditmw_events WHERE action = 'audit.pruned'", ()),
        ],
    )
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.DAMAGED
    assert "forged_prune" in kinds(data)


def test_removed_cut_rows_are_detected(pruned: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_sql(pruned, [*drop_delete_protection(pruned), ("DELETE FROM auditmw_cuts", ())])
    code, data = verify_json(capsys, pruned)
    assert code == ExitCode.DAMAGED
    assert "forged_prune" in kinds(data)


def test_a_forged_prune_entry_alone_is_detected(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An audit.pruned entry appended through the API (anyone who can append can write
    one) with no cut rows: the table and the entry disagree."""

    async def run() -> None:
        async with open_store(url) as store:
            await store.append(
                NewEvent(
                    action="audit.pruned",
                    resource="audit_log",
                    details={
                        "before": "2024-05-05T00:00:00.000000Z",
                        "archive_sha256": None,
                        "entries": 0,
                        "cuts": {},
                    },
                )
            )
            forged = {
                "before": "2024-05-05T00:00:00.000000Z",
                "archive_sha256": None,
                "entries": 3,
                "cuts": {"default": {"last_seq": 1, "head": "00" * 32, "frontier": {}}},
            }
            await store.append(
                NewEvent(action="audit.pruned", resource="audit_log", details=forged)
            )

    asyncio.run(run())
    code, data = verify_json(capsys, url)
    assert code == ExitCode.DAMAGED
    assert "forged_prune" in kinds(data)


def test_a_schema_warning_for_a_replaced_delete_trigger(
    pruned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if pruned.startswith("postgresql://"):
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "CREATE OR REPLACE FUNCTION auditmw_reject_change() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
                (),
            )
        ]
    else:
        statements = [
            ("DROP TRIGGER auditmw_events_no_delete", ()),
            (
                "CREATE TRIGGER auditmw_events_no_delete BEFORE DELETE ON auditmw_events "
                "WHEN 0 BEGIN SELECT RAISE(ABORT, 'no'); END",
                (),
            ),
        ]
    run_sql(pruned, statements)
    _, data = verify_json(capsys, pruned)
    assert data["warnings"], data


# --- the search index forgets pruned rows ------------------------------------------------


def test_search_finds_no_pruned_entry(pruned: str) -> None:
    async def run() -> None:
        async with open_store(pruned, create=False) as store:
            found = await store.query(EventFilter(search="doc1"))
            assert [(e.log, e.resource_id) for e in found.events] == []
            kept = await store.query(EventFilter(search="doc4"))
            assert [(e.log, e.seq) for e in kept.events] == [("default", 4)]

    asyncio.run(run())


# --- verify STORE --archive FILE: one history --------------------------------------------


def test_the_archive_and_the_pruned_store_verify_as_one_history(
    pruned: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "verify", pruned, "--archive", str(archive))
    assert code == ExitCode.OK, out
    assert "1 archive(s) linked to its cuts" in out.splitlines()[0]
    assert "log 'default': seqs 1..3 linked to the store's cut" in out
    code, out, _ = cli(capsys, "verify", "--json", pruned, "--archive", str(archive))
    data = orjson.loads(out)
    assert data["ok"] is True
    assert data["archives"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_an_archive_of_another_cut_does_not_link(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.jsonl"
    assert cli(capsys, "archive", url, "--before", "2024-05-03", "-o", str(other))[0] == 0
    assert cli(capsys, "prune", url, "--before", "2024-05-05", "--no-archive")[0] == 0
    code, out, _ = cli(capsys, "verify", url, "--archive", str(other))
    assert code == ExitCode.DAMAGED
    assert "which is not a cut the store recorded" in out


def test_another_file_than_the_one_the_prune_named_does_not_link(
    pruned: str, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same entries and cut, another header (written at another time): a valid
    archive, but not the file the prune recorded."""
    lines = archive.read_bytes().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    header["created_at"] = "2024-06-01T00:00:00.000000Z"
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(b"".join([orjson.dumps(header) + b"\n", *lines[1:]]))
    assert cli(capsys, "verify", "--jsonl", str(copy))[0] == ExitCode.OK
    code, out, _ = cli(capsys, "verify", pruned, "--archive", str(copy))
    assert code == ExitCode.DAMAGED
    assert "names archive sha256" in out


def test_a_damaged_archive_does_not_link(
    pruned: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = archive.read_bytes().splitlines(keepends=True)
    archive.write_bytes(b"".join([lines[0], *lines[2:]]))
    code, out, _ = cli(capsys, "verify", pruned, "--archive", str(archive))
    assert code == ExitCode.DAMAGED
    assert out.startswith(f"DAMAGED: archive {archive}")


def test_archive_goes_with_a_store(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "verify", "--jsonl", str(archive), "--archive", str(archive))
    assert code == ExitCode.USAGE
    assert "--archive goes with a STORE" in err


# --- transparency after a prune ----------------------------------------------------------


def test_checkpoints_and_proofs_keep_working_after_a_prune(
    store_url_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints of sizes 1 (the key record), 5 and 10; a prune of seqs 1..7: those of
    sizes 1 and 5 are below the cut (covered by the archive; checked with it, given
    --archive), the one of size 10 still anchors, computed from the cut's frontier. A
    checkpoint is issued after the prune, and inclusion proofs of kept entries verify
    against it."""
    url = store_url_factory()
    key = SigningKey.generate("audit.example.com/app")
    public = tmp_path / "key.pub"
    save_verifier_key(key.verifier, public)
    archive = tmp_path / "old.jsonl"

    async def run() -> None:
        checkpointing = Checkpointing(key, every=None, interval=None)
        async with open_store(url, checkpointing=checkpointing) as store:
            for _ in range(4):
                await store.append(NewEvent(action="a", resource="r"))
            await store.issue_checkpoints()
            for _ in range(2):
                await store.append(NewEvent(action="a", resource="r"))
            cut = utc_timestamp()
            for _ in range(3):
                await store.append(NewEvent(action="a", resource="r"))
            await store.issue_checkpoints()
            assert sorted(c.size for c in await store.checkpoints()) == [1, 5, 10]
            await store.archive(before=cut, output=archive)
            report = await store.prune(before=cut, archive=archive)
            assert report.cuts["default"].last_seq == 7
            await store.append(NewEvent(action="after", resource="r"))
            issued = await store.issue_checkpoints()
            assert [c.size for c in issued] == [12]  # 10 entries, audit.pruned, one more
            proof = await prove_inclusion(store, "default", 9)
            assert proof is not None and proof.verify() and proof.tree_size == 12
            assert proof.anchored
            assert await prove_inclusion(store, "default", 5) is None  # pruned

    asyncio.run(run())
    code, out, _ = cli(capsys, "verify", "--json", url, "--public-key", str(public))
    assert code == ExitCode.OK, out
    data = orjson.loads(out)
    checked = data["checkpoints"]["logs"]["default"]["checkpoints"]
    statuses = {c["size"]: c["status"] for c in checked}
    assert statuses == {
        1: "covered by archive",
        5: "covered by archive",
        10: "anchors",
        12: "anchors",
    }
    # With the archive, the checkpoints below the cut are checked against its entries.
    code, out, _ = cli(
        capsys, "verify", "--json", url, "--public-key", str(public), "--archive", str(archive)
    )
    assert code == ExitCode.OK, out
    checked = orjson.loads(out)["checkpoints"]["logs"]["default"]["checkpoints"]
    assert {c["size"]: c["status"] for c in checked} == {
        1: "anchors",
        5: "anchors",
        10: "anchors",
        12: "anchors",
    }
    code, out, _ = cli(capsys, "prove", url, "--seq", "11")
    assert code == ExitCode.OK, out
    code, _, err = cli(capsys, "prove", url, "--seq", "2")
    assert code == ExitCode.USAGE
    assert "no entry with seq 2" in err


# --- legal holds ---------------------------------------------------------------------------


def test_a_legal_hold_makes_prune_refuse_until_released(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys, "hold", url, "--place", "case-42", "--reason", "litigation", "--actor", "legal"
    )
    assert code == ExitCode.OK, out
    code, out, _ = cli(capsys, "hold", url)
    assert out.startswith("case-42\tplaced ")
    assert "by legal\tlitigation" in out
    before = seqs(url)
    code, _, err = cli(capsys, "prune", url, "--before", "2024-05-05", "--no-archive")
    assert code == ExitCode.USAGE
    assert "legal hold 'case-42' (litigation) is active" in err
    assert seqs(url) == before
    code, _, err = cli(capsys, "hold", url, "--place", "case-42", "--reason", "again")
    assert code == ExitCode.USAGE
    assert "already active" in err
    assert cli(capsys, "hold", url, "--release", "case-42")[0] == ExitCode.OK
    code, _, err = cli(capsys, "hold", url, "--release", "case-42")
    assert code == ExitCode.USAGE
    assert "no legal hold 'case-42' is active" in err
    assert cli(capsys, "hold", url)[1] == "no legal hold is active\n"
    assert cli(capsys, "prune", url, "--before", "2024-05-05", "--no-archive")[0] == ExitCode.OK
    assert cli(capsys, "verify", url)[0] == ExitCode.OK


def test_holds_are_events_in_the_chain() -> None:
    async def run() -> None:
        async with MemoryStore() as store:
            hold = await store.place_hold("h1", "audit", actor="me")
            await store.place_hold("h2", "tax")
            await store.release_hold("h1")
            assert [h.name for h in await store.holds()] == ["h2"]
            actions = [(e.action, e.resource_id, e.user_id) for e in store.events]
            assert actions[0] == ("audit.hold_placed", "h1", "me")
            assert actions[2][:2] == ("audit.hold_released", "h1")
            assert hold.event_id == store.events[0].id
            with pytest.raises(ValueError, match="printable"):
                await store.place_hold("", "x")

    asyncio.run(run())


def test_place_needs_a_reason(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "hold", url, "--place", "x")
    assert code == ExitCode.USAGE
    assert "--place needs --reason" in err


# --- archives and prunes, again and again ------------------------------------------------


def test_a_second_archive_goes_on_from_the_first_prunes_cut(
    pruned: str, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "second.jsonl"
    assert cli(capsys, "archive", pruned, "--before", "2024-05-08", "-o", str(second))[0] == 0
    header = orjson.loads(second.read_bytes().splitlines()[0])
    assert header["logs"]["default"]["first_seq"] == 4
    assert header["logs"]["default"]["after"]["frontier"]["size"] == 3
    code, out, _ = cli(capsys, "verify", "--jsonl", str(second))
    assert code == ExitCode.OK, out
    code, out, _ = cli(capsys, "prune", pruned, "--before", "2024-05-08", "--archive", str(second))
    assert code == ExitCode.OK, out
    code, out, _ = cli(
        capsys, "verify", pruned, "--archive", str(archive), "--archive", str(second)
    )
    assert code == ExitCode.OK, out
    assert "2 archive(s) linked" in out
    assert "log 'default': seqs 4..6 linked" in out


def test_an_archive_going_on_from_a_forged_cut_is_damage(
    pruned: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "second.jsonl"
    assert cli(capsys, "archive", pruned, "--before", "2024-05-08", "-o", str(second))[0] == 0
    lines = second.read_bytes().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    header["logs"]["default"]["after"]["head"] = "ab" * 32
    second.write_bytes(b"".join([orjson.dumps(header) + b"\n", *lines[1:]]))
    code, out, _ = cli(capsys, "verify", "--jsonl", str(second))
    assert code == ExitCode.DAMAGED
    assert "prev_hash is not the head of the cut" in out


# --- the retention policy ----------------------------------------------------------------


class Clock:
    """A clock the test sets (the policy's ``clock``)."""

    def __init__(self, day: int) -> None:
        self.now = datetime(2024, 5, day, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_policy_archives_and_prunes_on_its_schedule(
    store_url_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url_factory()
    fill(url)
    directory = tmp_path / "archives"
    directory.mkdir()
    clock = Clock(6)  # keep a day: prune before May 5th
    policy = RetentionPolicy(
        keep=timedelta(days=1), archive_dir=directory, every=timedelta(milliseconds=1), clock=clock
    )

    async def run() -> None:
        async with open_store(url, retention=policy) as store:
            stats = store.retention_stats
            assert stats is not None
            await until(lambda: stats.pruned == 4)
            clock.now = datetime(2024, 5, 9, tzinfo=UTC)  # now before May 8th
            await until(lambda: stats.pruned == 8)  # default seqs 4..6, other seq 2
            assert stats.failures == 0, stats.last_error
            await store.append(NewEvent(action="a", resource="r"))

    asyncio.run(run())
    archives = sorted(directory.iterdir())
    assert [path.name for path in archives] == [
        "auditmw-before-20240505T000000000000Z.jsonl",
        "auditmw-before-20240508T000000000000Z.jsonl",
    ]
    argv = [arg for path in archives for arg in ("--archive", str(path))]
    code, out, _ = cli(capsys, "verify", url, *argv)
    assert code == ExitCode.OK, out
    assert "2 archive(s) linked" in out


def test_the_policy_respects_holds_and_survives_errors(
    store_url_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = store_url_factory()
    fill(url)
    held = RetentionPolicy(
        keep=timedelta(days=1), discard=True, every=timedelta(milliseconds=1), clock=Clock(6)
    )
    broken = RetentionPolicy(
        keep=timedelta(days=1),
        archive_dir=tmp_path / "missing",
        every=timedelta(milliseconds=1),
        clock=Clock(6),
    )

    async def run() -> None:
        async with open_store(url) as store:
            await store.place_hold("case", "litigation")
        async with open_store(url, retention=held) as store:
            stats = store.retention_stats
            assert stats is not None
            await until(lambda: stats.refused >= 2)
            assert stats.pruned == 0
        async with open_store(url, retention=broken) as store:
            stats = store.retention_stats
            assert stats is not None
            await until(lambda: stats.failures >= 2)
            assert "missing" in (stats.last_error or "")
            event = await store.append(NewEvent(action="still", resource="working"))
            assert event.seq > 0

    asyncio.run(run())
    assert seqs(url)["default"][0] == 1


def test_a_policy_needs_an_archive_dir_or_discard() -> None:
    with pytest.raises(ValueError, match="archive_dir"):
        RetentionPolicy(keep=timedelta(days=1))
    with pytest.raises(ValueError, match="positive"):
        RetentionPolicy(keep=timedelta(0), discard=True)


def test_opening_warns_of_a_replaced_delete_trigger(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening re-creates the narrow DELETE trigger; a permissive one found in its place
    is evidence, and is logged."""
    url = str(store_path)
    fill(url)
    run_sql(
        url,
        [
            ("DROP TRIGGER auditmw_events_no_delete", ()),
            (
                "CREATE TRIGGER auditmw_events_no_delete BEFORE DELETE ON auditmw_events "
                "WHEN 0 BEGIN SELECT 1; END",
                (),
            ),
        ],
    )
    fill(url)
    assert "missing or altered and are being re-created" in caplog.text
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        run_sql(url, [("DELETE FROM auditmw_events WHERE seq = 1", ())])


def test_workers_sharing_a_store_prune_once(
    store_url_factory: Callable[[], str],
) -> None:
    """Two stores over one database (two workers), each with the policy: one prune is
    recorded for the cut; the other worker's run finds nothing left, or is refused."""
    url = store_url_factory()
    fill(url)

    def policy() -> RetentionPolicy:
        return RetentionPolicy(
            keep=timedelta(days=1), discard=True, every=timedelta(milliseconds=1), clock=Clock(6)
        )

    async def run() -> None:
        async with (
            open_store(url, retention=policy()) as one,
            open_store(url, retention=policy()) as two,
        ):
            first, second = one.retention_stats, two.retention_stats
            assert first is not None and second is not None
            await until(lambda: first.runs >= 3 and second.runs >= 3)
            assert first.pruned + second.pruned == 4
            assert first.failures == second.failures == 0
            pruned = await one.query(EventFilter(action="audit.pruned"))
            assert len(pruned.events) == 1
            assert pruned.events[0].user_id == "retention-policy"

    asyncio.run(run())


def test_the_actor_defaults_to_the_current_audit_context() -> None:
    async def run() -> None:
        async with MemoryStore() as store:
            await fill_store(store)
            with acting_as(user_id="dpo@example.com", store=store):
                hold = await store.place_hold("h", "review")
                await store.release_hold("h")
                report = await store.prune(before="2024-05-05", archive=None, discard=True)
            assert hold.placed_by == "dpo@example.com"
            assert report.event is not None
            assert report.event.user_id == "dpo@example.com"

    asyncio.run(run())


# --- stores from before retention are migrated when opened -------------------------------

OLD_SQLITE_DELETE_TRIGGER = (
    "CREATE TRIGGER auditmw_events_no_delete BEFORE DELETE ON auditmw_events\n"
    "BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only: DELETE is not allowed'); END"
)
OLD_PG_FUNCTION = """CREATE OR REPLACE FUNCTION auditmw_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'auditmw_events is append-only: % is not allowed', TG_OP;
END $$"""


def test_a_store_from_before_retention_is_migrated_on_open(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """As an older auditmw left it: no cut table, the DELETE protection that refused every
    row. Opening it migrates it in place, silently (nothing was tampered with)."""
    if url.startswith("postgresql://"):
        old: list[tuple[str, Sequence[Any]]] = [
            ("DROP TABLE auditmw_cuts", ()),
            ("DROP FUNCTION auditmw_reject_cut_change()", ()),
            (OLD_PG_FUNCTION, ()),
        ]
    else:
        old = [
            ("DROP TABLE auditmw_cuts", ()),
            ("DROP TRIGGER auditmw_events_unsearch", ()),
            ("DROP TRIGGER auditmw_events_no_delete", ()),
            (OLD_SQLITE_DELETE_TRIGGER, ()),
        ]
    run_sql(url, old)
    code, out, _ = cli(capsys, "verify", url)  # read only: not migrated, still intact
    assert code == ExitCode.OK, out
    code, out, _ = cli(capsys, "prune", url, "--before", "2024-05-05", "--no-archive")
    assert code == ExitCode.OK, out  # the prune migrates what it needs
    assert seqs(url)["default"][0] == 4
    code, data = verify_json(capsys, url)
    assert code == ExitCode.OK and data["warnings"] == [], data
    assert "re-created" not in caplog.text
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
        run_sql(url, [("DELETE FROM auditmw_events WHERE seq = 5", ())])
