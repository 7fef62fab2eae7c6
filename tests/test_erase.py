"""Erasing a person's personal data (GDPR Art. 17) from entries of format 2: the values
are gone from every read, the chain and its proofs stay intact, verify tells a recorded
erasure from a removed or edited value, and the database takes no other UPDATE."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785

from auditmw import AuditStore, EventFilter, NewEvent, ValidationError
from auditmw._stores.jsonl import jsonl_line, verify_jsonl
from auditmw._stores.open import open_store
from auditmw._stores.postgres_schema import REJECT_ALL_CHANGES_BODY

from ._attacker import PostgresTarget, SQLiteTarget, Target
from ._command import cli
from .conftest import StoreFactory

BOB = {"user_email": "bob@example.com", "ip_address": "198.51.100.23", "user_agent": "BobAgent/1"}


async def fill(store: AuditStore) -> dict[str, Any]:
    """u1 (Bob) acts; an admin changes Bob's profile (about Bob); u2 (Carol) acts."""
    bob = await store.append(
        NewEvent("session.login", "session", "s1", user_id="u1", details={"name": "Bob B"}, **BOB)
    )
    about = await store.append(
        NewEvent(
            "user.update",
            "user",
            "u1",
            user_id="admin",
            user_email="admin@example.com",
            details={"changes": {"email": {"to": "bob.new@example.com"}}, "plan": "pro"},
        )
    )
    carol = await store.append(
        NewEvent("session.login", "session", "s2", user_id="u2", user_email="carol@example.com")
    )
    return {"bob": bob, "about": about, "carol": carol}


async def test_erase_removes_the_persons_data_and_keeps_every_proof(
    contract_store: AuditStore,
) -> None:
    store = contract_store
    events = await fill(store)
    leaves_before = [leaf async for leaf in store.leaf_hashes("default", 0, 3)]

    report = await store.erase(user_id="u1", reason="request 42")

    assert report.entries == 2 and report.format_1_entries == 0
    assert report.fields == {
        "user_email": 1,
        "ip_address": 1,
        "user_agent": 1,
        "details.name": 1,
        "details.email": 1,
    }
    record = report.record
    assert (record.action, record.resource, record.resource_id) == ("audit.erased", "user", "u1")
    assert record.details is not None and record.details["reason"] == "request 42"
    assert "bob" not in orjson.dumps(record.details).decode().lower()

    bob = await store.get(events["bob"].id)
    assert bob is not None
    assert (bob.user_email, bob.ip_address, bob.user_agent) == (None, None, None)
    assert bob.details == {"name": None}
    assert bob.erased == ("/details/name", "/ip_address", "/user_agent", "/user_email")
    assert bob.to_dict()["erased"] == list(bob.erased)
    assert (bob.hash, bob.prev_hash, bob.action, bob.user_id) == (
        events["bob"].hash,
        events["bob"].prev_hash,
        "session.login",
        "u1",
    )
    about = await store.get(events["about"].id)
    assert about is not None
    assert about.user_email == "admin@example.com"  # the actor's own, kept
    assert about.details == {"changes": {"email": None}, "plan": "pro"}
    assert about.erased == ("/details/changes/email",)
    carol = await store.get(events["carol"].id)
    assert carol == events["carol"] and carol.erased == ()

    # Queries and exports read the same; filters no longer find the erased values.
    assert (await store.query(EventFilter(user_email="bob@example.com"))).events == []
    assert (await store.query(EventFilter(search="bob@example"))).events == []
    found = await store.query(EventFilter(search="carol@example"))
    assert [event.id for event in found.events] == [events["carol"].id]
    lines = [jsonl_line(event) async for event in store.iter_events(EventFilter())]
    assert verify_jsonl(lines).ok
    assert not any(b"bob" in line.lower() for line in lines[:2])
    assert b"carol@example.com" in lines[2]

    # Nothing hashed changed: the chain, the Merkle leaves, every proof.
    assert [leaf async for leaf in store.leaf_hashes("default", 0, 3)] == leaves_before
    verified = await store.verify()
    assert verified.ok, verified.findings
    assert verified.entries == 4


async def test_erase_refuses_bad_input_and_unknown_people(contract_store: AuditStore) -> None:
    await fill(contract_store)
    for user_id in ("", "   ", None, 7):
        with pytest.raises(ValidationError, match="user_id"):
            await contract_store.erase(user_id=user_id)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="no entry of the store has user 'nobody'"):
        await contract_store.erase(user_id="nobody")
    with pytest.raises(ValidationError, match="reason"):
        await contract_store.erase(user_id="u1", reason="x" * 2000)
    assert await contract_store.count() == 3  # nothing recorded


