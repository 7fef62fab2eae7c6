"""A real Litestar app: ``AuditPlugin``, Litestar's own authentication middleware, DI."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

import auditmw
from auditmw import FailurePolicy, SQLiteStore, audit, audited, diff, pending_event

from ._asgi import client_for, stored
from ._projects import ProjectPatch

PEER = "203.0.113.20"  # the client address of the test requests


@dataclass
class User:
    id: str
    email: str


class TokenAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization")
        if not header:
            raise NotAuthorizedException()
        user_id = header.removeprefix("Bearer ")
        return AuthenticationResult(user=User(user_id, f"{user_id}@example.com"), auth=header)


PROJECTS: dict[int, dict[str, Any]] = {}


@put("/projects/{project_id:int}")
@audited("project.updated", "project", resource_id="project_id")
async def update_project(project_id: FromPath[int], data: JSONBody[ProjectPatch]) -> dict[str, Any]:
    before = dict(PROJECTS.get(project_id, {"name": "Apollo", "description": "moon"}))
    await asyncio.sleep(random.random() / 200)
    after = {**before, **data.model_dump(exclude_none=True)}
    PROJECTS[project_id] = after
    pending_event().changes = diff(before, after)
    return after


@post("/projects", sync_to_thread=True)
@audited("project.created", "project")
def create_project(data: JSONBody[ProjectPatch]) -> dict[str, int]:
    project_id = 1000 + len(PROJECTS)
    PROJECTS[project_id] = data.model_dump()
    pending_event().resource_id = project_id
    return {"id": project_id}


@delete("/projects/{project_id:int}", sync_to_thread=False, status_code=200)
@audited("project.deleted", "project", resource_id="project_id")
def delete_project(project_id: FromPath[int], request: Request[User, Any, Any]) -> dict[str, bool]:
    if request.user.id != "admin":
        raise PermissionDeniedException("admins only")
    return {"deleted": True}


@get("/me")
async def me() -> dict[str, str | None]:
    event = await audit("profile.viewed", "user")
    return {"event_id": event.id if event else None}


@get("/stream")
async def stream() -> Stream:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(4):
            yield b"%d;" % index

    return Stream(chunks())


async def email_report() -> None:
    await audit("report.emailed", "report", "r1")


@post("/reports", status_code=202)
async def queue_report() -> Response[dict[str, bool]]:
    return Response({"queued": True}, background=BackgroundTask(email_report))


def make_app(store: SQLiteStore, **options: Any) -> tuple[Litestar, auditmw.AuditPlugin]:
    plugin = auditmw.AuditPlugin(store=store, trusted_proxies=["10.0.0.0/8"], **options)
    app = Litestar(
        route_handlers=[update_project, create_project, delete_project, me, stream, queue_report],
        middleware=[TokenAuth],
        plugins=[plugin],
    )
    return app, plugin


def auth(user: str, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {user}", **headers}


async def test_plugin_puts_the_audit_middleware_outermost(store: SQLiteStore) -> None:
    app, _ = make_app(store)
    outermost = app.middleware[0]
    assert isinstance(outermost(app=_unused_app), auditmw.AuditMiddleware)
    assert app.exception_handlers[auditmw.StoreError] is not None


async def _unused_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


async def test_a_server_rewrite_is_reported_once_per_app_not_per_route(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Litestar builds one AuditMiddleware per route; a server that took the client from
    # X-Forwarded-For (port 0, as uvicorn does) while trusted_proxies are set is one
    # misconfiguration, reported once. (No logging_config: Litestar's replaces the root
    # logger's handlers, caplog's among them.)
    plugin = auditmw.AuditPlugin(store=store, trusted_proxies=["10.0.0.0/8"])
    app = Litestar(
        route_handlers=[me, create_project],
        middleware=[TokenAuth],
        plugins=[plugin],
        logging_config=None,
    )
    transport = httpx.ASGITransport(cast(Any, app), client=("6.6.6.6", 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/me", headers=auth("u1"))).status_code == 200
        created = await client.post("/projects", json={"name": "x"}, headers=auth("u1"))
        assert created.status_code == 201
        assert (await client.get("/nowhere")).status_code == 404  # matches no route
    warnings = [r for r in caplog.records if r.name == "auditmw" and r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "the proxy rule runs twice" in warnings[0].getMessage()


async def test_identity_ip_user_agent_request_id_and_diff_land(store: SQLiteStore) -> None:
    PROJECTS.clear()
    app, _ = make_app(store)
    async with client_for(app, peer="10.9.9.9") as client:
        response = await client.put(
            "/projects/5",
            json={"name": "Artemis"},
            headers=auth(
                "ada",
                **{
                    "user-agent": "litestar-test",
                    "x-forwarded-for": "6.6.6.6, 198.51.100.20",
                    "x-request-id": "ls-1",
                },
            ),
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "ls-1"
    [event] = await stored(store)
    assert (event.action, event.resource_id, event.outcome) == ("project.updated", "5", "success")
    assert (event.user_id, event.user_email) == ("ada", "ada@example.com")
    assert (event.ip_address, event.user_agent, event.request_id) == (
        "198.51.100.20",
        "litestar-test",
        "ls-1",
    )
    assert event.details == {"changes": {"name": {"from": "Apollo", "to": "Artemis"}}}


async def test_sync_handlers_in_a_thread_and_in_the_loop(store: SQLiteStore) -> None:
    PROJECTS.clear()
    app, _ = make_app(store)
    async with client_for(app, peer=PEER) as client:
        created = await client.post("/projects", json={"name": "Gemini"}, headers=auth("bob"))
        denied = await client.delete("/projects/1000", headers=auth("bob"))
        allowed = await client.delete("/projects/1000", headers=auth("admin"))
    assert (created.status_code, denied.status_code, allowed.status_code) == (201, 403, 200)
    events = await stored(store)
    assert [(e.action, e.resource_id, e.outcome, e.user_id) for e in events] == [
        ("project.created", "1000", "success", "bob"),
        ("project.deleted", "1000", "denied", "bob"),
        ("project.deleted", "1000", "success", "admin"),
    ]
    assert events[1].details == {"error": "PermissionDeniedException", "status_code": 403}


async def test_streams_and_background_tasks_keep_working(store: SQLiteStore) -> None:
    app, _ = make_app(store, record_requests=["GET"])
    async with client_for(app, peer=PEER) as client:
        streamed = await client.get("/stream", headers=auth("carol"))
        queued = await client.post("/reports", headers=auth("carol"))
    assert streamed.text == "0;1;2;3;"
    assert queued.status_code == 202
    events = await stored(store)
    assert [(e.action, e.user_id) for e in events] == [
        ("http.request", "carol"),
        ("report.emailed", "carol"),
    ]
    assert events[1].request_id == queued.headers["x-request-id"]


UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


async def test_unrouted_requests_get_a_request_id_and_their_event(store: SQLiteStore) -> None:
    app, _ = make_app(store, record_requests=["GET"])
    async with client_for(app, peer=PEER) as client:
        missing = await client.get("/nowhere", headers={"user-agent": "scanner/1.0"})
        assert missing.status_code == 404
        assert re.fullmatch(UUID4, missing.headers["x-request-id"])
        assert missing.headers.get_list("x-request-id") == [missing.headers["x-request-id"]]
        # The client's own id is echoed when valid, replaced when not; 405s too.
        response = await client.post("/me", headers={"x-request-id": "trace-42"})
        assert response.status_code == 405
        assert response.headers["x-request-id"] == "trace-42"
        refused = await client.get("/nowhere", headers={"x-request-id": "bad id"})
        assert re.fullmatch(UUID4, refused.headers["x-request-id"])
        # A routed response keeps the middleware's id, the one its events carry.
        routed = await client.get("/me", headers={**auth("carol"), "x-request-id": "trace-43"})
        assert routed.headers.get_list("x-request-id") == ["trace-43"]
    # The unrouted GETs are recorded like routed ones, as the app's middleware would
    # (no route middleware sees them; nothing timed them: no duration). POST is not
    # in record_requests.
    events = await stored(store)
    assert [(e.action, e.request_id, e.outcome) for e in events] == [
        ("http.request", missing.headers["x-request-id"], "failure"),
        ("http.request", refused.headers["x-request-id"], "failure"),
        ("profile.viewed", "trace-43", "success"),
        ("http.request", "trace-43", "success"),
    ]
    assert events[0].details == {"method": "GET", "path": "/nowhere", "status": 404}
    assert (events[0].ip_address, events[0].user_agent) == ("203.0.113.20", "scanner/1.0")
    assert events[3].details is not None and "duration_ms" in events[3].details


async def test_unrouted_request_whose_event_is_lost_keeps_its_404(store: SQLiteStore) -> None:
    # A 404 claims nothing happened, so fail-closed does not replace it; the loss counts.
    app, plugin = make_app(store, record_requests=["GET"])
    await store.close()
    async with client_for(app, peer=PEER) as client:
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["x-request-id"]
    assert plugin.failure_policy.failures == 1


async def test_200_concurrent_requests_never_swap_user_or_ip(store: SQLiteStore) -> None:
    PROJECTS.clear()
    app, _ = make_app(store)
    count = 200

    def ip(n: int) -> str:
        return f"2001:db8::{n + 1:x}"

    async def one(n: int) -> httpx.Response:
        peer, headers = (
            (ip(n), auth(f"u{n}"))
            if n % 2
            else (
                "10.0.0.1",
                auth(f"u{n}", **{"x-forwarded-for": f"6.6.6.6, [{ip(n)}]:1234"}),
            )
        )
        async with client_for(app, peer=peer) as client:
            return await client.put(f"/projects/{n}", json={"name": f"n{n}"}, headers=headers)

    responses = await asyncio.gather(*(one(n) for n in range(count)))
    assert [r.status_code for r in responses] == [200] * count
    events = await stored(store)
    assert len(events) == count
    for event in events:
        n = int(event.resource_id or "-1")
        assert (event.user_id, event.ip_address) == (f"u{n}", ip(n))
        assert event.request_id == responses[n].headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/projects/1", {"name": "x"}),  # async handler: StoreError raised inside
        ("POST", "/projects", {"name": "x"}),  # sync handler: commit fails before the response
        ("GET", "/me", None),
    ],
)
async def test_fail_closed_503(
    store: SQLiteStore, method: str, path: str, body: dict[str, str] | None
) -> None:
    app, plugin = make_app(store)
    await store.close()
    async with client_for(app, peer=PEER) as client:
        response = await client.request(method, path, json=body, headers=auth("dan"))
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert response.headers["retry-after"] == "5"
    assert plugin.failure_policy.failures == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/projects", {"name": "x"}),  # sync handler: commit fails before the response
        ("GET", "/me", None),
    ],
)
async def test_fail_closed_refused_event_is_a_422_without_retry_after(
    store: SQLiteStore, method: str, path: str, body: dict[str, str] | None
) -> None:
    """The database refuses every event's data: asking again cannot help, so the answer
    is 422 audit_event_refused, not "try again later"."""
    with closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_all BEFORE INSERT ON auditmw_events "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    app, plugin = make_app(store)
    async with client_for(app, peer=PEER) as client:
        response = await client.request(method, path, json=body, headers=auth("dan"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "audit_event_refused"
    assert "retry-after" not in response.headers
    assert plugin.failure_policy.failures == 1


async def test_fail_open_counts_on_the_plugin(store: SQLiteStore) -> None:
    app, plugin = make_app(store, failure_policy=FailurePolicy(fail_open=True))
    await store.close()
    async with client_for(app, peer=PEER) as client:
        put_ = await client.put("/projects/1", json={"name": "x"}, headers=auth("dan"))
        post_ = await client.post("/projects", json={"name": "x"}, headers=auth("dan"))
        me_ = await client.get("/me", headers=auth("dan"))
    assert (put_.status_code, post_.status_code, me_.status_code) == (200, 201, 200)
    assert plugin.failure_policy.failures == 3


async def test_an_app_handler_for_store_errors_is_kept(store: SQLiteStore) -> None:
    def custom(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
        return Response("audit down", status_code=500)

    plugin = auditmw.AuditPlugin(store=store)
    app = Litestar(
        route_handlers=[me],
        exception_handlers={auditmw.StoreError: custom},
        plugins=[plugin],
    )
    await store.close()
    async with client_for(app, peer=PEER) as client:
        response = await client.get("/me")
    assert (response.status_code, response.text) == (500, "audit down")


# --- the public module ------------------------------------------------------------------------


def test_the_plugin_is_public_in_auditmw_litestar() -> None:
    import auditmw.litestar

    assert auditmw.litestar.AuditPlugin is auditmw.AuditPlugin
    assert auditmw.litestar.__all__ == ["AuditPlugin", "audit_unavailable"]
    assert "AuditPlugin" not in auditmw.__all__  # `import *` must work without Litestar


def test_import_auditmw_does_not_import_litestar() -> None:
    # A fresh interpreter: this one imported Litestar for the tests above.
    code = (
        "import sys, auditmw\n"
        "assert 'litestar' not in sys.modules and 'auditmw.litestar' not in sys.modules\n"
        "plugin = auditmw.AuditPlugin\n"
        "assert plugin.__module__ == 'auditmw.litestar' and 'litestar' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
