"""The example app's changes and their audit events succeed or fail together.

Each state-changing handler changes the app's own database (SQLite) in a transaction
that commits only after its event is committed (``example_app.requests.in_transaction``):

- the audit store refuses the event: the client gets 422 and the data is as it was,
  read back through the API once the store is healthy again;
- the store is healthy: every change has its event;
- the app's commit fails after the event: a ``change.rolled_back`` event says so;
- the app's database is busy: 503, nothing changed, nothing recorded.

``python -m example_app`` (both frameworks) over real HTTP, with SQLite and PostgreSQL
audit stores; the busy database is driven in-process (its wait is shortened).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from example_app import app as starlette_app
from example_app import db as example_db
from example_app import litestar_app
from example_app.settings import Settings

from auditmw import Event, EventFilter, open_store

from ._example import ADMIN, FRAMEWORKS, MEMBER, sign_in_form
from ._postgres import POSTGRES_DSN
from ._servers import ServerProcess, running_example_app, serving_in_loop
from ._sites import empty_store, new_request_id, with_id, write_lock

MEMBER_SIGN_IN = sign_in_form(MEMBER)

# The audit store refuses every append, as a database does that has gone read-only: a
# trigger raises on each insert into the events table (the store answers StoreError).
REFUSAL = "the audit store refuses writes (test)"
SQLITE_REFUSE = (
    "CREATE TRIGGER test_refuse_appends BEFORE INSERT ON auditmw_events "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
)
POSTGRES_REFUSE = f"""
CREATE FUNCTION test_refuse_appends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$;
CREATE TRIGGER test_refuse_appends BEFORE INSERT ON auditmw_events
    FOR EACH STATEMENT EXECUTE FUNCTION test_refuse_appends();
