"""A real FastAPI app: dependency injection, sync and async handlers and dependencies."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import auditmw
from auditmw import (
    AuditMiddleware,
    FailurePolicy,
    SQLiteStore,
    audit,
    audited,
    diff,
    pending_event,
    set_actor,
)

from ._asgi import client_for, stored
from ._projects import ProjectPatch

PEER = "203.0.113.10"  # the client address of the test requests


class Project(BaseModel):
    name: str
    description: str = ""


class HeaderBackend(AuthenticationBackend):
    """Session-style auth as middleware: sets scope["user"]."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-session-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def token_user(authorization: Annotated[str | None, Header()] = None) -> str | None:
    """Token auth as a *sync* dependency: FastAPI runs it in a worker thread."""
    if authorization is None:
        return None
    user_id = authorization.removeprefix("Bearer ")
    time.sleep(random.random() / 1000)  # a blocking lookup, interleaving threads
    set_actor(user_id=user_id, user_email=f"{user_id}@example.com")
    return user_id


async def async_token_user(authorization: Annotated[str | None, Header()] = None) -> str | None:
    if authorization is None:
        return None
    await asyncio.sleep(random.random() / 1000)
    user_id = authorization.removeprefix("Bearer ")
    set_actor(user_id=user_id)
    return user_id


def make_app(store: SQLiteStore, **options: Any) -> FastAPI:
    app = FastAPI()
    projects: dict[int, Project] = {}

    @app.put("/projects/{project_id}")
    @audited("project.updated", "project", resource_id="project_id")
    async def update_project(
        project_id: int,
        patch: ProjectPatch,
        user: Annotated[str | None, Depends(token_user)],
    ) -> Project:
        before = projects.get(project_id, Project(name="Apollo", description="moon"))
        after = before.model_copy(update=patch.model_dump(exclude_none=True))
        projects[project_id] = after
        pending_event().changes = diff(before, after)
        return after

    @app.post("/projects", status_code=201)
    @audited("project.created", "project")
    def create_project(
        project: Project, user: Annotated[str | None, Depends(async_token_user)]
    ) -> dict[str, Any]:
        project_id = len(projects) + 100
        projects[project_id] = project
        pending_event().resource_id = project_id
        pending_event().details["name"] = project.name
        return {"id": project_id}

    @app.delete("/projects/{project_id}")
    @audited("project.deleted", "project", resource_id="project_id")
    def delete_project(project_id: int) -> dict[str, bool]:
        if project_id not in projects:
            raise HTTPException(status_code=404, detail="no such project")
        del projects[project_id]
        return {"deleted": True}

    @app.get("/me")
    async def me() -> dict[str, str | None]:
        event = await audit("profile.viewed", "user")
        return {"event_id": event.id if event else None}

    app.add_middleware(AuthenticationMiddleware, backend=HeaderBackend())
    app.add_middleware(AuditMiddleware, store=store, **options)  # added last: outermost
    return app


async def test_di_keeps_working_and_the_event_is_complete(store: SQLiteStore) -> None:
    async with client_for(make_app(store), peer=PEER) as client:
        response = await client.put(
            "/projects/7",
            json={"description": "the moon"},
            headers={"authorization": "Bearer ada", "user-agent": "cli/2", "x-request-id": "r-7"},
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "Apollo", "description": "the moon"}
    [event] = await stored(store)
    assert (event.action, event.resource, event.resource_id, event.outcome) == (
        "project.updated",
        "project",
        "7",
        "success",
    )
    assert (event.user_id, event.user_email) == ("ada", "ada@example.com")
    assert (event.ip_address, event.user_agent, event.request_id) == (
        "203.0.113.10",
        "cli/2",
        "r-7",
    )
    assert event.details == {"changes": {"description": {"from": "moon", "to": "the moon"}}}