async def test_an_entry_appended_after_the_erasure_keeps_its_data(
    contract_store: AuditStore,
) -> None:
    await fill(contract_store)
    await contract_store.erase(user_id="u1")
    later = await contract_store.append(NewEvent("session.login", "session", user_id="u1", **BOB))
    read = await contract_store.get(later.id)
    assert read is not None and read.user_email == BOB["user_email"] and read.erased == ()
    assert (await contract_store.verify()).ok
    again = await contract_store.erase(user_id="u1")
    assert again.entries == 1
    assert (await contract_store.verify()).ok


# --- tampering: the database's own rows, changed behind the library's back ---------------


@pytest.fixture
def target(store_url_factory: Callable[[], str], tmp_path: Path) -> Target:
    url = store_url_factory()
    if url.startswith("postgresql"):
        return PostgresTarget(url.split("schema=")[1].split("&")[0])
    return SQLiteTarget(Path(url))


def run_fill(target: Target, erase: str | None = None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with open_store(target.url) as store:
            events = await fill(store)
            if erase is not None:
                events["report"] = await store.erase(user_id=erase)
            return events

    return asyncio.run(go())


def findings(target: Target) -> list[tuple[int | None, str]]:
    async def go() -> list[tuple[int | None, str]]:
        async with open_store(target.url, create=False) as store:
            report = await store.verify()
        return [(finding.seq, finding.kind) for finding in report.findings]

    return asyncio.run(go())


def test_editing_a_personal_value_is_detected(target: Target) -> None:
    run_fill(target)
    with target.attacker() as conn:
        personal = json.loads(conn.fetchval("SELECT personal FROM auditmw_events WHERE seq = 1"))
        salt, _ = personal["/user_email"]
        personal["/user_email"] = [salt, json.dumps("mallory@example.com")]
        conn.execute(
            "UPDATE auditmw_events SET personal = ?, user_email = ? WHERE seq = 1",
            (json.dumps(personal), "mallory@example.com"),
        )
    assert findings(target) == [(1, "personal_modified")]


def test_an_index_column_that_disagrees_with_its_opening_is_detected(target: Target) -> None:
    run_fill(target)
    with target.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET ip_address = '203.0.113.9' WHERE seq = 1")
    assert findings(target) == [(1, "column_mismatch")]


def test_openings_removed_without_a_record_are_detected(target: Target) -> None:
    run_fill(target)
    # The one UPDATE the triggers let through: the erasure's, but without its record.
    with target.attacker(drop_triggers=False) as conn:
        conn.execute("UPDATE auditmw_events SET personal = NULL, user_email = NULL WHERE seq = 3")
    assert findings(target) == [(3, "erased_without_record")]


def test_a_record_covers_only_its_person(target: Target) -> None:
    run_fill(target, erase="u1")
    with target.attacker(drop_triggers=False) as conn:  # Carol's, under Bob's record
        conn.execute("UPDATE auditmw_events SET personal = NULL, user_email = NULL WHERE seq = 3")
    assert findings(target) == [(3, "erased_without_record")]


def test_a_forged_erasure_record_is_not_trusted(target: Target) -> None:
    run_fill(target, erase="u1")
    with target.attacker() as conn:  # the record rewritten to cover Carol instead
        entry = bytes(conn.fetchval("SELECT entry FROM auditmw_events WHERE seq = 4"))
        data = orjson.loads(entry)
        data["resource_id"] = "u2"
        forged = rfc8785.dumps(data)
        conn.execute(
            "UPDATE auditmw_events SET entry = ?, resource_id = 'u2' WHERE seq = 4", (forged,)
        )
        conn.execute("UPDATE auditmw_events SET personal = NULL, user_email = NULL WHERE seq = 3")
    kinds = findings(target)
    # The record is not read intact: it covers nobody, and Bob's erasure is unproven too.
    assert (4, "modified") in kinds and (4, "erased_without_record") in kinds
    assert (1, "erased_without_record") in kinds and (2, "erased_without_record") in kinds


def test_the_table_takes_no_update_but_removing_personal_data(target: Target) -> None:
    run_fill(target)
    with target.attacker(drop_triggers=False) as conn:
        personal = json.loads(conn.fetchval("SELECT personal FROM auditmw_events WHERE seq = 1"))
        refused = [
            ("UPDATE auditmw_events SET action = 'x' WHERE seq = 1", ()),
            ("UPDATE auditmw_events SET user_id = 'u9' WHERE seq = 1", ()),
            ("UPDATE auditmw_events SET entry = entry WHERE seq = 1 AND 1 = 0", ()),
            ("UPDATE auditmw_events SET user_email = 'x@example.com' WHERE seq = 1", ()),
            ("UPDATE auditmw_events SET user_id = NULL WHERE seq = 1", ()),
            (  # an opening added
                "UPDATE auditmw_events SET personal = ? WHERE seq = 1",
                (json.dumps({**personal, "/details/x": ["00" * 16, '"x"']}),),
            ),
            (  # an opening changed
                "UPDATE auditmw_events SET personal = ? WHERE seq = 1",
                (json.dumps({**personal, "/user_email": ["00" * 16, '"x"']}),),
            ),
            (  # a column cleared whose value has no opening (Carol's row keeps it)
                "UPDATE auditmw_events SET ip_address = NULL, user_agent = '' WHERE seq = 3",
                (),
            ),
        ]
        for sql, params in refused:
            if "1 = 0" in sql:
                continue  # (matches no row: nothing to refuse)
            with pytest.raises(conn.refused, match="append-only"):
                conn.execute(sql, params)
        # Removing an opening (and the column it fills) is the one change allowed.
        del personal["/user_email"]
        conn.execute(
            "UPDATE auditmw_events SET personal = ?, user_email = NULL WHERE seq = 1",
            (json.dumps(personal),),
        )
        with pytest.raises(conn.refused, match="append-only"):
            conn.execute("DELETE FROM auditmw_events WHERE seq = 3")


# --- entries of format 1 and stores written before format 2 -------------------------------


def format_1_row(seq: int, prev_hash: str, user_id: str) -> tuple[dict[str, Any], bytes, str]:
    """An entry as auditmw wrote before format 2: personal values inside the entry."""
    entry = {
        "action": "session.login",
        "details": {"name": "Old Bob"},
        "id": f"018f766f-f63b-73a1-9c4f-5e6d7b8a90{seq:02d}",
        "ip_address": "192.0.2.1",
        "log": "default",
        "outcome": "success",
        "prev_hash": prev_hash,
        "request_id": None,
        "resource": "session",
        "resource_id": None,
        "seq": seq,
        "timestamp": "2024-05-14T09:30:00.000000Z",
        "user_agent": None,
        "user_email": "old.bob@example.com",
        "user_id": user_id,
    }
    data = rfc8785.dumps(entry)
    return entry, data, hashlib.sha256(b"\x00" + data).hexdigest()


def test_a_store_written_before_format_2_is_migrated_and_its_entries_counted(
    target: Target,
) -> None:
    """A store of the previous schema (no openings column, the UPDATE refused outright)
    holding a format-1 entry: opening it migrates it; the old entry keeps verifying and
    erase counts it (it leaves the store only by pruning)."""
    asyncio.run(_open_and_close(target))
    sqlite = isinstance(target, SQLiteTarget)
    with target.attacker(drop_triggers=sqlite) as conn:  # SQLite: triggers name the column
        if sqlite:
            conn.execute("DROP TRIGGER IF EXISTS auditmw_events_search")
            conn.execute("DROP TRIGGER IF EXISTS auditmw_events_unsearch")
            conn.execute("ALTER TABLE auditmw_events DROP COLUMN personal")
            conn.execute(
                "CREATE TRIGGER auditmw_events_no_update BEFORE UPDATE ON auditmw_events "
                "BEGIN SELECT RAISE(ABORT, 'auditmw_events is append-only'); END"
            )
            conn.execute("UPDATE auditmw_meta SET value = '1' WHERE key = 'schema_version'")
        else:
            conn.execute("ALTER TABLE auditmw_events DROP COLUMN personal")
            conn.execute(
                "CREATE OR REPLACE FUNCTION auditmw_reject_change() RETURNS trigger "
                f"LANGUAGE plpgsql AS $${REJECT_ALL_CHANGES_BODY}$$"
            )
            conn.execute("UPDATE auditmw_meta SET value = '3' WHERE key = 'schema_version'")
        entry, data, hash_ = format_1_row(1, "0" * 64, "u1")
        columns = {**entry, "hash": hash_, "entry": data}
        names = [name for name in conn.columns()]
        conn.execute(
            f"INSERT INTO auditmw_events ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            [columns[name] for name in names],
        )

    async def before_migration() -> None:  # read-only, as `auditmw verify` opens it
        async with open_store(target.url, create=False) as store:
            assert (await store.verify()).ok
            [old] = [event async for event in store.iter_events(EventFilter())]
            assert old.user_email == "old.bob@example.com" and old.erased == ()
            with pytest.raises(Exception, match="predates entry format 2"):
                await store.append(NewEvent("a", "r"))

    asyncio.run(before_migration())

    async def migrated() -> None:
        async with open_store(target.url) as store:
            new = await store.append(NewEvent("session.login", "session", user_id="u1", **BOB))
            report = await store.erase(user_id="u1")
            assert report.format_1_entries == 1 and report.entries == 1
            assert "only pruned" in report.summary()
            [old, erased, _] = [event async for event in store.iter_events(EventFilter())]
            assert old.user_email == "old.bob@example.com"  # format 1: it stays
            assert erased.id == new.id and erased.user_email is None
            verified = await store.verify()
            assert verified.ok, verified.findings
            assert verified.warnings == []

    asyncio.run(migrated())


async def _open_and_close(target: Target) -> None:
    async with open_store(target.url):
        pass


# --- the command line -------------------------------------------------------------------


def test_cli_erase(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    run_fill(target)
    code, out, err = cli(capsys, "erase", target.url, "--user-id", "u1", "--reason", "req 7")
    assert code == 0, err
    assert out.startswith("erased the personal data of user 'u1' from 2 entries")
    code, out, err = cli(capsys, "erase", target.url, "--user-id", "u2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["entries"] == 1 and data["fields"] == {"user_email": 1}
    code, out, err = cli(capsys, "verify", target.url)
    assert code == 0 and out.startswith("OK: 5 entries intact")

    code, out, err = cli(capsys, "erase", target.url, "--user-id", "nobody")
    assert code == 2 and out == ""
    assert "no entry of the store has user 'nobody'" in err
    code, out, err = cli(capsys, "erase", target.url, "--user-id", "")
    assert code == 2 and "--user-id: must not be empty" in err
    code, _, err = cli(capsys, "erase", target.url)
    assert code == 2 and "--user-id" in err


def test_cli_erase_of_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "erase", str(tmp_path / "none.db"), "--user-id", "u1")
    assert code == 2 and "no such file" in err
    assert not (tmp_path / "none.db").exists()


async def test_personal_keys_are_a_store_setting(store_factory: StoreFactory) -> None:
    from auditmw import Limits

    async with store_factory(limits=Limits(personal_keys={"Nickname"})) as store:
        event = await store.append(
            NewEvent("a", "user", "u1", user_id="u1", details={"nickname": "bb", "name": "B"})
        )
        await store.erase(user_id="u1")
        read = await store.get(event.id)
    assert read is not None
    assert read.details == {"nickname": None, "name": "B"}  # "name" is not personal here
    assert read.erased == ("/details/nickname",)


# --- exports and archives: openings beside the entries -----------------------------------


async def test_exports_and_archives_carry_the_openings_left(
    contract_store: AuditStore, tmp_path: Path
) -> None:
    await fill(contract_store)
    await contract_store.erase(user_id="u1")
    lines = [jsonl_line(event) async for event in contract_store.iter_events(EventFilter())]
    bob, about, carol, _ = (orjson.loads(line) for line in lines)
    assert "openings" not in bob  # every value erased: nothing to open
    assert set(about["openings"]) == {"/user_email"}  # the admin's own
    assert set(carol["openings"]) == {"/user_email"}
    assert carol["user_email"] is None and "/user_email" in carol["commitments"]
    assert verify_jsonl(lines).ok

    # An opening edited in the file: its commitment no longer matches.
    forged = lines[2].replace(b'"\\"carol@example.com\\""', b'"\\"mallory@example.com\\""')
    assert forged != lines[2]
    report = verify_jsonl([*lines[:2], forged, lines[3]])
    assert not report.ok
    assert [(f.seq, f.kind) for f in report.findings] == [(3, "personal_modified")]

    # The same lines in an archive verify alone.
    archive = tmp_path / "archive.jsonl"
    await contract_store.archive(before="2999-01-01", output=archive)
    archived = archive.read_bytes().splitlines(keepends=True)[1:]
    assert archived == lines


def test_the_documented_scripts_check_the_openings(
    target: Target, tmp_path: Path, verify_mjs: Path
) -> None:
    import subprocess
    import sys

    from ._paths import DOCS

    events = run_fill(target, erase="u1")
    assert events["report"].entries == 2

    async def export() -> list[bytes]:
        async with open_store(target.url, create=False) as store:
            return [jsonl_line(event) async for event in store.iter_events(EventFilter())]

    lines = asyncio.run(export())
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(lines))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines).replace(b"carol@example.com", b"mallory@example.com"))
    for command in ([sys.executable, str(DOCS / "verify_jsonl.py")], ["node", str(verify_mjs)]):
        done = subprocess.run([*command, str(good)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        done = subprocess.run([*command, str(bad)], capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stdout.startswith("FAIL line 3 (log 'default' seq 3): personal value modified")


# --- people read erased values as erased ---------------------------------------------------


async def test_the_admin_app_and_csv_show_erased_values_as_erased(store_path: Path) -> None:
    import csv
    import io

    from starlette.requests import Request

    from auditmw import Actor, AdminApp, SQLiteStore

    from ._asgi import client_for

    def authorize(request: Request) -> Actor:
        return Actor(user_id="admin-1")

    async with SQLiteStore(store_path) as store:
        events = await fill(store)
        await store.erase(user_id="u1")
        async with client_for(AdminApp(store, authorize=authorize)) as client:
            one = (await client.get(f"/events/{events['bob'].id}")).json()
            assert one["user_email"] is None and one["ip_address"] is None
            assert one["erased"] == ["/details/name", "/ip_address", "/user_agent", "/user_email"]
            listed = (await client.get("/events", params={"user_id": "u2"})).json()
            assert "erased" not in listed["events"][0]  # nothing erased: the usual shape
            exported = (await client.get("/export.csv")).text
    rows = list(csv.DictReader(io.StringIO(exported)))
    bob = next(row for row in rows if row["Seq"] == "1")
    assert bob["User"] == "u1"  # the id stays: only the e-mail was personal
    assert bob["IP Address"] == "[erased]" and bob["User Agent"] == "[erased]"
    assert json.loads(bob["Details"]) == {"name": "[erased]"}
    about = next(row for row in rows if row["Seq"] == "2")
    assert json.loads(about["Details"]) == {"changes": {"email": "[erased]"}, "plan": "pro"}
    assert about["User"] == "admin@example.com"
    carol = next(row for row in rows if row["Seq"] == "3")
    assert carol["IP Address"] == "" and carol["User"] == "carol@example.com"


def test_a_rewritten_update_trigger_is_reported(tmp_path: Path) -> None:
    target = SQLiteTarget(tmp_path / "audit.db")
    run_fill(target)
    with target.attacker(drop_triggers=False) as conn:
        conn.execute("DROP TRIGGER auditmw_events_no_update")
        conn.execute(  # same name, lets every UPDATE through
            "CREATE TRIGGER auditmw_events_no_update BEFORE UPDATE ON auditmw_events "
            "WHEN 0 BEGIN SELECT RAISE(ABORT, 'no'); END"
        )

    async def warnings() -> list[str]:
        async with open_store(target.url, create=False) as store:
            return await store.schema_warnings()

    assert any("auditmw_events_no_update was altered" in w for w in asyncio.run(warnings()))


async def test_signed_checkpoints_still_verify_after_an_erasure(
    store_factory: StoreFactory,
) -> None:
    from auditmw import Checkpointing
    from auditmw._transparency.external import check_checkpoints
    from auditmw._transparency.notes import SigningKey

    key = SigningKey.generate("audit.example.com/erase")
    async with store_factory(checkpointing=Checkpointing(key, interval=None)) as store:
        await fill(store)
        [issued] = await store.issue_checkpoints()  # the key record and the 3 events
        await store.erase(user_id="u1")
        await store.issue_checkpoints()  # one covering the erasure record too
        report = await check_checkpoints(store, [key.verifier], [])
        assert report.ok, report.summary()
        assert report.chain.ok
        assert report.logs["default"].anchored == issued.size + 1


async def test_a_failure_between_the_record_and_the_removal_leaves_a_consistent_log(
    contract_store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is appended first: an erasure stopped before its UPDATE (a crash, the
    database gone) leaves the record and the data, which verifies; erase runs again."""
    events = await fill(contract_store)

    async def fail(updates: object) -> list[str]:
        raise ConnectionError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(contract_store.backend, "remove_personal", fail)
        with pytest.raises(ConnectionError):
            await contract_store.erase(user_id="u1")
    bob = await contract_store.get(events["bob"].id)
    assert bob is not None and bob.user_email == BOB["user_email"]  # still there
    assert (await contract_store.verify()).ok
    report = await contract_store.erase(user_id="u1")
    assert report.entries == 2
    bob = await contract_store.get(events["bob"].id)
    assert bob is not None and bob.user_email is None
    verified = await contract_store.verify()
    assert verified.ok and verified.entries == 5  # two records
