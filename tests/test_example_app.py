"""The example app (example_app/app.py), driven over HTTP: each route, and the events it
leaves in the audit store, with their IP address, user agent, user and request id."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from example_app.app import create_app
from example_app.settings import Settings
from starlette.applications import Starlette

from auditmw import AuditStore, Event, EventFilter, SQLiteStore

from ._asgi import client_for as asgi_client
from ._example import ADMIN, MEMBER
from ._servers import running_example_app

CLIENT_IP = "203.0.113.7"
USER_AGENT = "example-tests/1.0"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Starlette]:
    """The app with its lifespan running (databases open); the log must verify after."""
    application = create_app(Settings(data_dir=tmp_path / "data"))
    async with application.router.lifespan_context(application):
        yield application
        report = await store_of(application).verify()
        assert report.ok, report.summary()


def store_of(app: Starlette) -> AuditStore:
    store: AuditStore = app.state.store
    return store


# The example's visitor: an address and a user agent the tests find in its events.
client_for = functools.partial(
    asgi_client, peer=CLIENT_IP, base_url="http://example.test", headers={"user-agent": USER_AGENT}
)


async def events(app: Starlette, **filters: Any) -> list[Event]:
    """Matching events, oldest first."""
    page = await store_of(app).query(EventFilter(**filters), limit=100)
    return list(reversed(page.events))


async def entry_bytes(app: Starlette) -> bytes:
    """Every stored entry, as hashed: what a secret must never appear in."""
    return b"\n".join([row.entry async for row in store_of(app).iter_chain_rows()])


async def user_id(app: Starlette, email: str) -> str:
    user = await app.state.db.user_by_email(email)
    assert user is not None
    return str(user.id)


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    response = await client.post("/auth/sign-in", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response


# Sessions


async def test_sign_in_with_json_records_the_user_and_the_request(app: Starlette) -> None:
    async with client_for(app) as client:
        response = await client.post(
            "/auth/sign-in",
            json={"email": "member@example.com", "password": "member"},
            headers={"x-request-id": "req-sign-in-1"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["user"]["email"] == "member@example.com"
    assert response.headers["x-request-id"] == "req-sign-in-1"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie

    [event] = await events(app, action="user.signed_in")
    assert (event.resource, event.outcome) == ("session", "success")
    assert event.user_id == await user_id(app, "member@example.com")
    assert event.user_email == "member@example.com"
    assert (event.ip_address, event.user_agent, event.request_id) == (
        CLIENT_IP,
        USER_AGENT,
        "req-sign-in-1",
    )


async def test_sign_in_with_a_form_redirects_and_the_cookie_authenticates(app: Starlette) -> None:
    async with client_for(app) as client:
        response = await client.post(
            "/auth/sign-in", data={"email": "admin@example.com", "password": "admin"}
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        home = await client.get("/")  # the session cookie is sent back
    assert "Signed in as <strong>admin@example.com</strong>" in home.text
    [event] = await events(app, action="user.signed_in")
    assert event.user_email == "admin@example.com"


async def test_wrong_password_is_401_and_recorded_without_the_password(app: Starlette) -> None:
    secret = "hunter2-wrong-password"
    async with client_for(app) as client:
        as_json = await client.post(
            "/auth/sign-in",
            json={"email": "member@example.com", "password": secret},
            headers={"x-request-id": "req-failed"},
        )
        as_form = await client.post(
            "/auth/sign-in", data={"email": "nobody@example.com", "password": secret}
        )
    assert as_json.status_code == 401
    assert as_json.json()["error"]["code"] == "invalid_credentials"
    assert "set-cookie" not in as_json.headers
    assert as_form.status_code == 401
    assert "Wrong email or password" in as_form.text

    failed = await events(app, action="user.sign_in_failed")
    assert [(e.outcome, e.details, e.user_id) for e in failed] == [
        ("failure", {"email": "member@example.com"}, None),
        ("failure", {"email": "nobody@example.com"}, None),
    ]
    assert (failed[0].ip_address, failed[0].request_id) == (CLIENT_IP, "req-failed")
    assert secret.encode() not in await entry_bytes(app)
    assert await events(app, action="user.signed_in") == []


async def test_sign_out_ends_the_session(app: Starlette) -> None:
    async with client_for(app) as client:
        await sign_in(client, *MEMBER)
        response = await client.post("/auth/sign-out", headers={"x-request-id": "req-out"})
        assert response.status_code == 204
        assert "session=" in response.headers["set-cookie"]  # deleted
        after = await client.post("/projects", json={"name": "Too late"})
    assert after.status_code == 401
    [event] = await events(app, action="user.signed_out")
    assert (event.user_email, event.request_id, event.outcome) == (
        "member@example.com",
        "req-out",
        "success",
    )
    # The old token is gone server-side too, not just from the browser.
    replay = client_for(app)
    replay.cookies.set("session", client.cookies.get("session") or "x")
    async with replay:
        assert (await replay.post("/auth/sign-out")).status_code == 401


async def test_sign_out_needs_a_user(app: Starlette) -> None:
    async with client_for(app) as client:
        response = await client.post("/auth/sign-out")
    assert response.status_code == 401
    assert await events(app, action="user.signed_out") == []


# Projects


async def test_project_create_read_update_delete(app: Starlette) -> None:
    member_id = await user_id(app, "member@example.com")
    async with client_for(app) as client:
        await sign_in(client, *MEMBER)
        created = await client.post(
            "/projects",
            json={"name": "Apollo", "description": "moon"},
            headers={"x-request-id": "req-create"},
        )
        assert created.status_code == 201, created.text
        project = created.json()
        assert project == {"id": project["id"], "name": "Apollo", "description": "moon"}
        path = f"/projects/{project['id']}"

        count = len(await events(app))
        assert (await client.get(path)).json() == project
        assert (await client.get("/projects/9999")).status_code == 404
        assert len(await events(app)) == count  # reading is not audited

        updated = await client.patch(
            path, json={"name": "Artemis", "description": "moon"}, headers={"x-request-id": "u1"}
        )
        assert updated.status_code == 200
        assert updated.json() == {**project, "name": "Artemis"}
        unchanged = await client.patch(path, json={"name": "Artemis"})
        assert unchanged.status_code == 200
        empty = await client.patch(path, json={})
        assert empty.status_code == 200

        deleted = await client.delete(path, headers={"x-request-id": "req-delete"})
        assert deleted.status_code == 204
        assert (await client.get(path)).status_code == 404
        again = await client.delete(path)
        assert again.status_code == 404

    [create] = await events(app, action="project.created")
    assert (create.resource, create.resource_id, create.outcome) == (
        "project",
        str(project["id"]),
        "success",
    )
    assert create.details == {"name": "Apollo", "description": "moon"}
    assert (create.user_id, create.user_email) == (member_id, "member@example.com")
    assert (create.ip_address, create.user_agent, create.request_id) == (
        CLIENT_IP,
        USER_AGENT,
        "req-create",
    )

    [update] = await events(app, action="project.updated")  # the no-op PATCHes left nothing
    assert update.details == {"changes": {"name": {"from": "Apollo", "to": "Artemis"}}}
    assert (update.resource_id, update.request_id, update.user_id) == (
        str(project["id"]),
        "u1",
        member_id,
    )

    done, missing = await events(app, action="project.deleted")
    assert (done.resource_id, done.outcome, done.request_id) == (
        str(project["id"]),
        "success",
        "req-delete",
    )
    assert (missing.resource_id, missing.outcome, missing.user_id) == (
        str(project["id"]),
        "failure",
        member_id,
    )
    assert missing.details == {"error": "ApiError", "status_code": 404}


async def test_anonymous_project_changes_are_401_and_recorded_denied(app: Starlette) -> None:
    async with client_for(app) as client:
        response = await client.post("/projects", json={"name": "Nope"})
        reading = await client.get("/projects/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert reading.status_code == 401
    [event] = await events(app, action="project.created")
    assert (event.outcome, event.user_id, event.ip_address) == ("denied", None, CLIENT_IP)


async def test_http_basic_and_api_keys(app: Starlette) -> None:
    async with client_for(app, auth=MEMBER) as client:
        by_basic = await client.post("/projects", json={"name": "Basic"})
        made = await client.post("/api-keys", json={"name": "ci"}, headers={"x-request-id": "k1"})
    assert by_basic.status_code == 201
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["key"].startswith("amw_") and key["name"] == "ci"

    async with client_for(app) as client:
        bearer = {"authorization": f"Bearer {key['key']}"}
        by_key = await client.post("/projects", json={"name": "Keyed"}, headers=bearer)
        wrong = await client.post(
            "/projects", json={"name": "x"}, auth=("member@example.com", "no")
        )
        bad_key = await client.post(
            "/projects", json={"name": "x"}, headers={"authorization": "Bearer amw_nope"}
        )
    assert by_key.status_code == 201
    assert (wrong.status_code, bad_key.status_code) == (401, 401)

    member_id = await user_id(app, "member@example.com")
    created = await events(app, action="project.created")
    assert [(e.details or {}).get("name") for e in created] == ["Basic", "Keyed"]
    assert {e.user_id for e in created} == {member_id}

    [event] = await events(app, action="api_key.created")
    assert (event.resource, event.resource_id, event.details) == ("api_key", key["id"], None)
    assert (event.user_id, event.request_id) == (member_id, "k1")
    assert key["key"].encode() not in await entry_bytes(app)


# Roles


async def test_only_admins_change_roles(app: Starlette) -> None:
    member_id = await user_id(app, "member@example.com")
    admin_id = await user_id(app, "admin@example.com")
    async with client_for(app, auth=MEMBER) as member:
        denied = await member.put(
            "/users/admin@example.com/role", json={"role": "member"}, headers={"x-request-id": "d1"}
        )
    async with client_for(app, auth=ADMIN) as admin:
        promoted = await admin.put("/users/member@example.com/role", json={"role": "admin"})
        same = await admin.put("/users/member@example.com/role", json={"role": "admin"})
        unknown = await admin.put("/users/ghost@example.com/role", json={"role": "admin"})
        bad_role = await admin.put("/users/member@example.com/role", json={"role": "owner"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    assert promoted.status_code == 200
    assert promoted.json() == {"id": member_id, "email": "member@example.com", "role": "admin"}
    assert same.status_code == 200
    assert (unknown.status_code, bad_role.status_code) == (404, 422)

    recorded = await events(app, action="permission.changed")
    assert [(e.outcome, e.user_id) for e in recorded] == [
        ("denied", member_id),
        ("success", admin_id),  # the same role again recorded nothing
        ("failure", admin_id),
        ("failure", admin_id),
    ]
    first, change = recorded[0], recorded[1]
    assert first.request_id == "d1"
    assert first.details == {"email": "admin@example.com", "error": "ApiError", "status_code": 403}
    assert change.resource_id == member_id
    assert change.details == {
        "email": "member@example.com",
        "old_role": "member",
        "new_role": "admin",
        "changes": {"role": {"from": "member", "to": "admin"}},
    }


# Validation


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/projects", b"{", 400),
        ("POST", "/projects", b"\xff\xfe", 400),
        ("POST", "/projects", b"[1, 2]", 422),
        ("POST", "/projects", b"{}", 422),
        ("POST", "/projects", b'{"name": ""}', 422),
        ("POST", "/projects", b'{"name": 42}', 422),
        ("POST", "/projects", b'{"name": "x", "description": null}', 422),
        ("POST", "/projects", b'{"name": "x", "nmae": "typo"}', 422),
        ("POST", "/projects", b'{"name": "' + b"x" * 201 + b'"}', 422),
        ("PATCH", "/projects/{id}", b"not json", 400),
        ("PATCH", "/projects/{id}", b'{"name": ["a"]}', 422),
        ("PATCH", "/projects/{id}", b'{"name": " "}', 422),
        ("PATCH", "/projects/{id}", b'"name"', 422),
        ("PUT", "/users/member@example.com/role", b"{", 400),
        ("PUT", "/users/member@example.com/role", b'{"role": 1}', 422),
        ("POST", "/api-keys", b"{", 400),
        ("POST", "/api-keys", b'{"name": false}', 422),
        ("POST", "/auth/sign-in", b"{", 400),
        ("POST", "/auth/sign-in", b'{"email": "admin@example.com"}', 422),
        ("POST", "/auth/sign-in", b'{"email": 1, "password": "admin"}', 422),
    ],
)
async def test_validation_errors_are_json_never_500(
    app: Starlette, method: str, path: str, body: bytes, status: int
) -> None:
    async with client_for(app, auth=ADMIN) as client:
        project = await client.post("/projects", json={"name": "Target"})
        response = await client.request(
            method,
            path.format(id=project.json()["id"]),
            content=body,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] in {"malformed_json", "invalid_request"}


# Text that is not Unicode: JSON can carry lone surrogates (escaped, or as raw bytes, which
# json.loads accepts); no database column or audit log can hold them.

NOT_UNICODE = [
    ("POST", "/projects", b'{"name": "\\ud800"}', "name"),
    ("POST", "/projects", b'{"name": "ok", "description": "x\\udfffy"}', "description"),
    ("POST", "/projects", b'{"name": "\xed\xa0\x80"}', "name"),  # a surrogate's UTF-8 bytes
    ("PATCH", "/projects/{id}", b'{"name": "\\udc00"}', "name"),
    ("PATCH", "/projects/{id}", b'{"description": "half \\ud83d an emoji"}', "description"),
    ("POST", "/api-keys", b'{"name": "\\ud800"}', "name"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), NOT_UNICODE)
async def test_text_with_a_lone_surrogate_is_422_json_and_nothing_changes(
    app: Starlette, method: str, path: str, body: bytes, field: str
) -> None:
    async with client_for(app, auth=ADMIN) as client:
        project = (await client.post("/projects", json={"name": "Target"})).json()
        response = await client.request(
            method,
            path.format(id=project["id"]),
            content=body,
            headers={"content-type": "application/json"},
        )
        after = await client.get(f"/projects/{project['id']}")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert f"'{field}'" in error["message"] and "Unicode" in error["message"]
    assert after.json() == project
    # An @audited handler's refusal is recorded as any failed call (the fixture verifies).
    refusal = {"error": "ApiError", "status_code": 422}
    expected = {
        "/projects": [("project.created", refusal)],
        "/projects/{id}": [("project.updated", refusal)],
        "/api-keys": [],
    }[path]
    assert [(e.action, e.details) for e in await events(app, outcome="failure")] == expected
    assert len(await events(app, action="project.created")) == 1 + (path == "/projects")
    assert await events(app, action="api_key.created") == []


@pytest.mark.parametrize(
    ("body", "field", "recorded_email"),
    [
        (
            b'{"email": "admin\\ud800@example.com", "password": "admin"}',
            "email",
            "admin\ufffd@example.com",
        ),
        (
            b'{"email": "Admin@Example.com", "password": "x\\udfff"}',
            "password",
            "admin@example.com",
        ),
        (b'{"email": " member@example.com "}', "password", "member@example.com"),
    ],
)
async def test_an_invalid_sign_in_is_422_and_still_recorded_as_failed(
    app: Starlette, body: bytes, field: str, recorded_email: str
) -> None:
    async with client_for(app) as client:
        response = await client.post(
            "/auth/sign-in",
            content=body,
            headers={"content-type": "application/json", "x-request-id": "req-bad-sign-in"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert f"'{field}'" in response.json()["error"]["message"]
    assert "set-cookie" not in response.headers
    [failed] = await events(app, action="user.sign_in_failed")
    assert (failed.outcome, failed.details, failed.user_id) == (
        "failure",
        {"email": recorded_email},
        None,
    )
    assert (failed.ip_address, failed.request_id) == (CLIENT_IP, "req-bad-sign-in")
    assert await events(app, action="user.signed_in") == []


async def test_a_form_cannot_carry_a_lone_surrogate_its_bytes_become_u_fffd(
    app: Starlette,
) -> None:
    async with client_for(app) as client:
        response = await client.post(
            "/auth/sign-in",
            content=b"email=admin%ED%A0%80%40example.com&password=admin",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 401
    assert "Wrong email or password" in response.text
    [failed] = await events(app, action="user.sign_in_failed")
    assert failed.details == {"email": "admin\ufffd\ufffd\ufffd@example.com"}


async def test_unknown_routes_and_methods_answer_json(app: Starlette) -> None:
    async with client_for(app, auth=MEMBER) as client:
        missing = await client.get("/nowhere")
        wrong_method = await client.put("/projects")
        not_an_id = await client.get("/projects/abc")
    assert (missing.status_code, wrong_method.status_code, not_an_id.status_code) == (404, 405, 404)
    assert missing.json()["error"]["code"] == "not_found"


# Admin app and home page


async def test_the_audit_dashboard_is_for_admins_only(app: Starlette) -> None:
    async with client_for(app) as anonymous:
        assert (await anonymous.get("/admin/audit/")).status_code == 401
        assert (await anonymous.get("/admin/audit/events")).status_code == 401
    async with client_for(app, auth=MEMBER) as member:
        assert (await member.get("/admin/audit/")).status_code == 403
        assert (await member.get("/admin/audit/events")).status_code == 403
    async with client_for(app) as admin:
        await sign_in(admin, *ADMIN)  # a browser: the session cookie
        redirect = await admin.get("/admin/audit")
        page = await admin.get("/admin/audit/")
        listed = await admin.get("/admin/audit/events", params={"action": "user.*"})
        verified = await admin.get("/admin/audit/verify")
    assert redirect.status_code in (301, 307, 308)
    assert redirect.headers["location"].endswith("/admin/audit/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert listed.status_code == 200
    assert [e["action"] for e in listed.json()["events"]] == ["user.signed_in"]
    assert verified.json()["ok"] is True


async def test_home_page_has_a_sign_in_form_and_the_dashboard_link(app: Starlette) -> None:
    async with client_for(app) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert '<form method="post" action="/auth/sign-in">' in page.text
    assert 'href="/admin/audit/"' in page.text
    assert "http://" not in page.text.replace("http://example", "")  # no external assets
    assert await events(app) == []


# The real server


def test_python_m_example_app_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_example_app(tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            signed_in = client.post(
                "/auth/sign-in",
                json={"email": "admin@example.com", "password": "admin"},
                headers={"x-request-id": "real-1"},
            )
            assert signed_in.status_code == 200, signed_in.text
            created = client.post("/projects", json={"name": "Real"})  # the session cookie
            assert created.status_code == 201, created.text
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=120) == 0, server.output()

    async def check_store() -> None:
        async with SQLiteStore(data_dir / "audit.db") as store:
            page = await store.query(EventFilter(), limit=10)
            actions = [(e.action, e.user_email) for e in reversed(page.events)]
            assert actions == [
                ("user.signed_in", "admin@example.com"),
                ("project.created", "admin@example.com"),
            ]
            assert page.events[-1].request_id == "real-1"
            assert page.events[-1].ip_address == "127.0.0.1"
            report = await store.verify()
            assert report.ok, report.summary()

    asyncio.run(check_store())
    assert (data_dir / "app.db").exists()
    assert "Application shutdown complete" in server.output()


# Signed checkpoints (optional)


async def test_checkpoints_when_given_a_key(tmp_path: Path) -> None:
    from auditmw import SigningKey, read_sink
    from auditmw._transparency.notes import open_checkpoint, save_signing_key

    key = SigningKey.generate("example.test")
    save_signing_key(key, tmp_path / "audit.key")
    settings = Settings(data_dir=tmp_path / "data", checkpoint_key=tmp_path / "audit.key")
    assert settings.to_env()["EXAMPLE_APP_CHECKPOINT_KEY"] == str(tmp_path / "audit.key")
    application = create_app(settings)
    async with application.router.lifespan_context(application), client_for(application) as c:
        await sign_in(c, *ADMIN)
    # The record of the key got a checkpoint at once, and closing the store issued one of
    # the whole log: stored, and written to data/checkpoints.
    async with SQLiteStore(settings.audit_store_target) as store:
        stored = await store.checkpoints()
        assert stored and stored[-1].size == await store.last_seq("default")
    assert sorted(note for _, note in read_sink(settings.checkpoint_dir)) == sorted(
        c.note for c in stored
    )
    for checkpoint in stored:
        assert open_checkpoint(checkpoint.note, [key.verifier]).checkpoint.root == checkpoint.root