async def test_the_openapi_schema_still_sees_the_real_signature(store: SQLiteStore) -> None:
    async with client_for(make_app(store), peer=PEER) as client:
        schema = (await client.get("/openapi.json")).json()
    put = schema["paths"]["/projects/{project_id}"]["put"]
    assert [p["name"] for p in put["parameters"]] == ["project_id", "authorization"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ProjectPatch"
    )


async def test_sync_handler_with_async_dependency_and_a_created_id(store: SQLiteStore) -> None:
    async with client_for(make_app(store), peer=PEER) as client:
        response = await client.post(
            "/projects", json={"name": "Gemini"}, headers={"authorization": "Bearer bob"}
        )
    assert response.status_code == 201
    [event] = await stored(store)
    assert (event.action, event.resource_id, event.user_id, event.details) == (
        "project.created",
        str(response.json()["id"]),
        "bob",
        {"name": "Gemini"},
    )


async def test_user_from_auth_middleware_and_http_errors(store: SQLiteStore) -> None:
    async with client_for(make_app(store), peer=PEER) as client:
        missing = await client.delete("/projects/404", headers={"x-session-user": "eve"})
        viewed = await client.get("/me", headers={"x-session-user": "eve"})
    assert missing.status_code == 404 and viewed.status_code == 200
    events = await stored(store)
    assert [(e.action, e.resource_id, e.outcome, e.user_id, e.details) for e in events] == [
        (
            "project.deleted",
            "404",
            "failure",
            "eve",
            {"error": "HTTPException", "status_code": 404},
        ),
        ("profile.viewed", None, "success", "eve", None),
    ]


async def test_200_concurrent_requests_with_actors_set_in_thread_dependencies(
    store: SQLiteStore,
) -> None:
    app = make_app(store, trusted_proxies=["10.0.0.0/8"])
    count = 200

    def ip(n: int) -> str:
        return f"192.0.2.{n % 200 + 1}" if n < 200 else "invalid"

    async def one(n: int) -> httpx.Response:
        async with client_for(app, peer="10.1.2.3") as client:
            return await client.put(
                f"/projects/{n}",
                json={"name": f"name-{n}"},
                headers={"authorization": f"Bearer u{n}", "x-forwarded-for": ip(n)},
            )

    responses = await asyncio.gather(*(one(n) for n in range(count)))
    assert [r.status_code for r in responses] == [200] * count
    events = await stored(store)
    assert len(events) == count
    for event in events:
        n = int(event.resource_id or "-1")
        assert (event.user_id, event.user_email, event.ip_address) == (
            f"u{n}",
            f"u{n}@example.com",
            ip(n),
        )
        assert event.request_id == responses[n].headers["x-request-id"]


@pytest.mark.parametrize("path", ["/projects/1", "/me"])
async def test_fail_closed_503(store: SQLiteStore, path: str) -> None:
    app = make_app(store)
    await store.close()
    async with client_for(app, peer=PEER) as client:
        if path == "/me":
            response = await client.get(path)
        else:
            response = await client.put(path, json={"name": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"


async def test_fail_closed_503_for_a_sync_handler(store: SQLiteStore) -> None:
    app = make_app(store)
    await store.close()
    async with client_for(app, peer=PEER) as client:
        response = await client.post("/projects", json={"name": "x"})
    assert response.status_code == 503  # never the 201 the handler returned


async def test_fail_open_counts(store: SQLiteStore) -> None:
    policy = FailurePolicy(fail_open=True)
    app = make_app(store, failure_policy=policy)
    await store.close()
    async with client_for(app, peer=PEER) as client:
        put = await client.put("/projects/1", json={"name": "x"})
        post = await client.post("/projects", json={"name": "y"})
        me = await client.get("/me")
    assert (put.status_code, post.status_code, me.status_code) == (200, 201, 200)
    assert me.json() == {"event_id": None}
    assert policy.failures == 3
    assert isinstance(auditmw.StoreError("x"), auditmw.AuditError)
