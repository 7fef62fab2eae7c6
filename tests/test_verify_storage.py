"""``auditmw verify`` reports damage to the database's own storage, beside the chain's.

A SQLite file whose index page was overwritten still holds an intact chain: the rows are
all there, and the chain walk never reads that index. ``PRAGMA integrity_check`` fails on
such a file, and so must ``verify``: SQLite's ``quick_check`` of every page runs with it,
and its problems are a finding of their own kind (``storage_damaged``, about the store as
a whole: no log, no seq). A damaged page of the events table itself also stops the chain
walk: that is reported too, as damage, never as an unreadable store (exit 2) or a crash.

Each test damages a real store file the way a failing disk or a stray write does: the
store closed, garbage written over one whole page of a b-tree found with SQLite's
``dbstat`` table (which lists every page of every table and index).

PostgreSQL has no such cheap check of a whole table. When the amcheck extension is
installed (and the role may run it), ``bt_index_check`` checks every index of the store;
a heap page PostgreSQL finds corrupted stops the chain pass, which reads every row. That
is tested on a server of this module's own (``initdb``), whose files are damaged while
it is stopped: the shared server's never are.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from auditmw import AdminApp, NewEvent, VerifyReport, open_store
from auditmw._stores.verify import STORAGE_DAMAGED

from ._command import cli
from ._pg_server import ThrowawayPostgres
from .test_admin import ADMIN, authorize

# Enough events that every index spans several pages: a leaf page is then not the root.
N = 2000
GARBAGE = b"\xde\xad\xbe\xef"  # a pattern, not random: every run damages the same way


def fill(url: str | Path) -> None:
    """N events written through the API."""

    async def run() -> None:
        async with open_store(url) as store:
            await asyncio.gather(
                *(
                    store.append(
                        NewEvent(
                            action=f"document.{('viewed', 'updated', 'shared')[i % 3]}",
                            resource="document",
                            resource_id=f"doc-{i}",
                            user_id=f"user-{i % 17}",
                            user_email=f"user{i % 17}@example.com",
                        )
                    )
                    for i in range(N)
                )
            )

    asyncio.run(run())


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of N events, closed; each test copies it."""
    path = tmp_path_factory.mktemp("storage") / "template.db"
    fill(path)
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.db"
    shutil.copyfile(template, path)
    yield path


def leaf_pages(path: Path, name: str) -> list[int]:
    """The leaf pages of the table or index ``name``, in b-tree order."""
    with closing(sqlite3.connect(path)) as conn:
        pages = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
            (name,),
        ).fetchall()
    return [page for (page,) in pages]


