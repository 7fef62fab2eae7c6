"""The Litestar version of the example app (example_app/litestar_app.py), over HTTP."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from example_app.litestar_app import create_app
from example_app.settings import Settings
from litestar import Litestar

from auditmw import AuditStore, Event, EventFilter

from ._asgi import client_for as asgi_client
from ._example import ADMIN, MEMBER

CLIENT_IP = "198.51.100.9"
USER_AGENT = "example-tests-litestar/1.0"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Litestar]:
    """The app with its databases open; the log must verify after.

    (The fixture opens them itself: Litestar's ``app.lifespan()`` runs an anyio task
    group, which must be left in the task that entered it, and pytest-asyncio tears
    fixtures down in another task. ``test_the_lifespan_opens_and_closes_the_stores``
    runs the real lifespan.)
    """
    (tmp_path / "data").mkdir()
    application = create_app(Settings(data_dir=tmp_path / "data"))
    async with application.state.db, store_of(application):
        yield application
        report = await store_of(application).verify()
        assert report.ok, report.summary()


def store_of(app: Litestar) -> AuditStore:
    store: AuditStore = app.state.store
    return store


# The example's visitor: an address and a user agent the tests find in its events.
client_for = functools.partial(
    asgi_client, peer=CLIENT_IP, base_url="http://example.test", headers={"user-agent": USER_AGENT}
)


async def events(app: Litestar, **filters: Any) -> list[Event]:
    page = await store_of(app).query(EventFilter(**filters), limit=100)
    return list(reversed(page.events))


async def user_id(app: Litestar, email: str) -> str:
    user = await app.state.db.user_by_email(email)
    assert user is not None
    return str(user.id)


async def test_sign_in_records_the_user_and_the_request(app: Litestar) -> None:
    secret = "hunter2-wrong-password"
    async with client_for(app) as client:
        ok = await client.post(
            "/auth/sign-in",
            json={"email": "member@example.com", "password": "member"},
            headers={"x-request-id": "ls-sign-in"},
        )
        wrong = await client.post(
            "/auth/sign-in", json={"email": "member@example.com", "password": secret}
        )
        form = await client.post(
            "/auth/sign-in", data={"email": "admin@example.com", "password": "admin"}
        )
        home = await client.get("/")  # now with the admin's session cookie
        signed_out = await client.post("/auth/sign-out")
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-request-id"] == "ls-sign-in"
    assert "httponly" in ok.headers["set-cookie"].lower()
    assert wrong.status_code == 401
    assert (form.status_code, form.headers["location"]) == (303, "/")
    assert "Signed in as <strong>admin@example.com</strong>" in home.text
    assert signed_out.status_code == 204

    signed_in = await events(app, action="user.signed_in")
    assert [e.user_email for e in signed_in] == ["member@example.com", "admin@example.com"]
    first = signed_in[0]
    assert first.user_id == await user_id(app, "member@example.com")
    assert (first.ip_address, first.user_agent, first.request_id) == (
        CLIENT_IP,
        USER_AGENT,
        "ls-sign-in",
    )
    [failed] = await events(app, action="user.sign_in_failed")
    assert (failed.outcome, failed.details) == ("failure", {"email": "member@example.com"})
    entries = b"".join([row.entry async for row in store_of(app).iter_chain_rows()])
    assert secret.encode() not in entries
    [out] = await events(app, action="user.signed_out")
    assert out.user_email == "admin@example.com"


async def test_project_create_update_delete(app: Litestar) -> None:
    member_id = await user_id(app, "member@example.com")
    async with client_for(app, auth=MEMBER) as client:
        created = await client.post(
            "/projects",
            json={"name": "Apollo", "description": "moon"},
            headers={"x-request-id": "ls-create"},
        )
        assert created.status_code == 201, created.text
        project = created.json()
        path = f"/projects/{project['id']}"
        assert (await client.get(path)).json() == project
        updated = await client.patch(path, json={"description": "the moon"})
        unchanged = await client.patch(path, json={"description": "the moon"})
        deleted = await client.delete(path)
        missing = await client.delete(path)
        malformed = await client.post("/projects", content=b"{", headers={"content-type": "x"})
        invalid = await client.post("/projects", json={"name": 7})
    assert updated.json() == {**project, "description": "the moon"}
    assert unchanged.status_code == 200
    assert (deleted.status_code, missing.status_code) == (204, 404)
    assert (malformed.status_code, invalid.status_code) == (400, 422)
    assert invalid.json()["error"]["code"] == "invalid_request"

    recorded = [
        (e.action, e.resource_id, e.outcome)
        for e in await events(app, resource="project")
        if e.outcome == "success" or e.action == "project.deleted"
    ]
    pid = str(project["id"])
    assert recorded == [
        ("project.created", pid, "success"),
        ("project.updated", pid, "success"),  # the unchanged PATCH recorded nothing
        ("project.deleted", pid, "success"),
        ("project.deleted", pid, "failure"),
    ]
    [create] = await events(app, action="project.created", outcome="success")
    assert (create.user_id, create.request_id, create.ip_address) == (
        member_id,
        "ls-create",
        CLIENT_IP,
    )
    [update] = await events(app, action="project.updated")
    assert update.details == {"changes": {"description": {"from": "moon", "to": "the moon"}}}


async def test_members_are_denied_role_changes_and_admins_are_not(app: Litestar) -> None:
    member_id = await user_id(app, "member@example.com")
    async with client_for(app, auth=MEMBER) as member:
        denied = await member.put("/users/admin@example.com/role", json={"role": "member"})
    async with client_for(app, auth=ADMIN) as admin:
        promoted = await admin.put("/users/member@example.com/role", json={"role": "admin"})
    assert (denied.status_code, promoted.status_code) == (403, 200)
    first, second = await events(app, action="permission.changed")
    assert (first.outcome, first.user_id) == ("denied", member_id)
    assert (second.outcome, second.resource_id) == ("success", member_id)
    assert (second.details or {})["old_role"] == "member"
    assert (second.details or {})["new_role"] == "admin"


async def test_api_keys_are_recorded_by_id_only(app: Litestar) -> None:
    async with client_for(app, auth=MEMBER) as client:
        made = await client.post("/api-keys", json={"name": "ci"})
    assert made.status_code == 201
    key = made.json()
    async with client_for(app) as client:
        bearer = {"authorization": f"Bearer {key['key']}"}
        assert (await client.post("/projects", json={"name": "K"}, headers=bearer)).is_success
        wrong = await client.post("/projects", json={"name": "K"}, auth=("admin@example.com", "x"))
    assert wrong.status_code == 401
    [event] = await events(app, action="api_key.created")
    assert (event.resource_id, event.details) == (key["id"], None)
    entries = b"".join([row.entry async for row in store_of(app).iter_chain_rows()])
    assert key["key"].encode() not in entries


async def test_the_mounted_admin_app_is_for_admins_only(app: Litestar) -> None:
    async with client_for(app) as anonymous:
        assert (await anonymous.get("/admin/audit/")).status_code == 401
    async with client_for(app, auth=MEMBER) as member:
        assert (await member.get("/admin/audit/events")).status_code == 403
    async with client_for(app, auth=ADMIN) as admin:
        page = await admin.get("/admin/audit/")
        listed = await admin.get("/admin/audit/events")
        verified = await admin.get("/admin/audit/verify")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert listed.status_code == 200
    assert verified.json()["ok"] is True


async def test_the_lifespan_opens_and_closes_the_stores(tmp_path: Path) -> None:
    application = create_app(Settings(data_dir=tmp_path / "data"))
    async with application.lifespan(), client_for(application, auth=ADMIN) as client:
        created = await client.post("/projects", json={"name": "Lifespan"})
        assert created.status_code == 201
    async with store_of(application) as store:  # closed by the lifespan, reopened here
        [event] = (await store.query(EventFilter(action="project.created"))).events
        assert event.user_email == "admin@example.com"
        assert (await store.verify()).ok


async def test_text_with_a_lone_surrogate_is_422_json_and_a_failed_sign_in_is_recorded(
    app: Litestar,
) -> None:
    json_type = {"content-type": "application/json"}
    async with client_for(app, auth=MEMBER) as client:
        project = (await client.post("/projects", json={"name": "Target"})).json()
        refused = [
            await client.post("/projects", content=b'{"name": "\\ud800"}', headers=json_type),
            await client.patch(
                f"/projects/{project['id']}",
                content=b'{"description": "\xed\xa0\x80"}',  # a surrogate's UTF-8 bytes
                headers=json_type,
            ),
            await client.post("/api-keys", content=b'{"name": "\\udfff"}', headers=json_type),
        ]
        unchanged = await client.get(f"/projects/{project['id']}")
    async with client_for(app) as anonymous:
        sign_in = await anonymous.post(
            "/auth/sign-in",
            content=b'{"email": "member@example.com", "password": "x\\ud800"}',
            headers=json_type,
        )
    for response in [*refused, sign_in]:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and "Unicode" in error["message"]
    assert unchanged.json() == project
    assert [(e.action, e.outcome) for e in await events(app, outcome="failure")] == [
        ("project.created", "failure"),
        ("project.updated", "failure"),
        ("user.sign_in_failed", "failure"),
    ]
    [failed] = await events(app, action="user.sign_in_failed")
    assert (failed.details, failed.ip_address) == ({"email": "member@example.com"}, CLIENT_IP)
