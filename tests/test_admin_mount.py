"""The admin app mounted in Starlette, FastAPI and Litestar, behind each one's own
authentication middleware, which puts the user in ``scope["user"]``.

The same checks run against each host: the mount point redirects to its trailing-slash
form (the dashboard's relative URLs need it), the page and its static files load, the API
answers, exports record the admin, and anonymous or non-admin users get 401/403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.requests import HTTPConnection, Request

from auditmw import Actor, AdminApp, EventFilter, SQLiteStore

from ._admin_mount import MOUNT
from ._asgi import client_for
from .test_query import SAMPLE, write_events

ADMIN = {"authorization": "User alice"}
VIEWER = {"authorization": "User bob"}
ADMINS = {"alice"}


def user_named(header: str | None) -> str | None:
    if header and header.startswith("User "):
        return header.removeprefix("User ")
    return None


def authorize(request: Request) -> Actor | bool | None:
    """Read the user the host's authentication put in the scope (never request.user:
    it raises when no authentication middleware is installed)."""
    user = request.scope.get("user")
    name = getattr(user, "username", None) if getattr(user, "is_authenticated", False) else user
    if not isinstance(name, str):
        return None
    return Actor(user_id=name, user_email=f"{name}@example.com") if name in ADMINS else False


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = user_named(conn.headers.get("authorization"))
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def starlette_host(admin: AdminApp) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host home")

    return Starlette(
        routes=[Route("/", home), Mount(MOUNT, app=admin)],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())],
    )


def fastapi_host(admin: AdminApp) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse
    from starlette.middleware.authentication import AuthenticationMiddleware

    app = FastAPI()

    @app.get("/", response_class=PlainTextResponse)
    async def home() -> str:
        return "host home"

    app.mount(MOUNT, admin)
    app.add_middleware(AuthenticationMiddleware, backend=HeaderAuth())
    return app


def litestar_host(admin: AdminApp) -> Any:
    from litestar import Litestar, asgi, get
    from litestar.middleware import ASGIMiddleware
    from litestar.types import ASGIApp, Receive, Scope, Send

    class HeaderUser(ASGIMiddleware):
        async def handle(
            self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp
        ) -> None:
            headers = dict(scope["headers"])
            scope["user"] = user_named(headers.get(b"authorization", b"").decode("latin-1"))
            await next_app(scope, receive, send)

    @get("/", media_type="text/plain")
    async def home() -> str:
        return "host home"

    @asgi(MOUNT, is_mount=True, copy_scope=True)
    async def audit_admin(scope: Scope, receive: Receive, send: Send) -> None:
        await admin(scope, receive, send)  # type: ignore[arg-type]

    return Litestar([home, audit_admin], middleware=[HeaderUser()])


HOSTS: dict[str, Callable[[AdminApp], Any]] = {
    "starlette": starlette_host,
    "fastapi": fastapi_host,
    "litestar": litestar_host,
}


@pytest.fixture(params=list(HOSTS))
async def host(
    request: pytest.FixtureRequest, store_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteStore]]:
    await write_events(store_path, SAMPLE)
    async with SQLiteStore(store_path) as store:  # the host's lifespan would open it
        app = HOSTS[request.param](AdminApp(store, authorize=authorize))
        async with client_for(app) as client:
            yield client, store


async def test_the_dashboard_loads_under_the_mount_point(
    host: tuple[httpx.AsyncClient, SQLiteStore],
) -> None:
    client, _ = host
    response = await client.get(MOUNT, headers=ADMIN)
    assert response.status_code in (301, 302, 307, 308)
    page_url = urljoin(f"http://test{MOUNT}", response.headers["location"])
    assert page_url == f"http://test{MOUNT}/"
    page = await client.get(page_url, headers=ADMIN)
    assert page.status_code == 200 and "<html" in page.text.lower()
    for asset in ("static/dashboard.css", "static/dashboard.js", "events", "facets", "verify"):
        response = await client.get(urljoin(page_url, asset), headers=ADMIN)  # as the page does
        assert response.status_code == 200, asset
    assert (await client.get("/", headers=ADMIN)).text == "host home"


async def test_the_api_answers_under_the_mount_point(
    host: tuple[httpx.AsyncClient, SQLiteStore],
) -> None:
    client, _ = host
    body = (await client.get(f"{MOUNT}/events?limit=1&action=project.*", headers=ADMIN)).json()
    assert len(body["events"]) == 1 and body["next_cursor"]
    more = await client.get(
        f"{MOUNT}/events",
        params={"limit": 1, "action": "project.*", "cursor": body["next_cursor"]},
        headers=ADMIN,
    )
    assert more.status_code == 200 and len(more.json()["events"]) == 1
    assert more.json()["next_cursor"] is None
    event_id = body["events"][0]["id"]
    assert (await client.get(f"{MOUNT}/events/{event_id}", headers=ADMIN)).json()["id"] == event_id
    assert (await client.get(f"{MOUNT}/events?limit=abc", headers=ADMIN)).status_code == 400
    assert (await client.get(f"{MOUNT}/nope", headers=ADMIN)).status_code == 404


async def test_exports_record_the_admin_from_the_host(
    host: tuple[httpx.AsyncClient, SQLiteStore],
) -> None:
    client, store = host
    response = await client.get(f"{MOUNT}/export.csv?outcome=denied", headers=ADMIN)
    assert response.status_code == 200 and response.text.startswith("Timestamp,")
    [record] = (await store.query(EventFilter(action="export.requested"))).events
    assert (record.user_id, record.user_email) == ("alice", "alice@example.com")
    assert record.details == {"format": "csv", "filters": {"outcome": "denied"}}


@pytest.mark.parametrize(("headers", "status"), [({}, 401), (VIEWER, 403)])
async def test_others_get_nothing_under_the_mount_point(
    host: tuple[httpx.AsyncClient, SQLiteStore], headers: dict[str, str], status: int
) -> None:
    client, store = host
    for path in (
        "",
        "/",
        "/events",
        "/static/dashboard.js",
        "/export.csv",
        "/export.jsonl",
        "/verify",
        "/openapi.json",
        "/facets",
        "/nope",
    ):
        # (The host itself may first redirect the mount point to its slash form.)
        response = await client.get(MOUNT + path, headers=headers, follow_redirects=True)
        assert response.status_code == status, path
        assert "P-1" not in response.text and "Timestamp" not in response.text
    assert (await store.query(EventFilter(action="export.requested"))).events == []
