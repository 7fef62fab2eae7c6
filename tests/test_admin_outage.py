"""What clients of the example app see while its audit store is down, frozen or locked:
``python -m example_app`` (Starlette and Litestar) over real HTTP.

- The admin API answers ``503 store_unavailable`` JSON with ``Retry-After`` from every
  route that reads the store, and exports that cannot record their ``export.requested``
  event answer the same 503 (nothing exported), never a 500 or a hang.
- An audited request answers ``503 audit_unavailable`` with ``Retry-After`` (fail-closed).
- Each answer comes within the store's time limits, and once the database is back the
  same running app answers as before: no restart.

PostgreSQL is a throwaway server of this module (tests/_pg_server.py), stopped and frozen;
SQLite's equivalent is another process holding the store's write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._example import ADMIN, FRAMEWORKS
from ._pg_server import ThrowawayPostgres
from ._servers import ServerProcess, running_example_app

MARGIN = 3.0  # seconds on top of the store's limits: a loaded CI machine, two processes
# The store's time limits, in its URL: short, so that the test is quick.
RETRY_FOR, TIMEOUT = 2.0, 1.0
SQLITE_BUSY_TIMEOUT = 5.0  # the example app's SQLite store keeps the default
# The admin routes that read the store, with what a working store answers.
READS = (
    "/events",
    "/events/{event_id}",
    "/events/{event_id}/proof",
    "/facets",
    "/histogram",
    "/verify",
)
EXPORTS = ("/export.csv", "/export.jsonl")


@dataclass(frozen=True)
class Answer:
    path: str
    response: httpx.Response
    seconds: float


async def ask(client: httpx.AsyncClient, method: str, path: str, **options: Any) -> Answer:
    started = time.monotonic()
    response = await client.request(method, path, **options)
    return Answer(path, response, time.monotonic() - started)


async def ask_everything(client: httpx.AsyncClient, event_id: str) -> dict[str, Answer]:
    """Every admin route that uses the store, and an audited request, all at once."""
    admin = [f"/admin/audit{path.format(event_id=event_id)}" for path in READS + EXPORTS]
    answers = await asyncio.gather(
        *(ask(client, "GET", path) for path in admin),
        ask(client, "POST", "/projects", json={"name": "during"}),
    )
    return {answer.path: answer for answer in answers}


def assert_unavailable(
    answers: dict[str, Answer], reads_within: float, writes_within: float
) -> None:
    """Each answer is the 503 for an unavailable store, in time."""
    for path, answer in answers.items():
        response = answer.response
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json", path
        assert response.headers["retry-after"] == "5", path
        expected = "audit_unavailable" if path == "/projects" else "store_unavailable"
        assert response.json()["error"]["code"] == expected, (path, response.text)
        writes = path == "/projects" or path.endswith(EXPORTS)  # they append an event
        assert answer.seconds <= (writes_within if writes else reads_within), (path, answer)


def assert_working(answers: dict[str, Answer]) -> None:
    for path, answer in answers.items():
        expected = 201 if path == "/projects" else 200
        assert answer.response.status_code == expected, (path, answer.response.text)


@contextmanager
def example_app(tmp_path: Path, framework: str, *options: str) -> Iterator[ServerProcess]:
    with running_example_app(tmp_path, "--framework", framework, *options) as server:
        yield server


async def seeded(client: httpx.AsyncClient) -> str:
    """Create a project (its event in the store); the id of an event."""
    created = await client.post("/projects", json={"name": "Apollo"})
    assert created.status_code == 201, created.text
    page = await client.get("/admin/audit/events")
    assert page.status_code == 200, page.text
    return str(page.json()["events"][0]["id"])


def admin_client(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, auth=ADMIN, timeout=60)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_postgres_stopped_then_frozen(
    pg_server: ThrowawayPostgres, tmp_path: Path, framework: str
) -> None:
    url = pg_server.store_url(retry_for=RETRY_FOR, connect_timeout=TIMEOUT, command_timeout=TIMEOUT)
    with example_app(tmp_path, framework, "--audit-store", url) as server:
        async with admin_client(server) as client:
            event_id = await seeded(client)
            assert_working(await ask_everything(client, event_id))

            pg_server.stop()
            # Reads are refused at once (nothing listens); an event is retried for
            # retry_for first, in case the server comes back.
            answers = await ask_everything(client, event_id)
            assert_unavailable(answers, reads_within=MARGIN, writes_within=RETRY_FOR + MARGIN)
            pg_server.start()
            assert_working(await ask_everything(client, event_id))

            pg_server.freeze()
            # Before: every request hung for as long as the freeze.
            answers = await ask_everything(client, event_id)
            pg_server.thaw()
            assert_unavailable(
                answers,
                reads_within=2 * TIMEOUT + MARGIN,  # a connection, then an answer
                writes_within=RETRY_FOR + MARGIN,
            )
            assert_working(await ask_everything(client, event_id))

            verified = await client.get("/admin/audit/verify")
            assert verified.json()["ok"] is True, verified.text


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another process holds the SQLite store's write lock."""
    with closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_sqlite_write_lock_held_by_another_process(tmp_path: Path, framework: str) -> None:
    """Reads go on (WAL: readers never wait for writers); what must append an event, an
    audited request or an export, answers 503 once busy_timeout has passed."""
    with example_app(tmp_path, framework) as server:
        async with admin_client(server) as client:
            event_id = await seeded(client)
            with write_locked(tmp_path / "data" / "audit.db"):
                answers = await ask_everything(client, event_id)
            writing = {
                path: answer
                for path, answer in answers.items()
                if path == "/projects" or path.endswith(EXPORTS)
            }
            assert_unavailable(writing, reads_within=0, writes_within=SQLITE_BUSY_TIMEOUT + MARGIN)
            assert_working({path: answers[path] for path in answers.keys() - writing.keys()})
            assert_working(await ask_everything(client, event_id))
