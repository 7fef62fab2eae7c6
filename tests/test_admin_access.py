"""Nobody without permission sees anything: every route, every method, every path.

The admin app asks ``authorize(request)`` before routing, so an anonymous user gets 401
and a non-admin 403 (JSON, no data) even for the dashboard, its static files, exports,
``/verify``, ``/openapi.json`` and paths that do not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

import auditmw
from auditmw import Actor, AdminApp, EventFilter, SQLiteStore
from auditmw._admin.openapi import openapi_document
from auditmw._admin.pages import DASHBOARD_DIR

from ._asgi import client_for
from .test_admin import ADMIN, VIEWER, authorize
from .test_query import SAMPLE, write_events


@pytest.fixture
async def seeded(store_path: Path) -> AsyncIterator[tuple[SQLiteStore, list[Any]]]:
    written = await write_events(store_path, SAMPLE)
    async with SQLiteStore(store_path) as store:
        yield store, written


def every_path(written: list[Any]) -> list[str]:
    """Each route of the OpenAPI document (with real values), static files, and more."""
    paths = []
    for template in openapi_document()["paths"]:
        if "{event_id}" in template:
            paths.append(template.replace("{event_id}", written[0].id))
        elif template == "/static/{path}":
            paths += [f"/static/{file.name}" for file in DASHBOARD_DIR.glob("*")]
            paths.append("/static/does-not-exist.js")
        else:
            paths.append(template)
    return [
        *paths,
        "/events?limit=100&search=example",
        "/export.csv?action=project.*",
        "/export.jsonl?from=2024-05-01",
        "/does/not/exist",
        "",
        "/events/",
        "/static",
    ]


def leaks(text: str, written: list[Any]) -> list[str]:
    """Values of the log that appear in ``text``."""
    markers = {"Ann@Example.com", "bob@example.com", "project.created", "P-1", "Timestamp,"}
    markers |= {event.hash for event in written} | {event.id for event in written}
    return [marker for marker in markers if marker in text]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 401, "unauthenticated"), (VIEWER, 403, "forbidden")],
    ids=["anonymous", "not-an-admin"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
async def test_nobody_without_permission_gets_anything(
    seeded: tuple[SQLiteStore, list[Any]],
    headers: dict[str, str],
    status: int,
    code: str,
    method: str,
) -> None:
    store, written = seeded
    async with client_for(AdminApp(store, authorize=authorize)) as client:
        for path in every_path(written):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == status, (method, path)
            assert leaks(response.text, written) == [], (method, path)
            if method != "HEAD":
                assert response.json() == {
                    "error": {"code": code, "message": response.json()["error"]["message"]}
                }
            assert response.headers["content-type"] == "application/json"
            assert "content-disposition" not in response.headers
    # ...and no export happened, so none was recorded.
    assert (await store.query(EventFilter(action="export.requested"))).events == []


async def test_the_admin_gets_everything(seeded: tuple[SQLiteStore, list[Any]]) -> None:
    store, written = seeded
    async with client_for(AdminApp(store, authorize=authorize)) as client:
        for path in every_path(written):
            response = await client.get(path, headers=ADMIN, follow_redirects=True)
            assert response.status_code in (200, 404), path
            if "does-not-exist" in path or "does/not" in path or path == "/static":
                assert response.status_code == 404, path


async def test_authorize_may_be_async_and_sees_the_user(
    seeded: tuple[SQLiteStore, list[Any]],
) -> None:
    store, _ = seeded
    seen: list[Any] = []

    async def check(request: Request) -> Actor | None:
        seen.append(request.scope.get("user"))
        return Actor(user_email="a@example.com") if request.scope.get("user") else None

    app = AdminApp(store, authorize=check)

    async def with_user(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = "someone"  # as an authentication middleware would
        await app(scope, receive, send)

    async with client_for(app) as client:
        assert (await client.get("/events")).status_code == 401
    async with client_for(with_user) as client:
        assert (await client.get("/events")).status_code == 200
    assert seen == [None, "someone"]


async def test_authorize_may_raise_http_exception(seeded: tuple[SQLiteStore, list[Any]]) -> None:
    store, _ = seeded

    def check(request: Request) -> Actor:
        raise HTTPException(401, "token expired", headers={"WWW-Authenticate": "Bearer"})

    async with client_for(AdminApp(store, authorize=check)) as client:
        response = await client.get("/events")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": {"code": "unauthenticated", "message": "token expired"}}


@pytest.mark.parametrize("result", [True, "admin", 1, {"user_id": "x"}, object()])
async def test_anything_but_the_documented_answers_is_an_error(
    seeded: tuple[SQLiteStore, list[Any]], result: object
) -> None:
    # A mistake in authorize() must never grant access: it fails loudly instead.
    async with client_for(AdminApp(seeded[0], authorize=lambda request: result)) as client:  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="Actor"):
            await client.get("/events")


@pytest.mark.parametrize(
    ("admin", "error"),
    [
        (Actor(), ValueError),
        (Actor(user_id="", user_email=""), ValueError),
        (Actor(user_id=5), TypeError),  # type: ignore[arg-type]
    ],
)
async def test_the_admin_needs_an_identity(
    seeded: tuple[SQLiteStore, list[Any]], admin: Actor, error: type[Exception]
) -> None:
    # An Actor that names nobody is a mistake in authorize(): it never grants access.
    async with client_for(AdminApp(seeded[0], authorize=lambda request: admin)) as client:
        with pytest.raises(error):
            await client.get("/events")


async def test_an_admin_named_by_email_alone_is_enough(
    seeded: tuple[SQLiteStore, list[Any]],
) -> None:
    admin = Actor(user_email="a@b")
    async with client_for(AdminApp(seeded[0], authorize=lambda request: admin)) as client:
        assert (await client.get("/events")).status_code == 200


def test_admin_user_is_a_deprecated_alias_of_actor() -> None:
    with pytest.warns(DeprecationWarning, match="Actor"):
        alias = auditmw.AdminUser
    assert alias is Actor


async def test_websockets_are_closed(seeded: tuple[SQLiteStore, list[Any]]) -> None:
    app = AdminApp(seeded[0], authorize=authorize)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/events", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