"""
POSTGRES_ALLOW = """
DROP TRIGGER test_refuse_appends ON auditmw_events;
DROP FUNCTION test_refuse_appends();
"""

# The app's COMMIT fails: a deferred foreign key that each new project breaks is checked
# only then (as a full disk or an I/O error would fail it).
VETO_NEW_PROJECTS = """
CREATE TABLE test_veto_parent (id INTEGER PRIMARY KEY);
CREATE TABLE test_veto_child (
    parent_id INTEGER REFERENCES test_veto_parent(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TRIGGER test_veto_new_projects AFTER INSERT ON projects
BEGIN INSERT INTO test_veto_child VALUES (-1); END;
"""
LIFT_VETO = """
DROP TRIGGER test_veto_new_projects;
DROP TABLE test_veto_child;
DROP TABLE test_veto_parent;
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the example app keeps its audit store: an empty one of each backend."""
    with empty_store(request.param, tmp_path) as target:
        yield target


@asynccontextmanager
async def appends_refused(store: str) -> AsyncIterator[None]:
    """The audit store at ``store`` refuses every append while the block runs."""
    if not store.startswith("postgresql://"):
        execute_script(Path(store), SQLITE_REFUSE)
        try:
            yield
        finally:
            execute_script(Path(store), "DROP TRIGGER test_refuse_appends")
        return
    [schema] = parse_qs(urlsplit(store).query)["schema"]
    conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
    try:
        await conn.execute(POSTGRES_REFUSE)
        try:
            yield
        finally:
            await conn.execute(POSTGRES_ALLOW)
    finally:
        await conn.close()


def app_db(server_dir: Path) -> Path:
    return server_dir / "data" / "app.db"


def app_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the app's database holds that a change may touch, read from the file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("users", "sessions", "projects", "api_keys")
        }
    finally:
        db.close()


def execute_script(path: Path, script: str) -> None:
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        db.executescript(script)
    finally:
        db.close()


async def stored_events(store: str) -> list[Event]:
    async with open_store(store) as opened:
        return [event async for event in opened.iter_events(EventFilter())]


async def events_of(store: str, request_id: str) -> list[Event]:
    return [event for event in await stored_events(store) if event.request_id == request_id]


def client(server: ServerProcess, auth: tuple[str, str] | None = None) -> httpx.AsyncClient:
    # Generous: a refused append may wait for the store (busy_timeout 5 s on SQLite).
    return httpx.AsyncClient(base_url=server.url, auth=auth, timeout=30)


def example_app(tmp_path: Path, framework: str, store: str) -> Any:
    """``python -m example_app`` with the data in ``tmp_path/data`` and this store."""
    return running_example_app(tmp_path, "--framework", framework, "--audit-store", store)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_every_change_is_undone_when_the_store_refuses_its_event_and_kept_with_it_after(
    framework: str, store: str, tmp_path: Path
) -> None:
    with example_app(tmp_path, framework, store) as server:
        async with (
            client(server, ADMIN) as admin,
            client(server, MEMBER) as member_by_password,
            client(server) as member,
            client(server) as newcomer,
        ):
            assert (await member.post("/auth/sign-in", json=MEMBER_SIGN_IN)).status_code == 200
            created = await admin.post("/projects", json={"name": "Apollo", "description": "m"})
            assert created.status_code == 201, created.text
            project = created.json()
            path = f"/projects/{project['id']}"
            rows_before = app_rows(app_db(tmp_path))
            events_before = await stored_events(store)

            async with appends_refused(store):
                refused = {
                    "create": await admin.post("/projects", json={"name": "Refused"}),
                    "update": await admin.patch(path, json={"name": "Refused"}),
                    "delete": await admin.delete(path),
                    "role": await admin.put(
                        "/users/member@example.com/role", json={"role": "admin"}
                    ),
                    "api key": await admin.post("/api-keys", json={"name": "refused"}),
                    "sign in": await newcomer.post("/auth/sign-in", json=MEMBER_SIGN_IN),
                    "sign out": await member.post("/auth/sign-out"),
                }
            for name, response in refused.items():
                # The database refused the event's data: 422, the same request fails again.
                assert response.status_code == 422, (name, response.text)
                assert response.json()["error"]["code"] == "audit_event_refused", name
                assert "set-cookie" not in response.headers, name
            assert await stored_events(store) == events_before

            # Healthy again: the data is as it was before the refused changes.
            assert (await admin.get(path)).json() == project
            assert (await admin.get(f"/projects/{project['id'] + 1}")).status_code == 404
            home = await member.get("/")  # the session the refused sign-out would have ended
            assert "Signed in as <strong>member@example.com</strong>" in home.text
            still_member = await member_by_password.get("/admin/audit/events")
            assert still_member.status_code == 403
            assert "session" not in newcomer.cookies
            assert app_rows(app_db(tmp_path)) == rows_before  # sessions, keys: no API lists them

            # Every change now goes through, each with its event.
            ids = {name: new_request_id() for name in refused}
            made = await admin.post(
                "/projects", json={"name": "Artemis"}, headers=with_id(ids["create"])
            )
            assert made.status_code == 201, made.text
            assert made.json()["id"] == project["id"] + 1  # the refused insert left no trace
            renamed = await admin.patch(
                path, json={"name": "Apollo 11"}, headers=with_id(ids["update"])
            )
            assert renamed.json()["name"] == "Apollo 11"
            promoted = await admin.put(
                "/users/member@example.com/role",
                json={"role": "admin"},
                headers=with_id(ids["role"]),
            )
            assert promoted.status_code == 200, promoted.text
            key = await admin.post(
                "/api-keys", json={"name": "ci"}, headers=with_id(ids["api key"])
            )
            assert key.status_code == 201, key.text
            signed_in = await newcomer.post(
                "/auth/sign-in", json=MEMBER_SIGN_IN, headers=with_id(ids["sign in"])
            )
            assert signed_in.status_code == 200 and "session" in newcomer.cookies
            signed_out = await member.post("/auth/sign-out", headers=with_id(ids["sign out"]))
            assert signed_out.status_code == 204
            deleted = await admin.delete(path, headers=with_id(ids["delete"]))
            assert deleted.status_code == 204

            assert (await admin.get(path)).status_code == 404
            assert (await member_by_password.get("/admin/audit/events")).status_code == 200
            assert "Signed in as" not in (await member.get("/")).text

        expected = {
            "create": ("project.created", str(project["id"] + 1)),
            "update": ("project.updated", str(project["id"])),
            "delete": ("project.deleted", str(project["id"])),
            "role": ("permission.changed", promoted.json()["id"]),
            "api key": ("api_key.created", key.json()["id"]),
            "sign in": ("user.signed_in", None),
            "sign out": ("user.signed_out", None),
        }
        for name, (action, resource_id) in expected.items():
            [event] = await events_of(store, ids[name])
            assert (event.action, event.outcome, event.resource_id) == (
                action,
                "success",
                resource_id,
            ), name
        async with open_store(store) as opened:
            report = await opened.verify()
        assert report.ok, report.summary()


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_store_waiting_for_its_write_lock_fails_the_change_and_the_data_stays(
    framework: str, tmp_path: Path
) -> None:
    """A genuine outage rather than a refusal: another process holds the SQLite store's
    write lock past its busy_timeout (5 s)."""
    store = tmp_path / "audit.db"
    with example_app(tmp_path, framework, str(store)) as server:
        async with client(server, ADMIN) as admin:
            project = (await admin.post("/projects", json={"name": "Apollo"})).json()
            path = f"/projects/{project['id']}"
            with write_lock(store):
                refused = await admin.patch(path, json={"name": "Changed"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "audit_unavailable"
            assert (await admin.get(path)).json() == project

            request_id = new_request_id()
            changed = await admin.patch(path, json={"name": "Changed"}, headers=with_id(request_id))
            assert changed.json() == {**project, "name": "Changed"}
        [event] = await events_of(str(store), request_id)
        assert event.details == {"changes": {"name": {"from": "Apollo", "to": "Changed"}}}


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_change_whose_commit_fails_after_its_event_is_recorded_as_rolled_back(
    framework: str, store: str, tmp_path: Path
) -> None:
    with example_app(tmp_path, framework, store) as server:
        async with client(server, ADMIN) as admin:
            first = (await admin.post("/projects", json={"name": "First"})).json()
            execute_script(app_db(tmp_path), VETO_NEW_PROJECTS)
            request_id = new_request_id()
            failed = await admin.post(
                "/projects", json={"name": "Doomed"}, headers=with_id(request_id)
            )
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"]["code"] == "not_saved"
            assert "nothing was changed" in failed.json()["error"]["message"]
            assert failed.headers["retry-after"].isdigit()

            recorded, rolled_back = await events_of(store, request_id)
            assert (recorded.action, recorded.outcome) == ("project.created", "success")
            assert recorded.resource_id == str(first["id"] + 1)
            assert (rolled_back.action, rolled_back.resource) == ("change.rolled_back", "request")
            assert rolled_back.outcome == "failure"
            assert rolled_back.details == {"error": "IntegrityError"}
            assert rolled_back.user_email == "admin@example.com"
            assert (await admin.get(f"/projects/{first['id'] + 1}")).status_code == 404

            execute_script(app_db(tmp_path), LIFT_VETO)
            saved = await admin.post("/projects", json={"name": "Saved"})
            assert saved.status_code == 201 and saved.json()["id"] == first["id"] + 1
        async with open_store(store) as opened:
            report = await opened.verify()
        assert report.ok, report.summary()


# --- in-process: the app's database is busy ----------------------------------------------


@asynccontextmanager
async def served(framework: str, data_dir: Path) -> AsyncIterator[tuple[Any, str]]:
    """The app with its databases open, served by uvicorn in this event loop."""
    module = starlette_app if framework == "starlette" else litestar_app
    await asyncio.to_thread(data_dir.mkdir)
    app: Any = module.create_app(Settings(data_dir=data_dir))
    async with app.state.db, app.state.store, serving_in_loop(app) as base_url:
        yield app, base_url


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_busy_app_database_is_a_503_and_nothing_is_changed_or_recorded(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example_db, "BUSY_TIMEOUT", 0.3)
    async with (
        served(framework, tmp_path / "data") as (app, base_url),
        httpx.AsyncClient(base_url=base_url, auth=ADMIN, timeout=30) as admin,
    ):
        async with app.state.db.transaction():  # another change in this process
            held = await admin.post("/projects", json={"name": "Waits"})
        with write_lock(tmp_path / "data" / "app.db"):  # another process's change
            locked = await admin.post("/projects", json={"name": "Waits too"})
        for response in (held, locked):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "busy"
            assert response.headers["retry-after"].isdigit()
        assert [e async for e in app.state.store.iter_events(EventFilter())] == []
        assert app_rows(tmp_path / "data" / "app.db")["projects"] == []

        done = await admin.post("/projects", json={"name": "Done"})
        assert done.status_code == 201, done.text
        [event] = [e async for e in app.state.store.iter_events(EventFilter())]
        assert (event.action, event.resource_id) == ("project.created", str(done.json()["id"]))


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_concurrent_changes_each_commit_with_their_event(
    framework: str, tmp_path: Path
) -> None:
    async with (
        served(framework, tmp_path / "data") as (app, base_url),
        httpx.AsyncClient(base_url=base_url, auth=ADMIN, timeout=30) as admin,
    ):
        responses = await asyncio.gather(
            *(admin.post("/projects", json={"name": f"p{n}"}) for n in range(20))
        )
        assert [r.status_code for r in responses] == [201] * 20
        ids = sorted(str(r.json()["id"]) for r in responses)
        events = [e async for e in app.state.store.iter_events(EventFilter())]
        assert sorted(e.resource_id or "" for e in events) == ids
        assert len(app_rows(tmp_path / "data" / "app.db")["projects"]) == 20
