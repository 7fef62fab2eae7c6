"""Gone means gone: after ``erase``, a person's values are in no file of the store.

A SQLite store under load (thousands of events, appends going on while the erasure
runs): afterwards every file of the store (database, -wal, -shm) is searched for the
erased values' bytes, in the encodings they could be stored in; another person's values
are still found (the search can fail), and ``auditmw verify`` passes. On PostgreSQL no
query finds them (what its files may keep is documented in docs/privacy.md).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from auditmw import AuditStore, EventFilter, NewEvent, SQLiteStore
from auditmw._stores.open import open_store

from ._command import cli
from ._postgres import POSTGRES_DSN

BOB = {
    "user_email": "bob.gone@example.com",
    "ip_address": "2001:db8::b0b",
    "user_agent": "BobBrowser/9.1 (erasable)",
}
BOB_NAME = "Bøb Ünique-Surname"
CAROL = {"user_email": "carol.stays@example.com", "ip_address": "198.51.100.77"}
EVENTS = 4000


def encodings(value: str) -> list[bytes]:
    """The forms a value could take in a file: UTF-8, JSON-escaped, UTF-16 (both ends)."""
    forms = {
        value.encode(),
        json.dumps(value).encode()[1:-1],
        json.dumps(json.dumps(value)).encode()[3:-3],  # inside an opening's JSON string
        value.encode("utf-16-le"),
        value.encode("utf-16-be"),
    }
    return sorted(forms)


async def load(store: AuditStore, start: int, count: int, *, bob: bool = True) -> None:
    """Many people's events; Bob (unless not ``bob``) acts in every 40th, is the subject
    of every 97th."""
    for offset in range(0, count, 200):
        batch = []
        for i in range(start + offset, start + min(offset + 200, count)):
            if bob and i % 40 == 0:
                batch.append(
                    NewEvent(
                        "session.login",
                        "session",
                        str(i),
                        user_id="bob",
                        details={"name": BOB_NAME},
                        **BOB,
                    )
                )
            elif bob and i % 97 == 0:
                batch.append(
                    NewEvent(
                        "user.update",
                        "user",
                        "bob",
                        user_id="admin",
                        details={"email": BOB["user_email"], "full_name": BOB_NAME},
                    )
                )
            elif i % 50 == 0:
                batch.append(NewEvent("session.login", "session", user_id="carol", **CAROL))
            else:
                batch.append(
                    NewEvent(
                        "item.update",
                        "item",
                        str(i),
                        user_id=f"user-{i % 300}",
                        user_email=f"user-{i % 300}@example.org",
                        ip_address="192.0.2.1",
                        details={"n": i, "note": "x" * (i % 50)},
                    )
                )
        await asyncio.gather(*(store.append(event) for event in batch))


def store_files(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name))


async def erase_under_load(path: Path) -> dict[str, bytes]:
    """Erase Bob while appends go on; the store's files as they are right after, with
    the store still open (and once closed, under the ".closed" names)."""
    async with SQLiteStore(path) as store:
        # As SQLite is built by default (Debian's build turns secure_delete on): erase
        # must not depend on the build.
        backend = store.backend
        await backend._in_write_thread(
            lambda: backend._write_conn.execute("PRAGMA secure_delete=OFF")  # type: ignore[union-attr]
        )
        await load(store, 0, EVENTS)
        # The erasure runs while the application keeps appending.
        report, _ = await asyncio.gather(
            store.erase(user_id="bob"), load(store, EVENTS, 600, bob=False)
        )
        assert report.entries > 100 and report.notes == ()
        found = await store.query(EventFilter(user_id="bob"), limit=1000)
        assert found.events and all(event.user_email is None for event in found.events)
        contents = {file.name: file.read_bytes() for file in store_files(path)}
    contents.update({f"{f.name}.closed": f.read_bytes() for f in store_files(path)})
    return contents


def test_erased_values_are_in_no_file_of_a_sqlite_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.db"
    contents = asyncio.run(erase_under_load(path))
    assert {"audit.db", "audit.db-wal", "audit.db.closed"} <= set(contents)
    for value in (*BOB.values(), BOB_NAME):
        for form in encodings(value):
            holding = [name for name, data in contents.items() if form in data]
            assert holding == [], f"{value!r} ({form!r}) is still in {holding}"
    for value in CAROL.values():  # not erased: the same search finds it
        assert any(value.encode() in data for data in contents.values())
    code, out, _ = cli(capsys, "verify", str(path))
    assert code == 0, out


async def test_erased_values_are_readable_by_no_query_on_postgresql(pg_schema: str) -> None:
    import asyncpg

    async with open_store(f"{POSTGRES_DSN}?schema={pg_schema}") as store:
        await load(store, 0, 800)
        report = await store.erase(user_id="bob")
        assert report.entries > 10
        assert any("WAL" in note for note in report.notes)
        assert (await store.verify()).ok
    conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": pg_schema})
    try:
        text = await conn.fetchval(
            "SELECT string_agg(concat_ws(' ', user_email, ip_address, user_agent, personal, "
            "convert_from(entry, 'UTF8')), ' ') FROM auditmw_events"
        )
        vacuumed = await conn.fetchval(
            "SELECT last_vacuum FROM pg_stat_user_tables WHERE schemaname = $1 "
            "AND relname = 'auditmw_events'",
            pg_schema,
        )
    finally:
        await conn.close()
    for value in (*BOB.values(), BOB_NAME):
        assert value not in text
    assert CAROL["user_email"] in text
    assert vacuumed is not None