def overwrite_page(path: Path, name: str) -> int:
    """Write garbage over a leaf page from the middle of ``name``'s b-tree; its number."""
    pages = leaf_pages(path, name)
    assert len(pages) > 2, f"{name} has too few pages to damage one in the middle"
    page = pages[len(pages) // 2]
    with closing(sqlite3.connect(path)) as conn:
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with open(path, "r+b") as file:
        file.seek((page - 1) * size)
        file.write((GARBAGE * (size // len(GARBAGE) + 1))[:size])
    return page


def integrity_check(path: Path) -> list[str]:
    """What SQLite's full check says of the file, independently of auditmw."""
    with closing(sqlite3.connect(path)) as conn:
        try:
            return [row[0] for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]


def verify(path: Path) -> VerifyReport:
    async def run() -> VerifyReport:
        async with open_store(path, create=False) as store:
            return await store.verify()

    return asyncio.run(run())


def findings(report: dict[str, Any]) -> list[tuple[str | None, int | None, str]]:
    return [(f["log"], f["seq"], f["kind"]) for f in report["findings"]]


def test_a_healthy_file_reports_nothing(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert integrity_check(db) == ["ok"]
    report = verify(db)
    assert report.ok and report.findings == [] and report.warnings == []
    assert report.entries == N
    code, out, err = cli(capsys, "verify", str(db))
    assert (code, err) == (0, "")
    assert out.startswith(f"OK: {N} entries intact")


def test_an_overwritten_index_page_is_reported_beside_an_intact_chain(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = overwrite_page(db, "auditmw_events_action")
    assert integrity_check(db) != ["ok"]  # the file really is damaged

    report = verify(db)
    assert not report.ok
    assert report.entries == N  # the chain walk read every row: the chain itself is intact
    (finding,) = report.findings
    assert (finding.log, finding.seq, finding.kind) == (None, None, STORAGE_DAMAGED)
    assert finding.message.startswith("the database file is damaged (PRAGMA quick_check): ")
    assert f"Page {page}: " in finding.message
    assert finding.message.endswith("damaged pages belong to index auditmw_events_action")

    code, out, err = cli(capsys, "verify", str(db))
    assert code == 1 and "Traceback" not in err
    assert out.splitlines()[0] == f"DAMAGED: 1 finding(s); first: {finding.line()}"
    code, out, _ = cli(capsys, "verify", "--json", str(db))
    data = orjson.loads(out)
    assert code == 1 and data["ok"] is False and data["entries"] == N
    assert findings(data) == [(None, None, STORAGE_DAMAGED)]


def test_an_overwritten_table_page_is_damage_not_an_unreadable_store(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overwrite_page(db, "auditmw_events")
    assert integrity_check(db) != ["ok"]

    report = verify(db)
    assert not report.ok and report.entries < N  # the walk stopped at the damaged page
    assert [(f.log, f.seq, f.kind) for f in report.findings] == [(None, None, STORAGE_DAMAGED)] * 2
    checked, walked = (finding.message for finding in report.findings)
    assert checked.startswith("the database file is damaged (PRAGMA quick_check): ")
    assert checked.endswith("damaged pages belong to table auditmw_events")
    assert walked.startswith("reading the log stopped ")
    assert walked.endswith("database disk image is malformed; the rows after it were not verified")

    code, out, err = cli(capsys, "verify", str(db))
    assert code == 1 and err == ""  # damage (1), not "cannot be read" (2)
    assert out.startswith("DAMAGED: 2 finding(s); first: storage_damaged: ")
    assert out.splitlines()[1:] == [f"  {finding.line()}" for finding in report.findings]


async def test_the_admin_verify_reports_it(db: Path) -> None:
    overwrite_page(db, "auditmw_events_user_email")  # an index the admin pages never read
    async with open_store(db, create=False) as store:
        transport = httpx.ASGITransport(AdminApp(store, authorize=authorize))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/verify", headers=ADMIN)
            events = await client.get("/events", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False and body["entries"] == N
    assert findings(body) == [(None, None, STORAGE_DAMAGED)]
    assert "index auditmw_events_user_email" in body["findings"][0]["message"]
    assert events.status_code == 200  # the rest of the store still serves


# --- PostgreSQL, on a server of its own ------------------------------------------------------


async def fetchval(server: ThrowawayPostgres, sql: str) -> Any:
    conn = await asyncpg.connect(server.dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def relation_file(server: ThrowawayPostgres, name: str) -> Path:
    """The data file of a table or index (its first segment: 1 GB, ample here)."""
    sql = f"SELECT pg_relation_filepath('{name}')"
    return server.data / str(asyncio.run(fetchval(server, sql)))


def overwrite_block(file: Path, block: int) -> None:
    with open(file, "r+b") as data:
        data.seek(block * BLOCK)
        data.write(GARBAGE * (BLOCK // len(GARBAGE)))


BLOCK = 8192  # PostgreSQL's page size, as built by Debian and by default


def test_postgres_damaged_index_and_table_pages(
    pg_server: ThrowawayPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    server = pg_server
    indexed, walked = (f"{server.dsn}?schema={name}" for name in ("indexed", "walked"))
    fill(indexed)
    fill(walked)
    index_file = relation_file(server, "indexed.auditmw_events_action")
    table_file = relation_file(server, "walked.auditmw_events")
    assert cli(capsys, "verify", indexed)[0] == 0  # no amcheck: nothing beyond the chain
    asyncio.run(fetchval(server, "CREATE EXTENSION amcheck"))
    code, out, _ = cli(capsys, "verify", "--json", indexed)
    assert code == 0 and orjson.loads(out)["findings"] == []  # every index checked: healthy

    server.stop("fast")  # every page written out to its file
    blocks = index_file.stat().st_size // BLOCK
    overwrite_block(index_file, blocks // 2)  # not block 0: the index's metapage
    overwrite_block(table_file, table_file.stat().st_size // BLOCK // 2)
    server.start()

    code, out, err = cli(capsys, "verify", "--json", indexed)
    data = orjson.loads(out)
    assert code == 1 and err == "" and data["entries"] == N  # the chain itself is intact
    assert findings(data) == [(None, None, STORAGE_DAMAGED)]
    message = data["findings"][0]["message"]
    assert message.startswith("index auditmw_events_action is damaged (amcheck): ")
    assert f"invalid page in block {blocks // 2} of relation" in message

    code, out, err = cli(capsys, "verify", "--json", walked)
    data = orjson.loads(out)
    assert code == 1 and err == "" and data["entries"] < N
    assert findings(data) == [(None, None, STORAGE_DAMAGED)]
    assert data["findings"][0]["message"].startswith("reading the log stopped ")
    assert "invalid page in block" in data["findings"][0]["message"]
