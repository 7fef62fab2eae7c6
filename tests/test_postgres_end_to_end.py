"""The admin app and the CLI against a real PostgreSQL store, end to end."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest

from auditmw import AdminApp, NewEvent, open_store
from auditmw._cli import main
from auditmw._stores.jsonl import verify_jsonl

from ._postgres import store_url
from .test_admin import ADMIN, VIEWER, authorize


async def test_admin_app_on_postgres(pg_schema: str, tmp_path: Path) -> None:
    url = store_url(pg_schema)
    async with open_store(url) as store:
        for i in range(30):
            await store.append(
                NewEvent(
                    action="project.updated" if i % 2 else "user.signed_in",
                    resource="project" if i % 2 else "session",
                    resource_id=f"P-{i}",
                    user_email=f"user{i % 3}@example.com",
                    ip_address="203.0.113.9",
                )
            )
        transport = httpx.ASGITransport(AdminApp(store, authorize=authorize))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/events", headers=VIEWER)).status_code == 403
            assert (await client.get("/events")).status_code == 401

            seen: list[str] = []
            response = await client.get(
                "/events", params={"action": "project.*", "limit": 4}, headers=ADMIN
            )
            while True:
                assert response.status_code == 200
                body = response.json()
                seen += [event["resource_id"] for event in body["events"]]
                if body["next_cursor"] is None:
                    break
                response = await client.get(
                    "/events",
                    params={"action": "project.*", "limit": 4, "cursor": body["next_cursor"]},
                    headers=ADMIN,
                )
            assert seen == [f"P-{i}" for i in range(29, 0, -2)]

            search = await client.get("/events", params={"search": "USER1@"}, headers=ADMIN)
            assert {e["user_email"] for e in search.json()["events"]} == {"user1@example.com"}

            export = await client.get("/export.jsonl", headers=ADMIN)
            assert export.status_code == 200
            jsonl = tmp_path / "export.jsonl"
            jsonl.write_bytes(export.content)
            with jsonl.open("rb") as lines:
                assert verify_jsonl(lines).ok

            rows = list(
                csv.reader(io.StringIO((await client.get("/export.csv", headers=ADMIN)).text))
            )
            assert rows[0][:6] == [
                "Timestamp",
                "User",
                "Action",
                "Resource",
                "Resource ID",
                "IP Address",
            ]
            assert len(rows) == 1 + 32  # 30 events + both exports' own export.requested

            report = (await client.get("/verify", headers=ADMIN)).json()
            assert report["ok"] is True and report["entries"] == 32


def test_cli_verify_and_export_on_postgres(
    pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    url = store_url(pg_schema)

    async def fill() -> None:
        async with open_store(url) as store:
            for i in range(5):
                await store.append(NewEvent(action="a.b", resource="r", resource_id=str(i)))

    asyncio.run(fill())
    assert main(["verify", url]) == 0
    assert capsys.readouterr().out.startswith("OK: 5 entries intact")
    out = tmp_path / "all.jsonl"
    assert main(["export", url, "--format", "jsonl", "-o", str(out)]) == 0
    assert main(["verify", "--jsonl", str(out)]) == 0


async def test_example_app_on_postgres(pg_schema: str, tmp_path: Path) -> None:
    """The example app with `--audit-store postgresql://...`: the flows land in PostgreSQL."""
    from example_app.app import create_app
    from example_app.settings import Settings

    from auditmw import AuditStore, EventFilter
    from auditmw._stores.postgres import PostgresStore

    app = create_app(Settings(data_dir=tmp_path / "data", audit_store=store_url(pg_schema)))
    async with app.router.lifespan_context(app):
        store: AuditStore = app.state.store
        assert isinstance(store, PostgresStore)
        transport = httpx.ASGITransport(app, client=("203.0.113.7", 50123))
        auth = ("admin@example.com", "admin")
        async with httpx.AsyncClient(transport=transport, base_url="http://t", auth=auth) as client:
            created = await client.post("/projects", json={"name": "Apollo", "description": "Moon"})
            assert created.status_code == 201
            project = created.json()
            patched = await client.patch(f"/projects/{project['id']}", json={"name": "Artemis"})
            assert patched.status_code == 200
            deleted = await client.delete(f"/projects/{project['id']}")
            assert deleted.status_code == 204
            dashboard_data = await client.get("/admin/audit/events", params={"resource": "project"})
            assert dashboard_data.status_code == 200
        page = await store.query(EventFilter(resource="project"))
        actions = [event.action for event in reversed(page.events)]
        assert actions == ["project.created", "project.updated", "project.deleted"]
        updated = page.events[1]
        assert updated.details == {"changes": {"name": {"from": "Apollo", "to": "Artemis"}}}
        assert {event.ip_address for event in page.events} == {"203.0.113.7"}
        assert (await store.verify()).ok
