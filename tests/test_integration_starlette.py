"""A real Starlette app: auth middleware supplies the user, AuditMiddleware is outermost."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

import auditmw
from auditmw import AuditMiddleware, SQLiteStore, audit, audited, diff, pending_event

from ._asgi import client_for, stored

PROXY = "10.0.0.2"


class User(BaseUser):
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.email = f"{user_id}@example.com"

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.user_id

    @property
    def identity(self) -> str:
        return self.user_id


class BearerBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        return AuthCredentials(["authenticated"]), User(header.removeprefix("Bearer "))


PROJECTS: dict[str, dict[str, Any]] = {}


@audited("project.updated", "project", resource_id="project_id")
async def update_project(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    before = dict(PROJECTS.setdefault(project_id, {"name": "Apollo", "description": "moon"}))
    data = await request.json()
    await asyncio.sleep(random.random() / 200)  # let concurrent requests interleave
    PROJECTS[project_id] = {**before, **data}
    pending_event().changes = diff(before, PROJECTS[project_id])
    return JSONResponse(PROJECTS[project_id])


async def whoami(request: Request) -> Response:
    event = await audit("profile.viewed", "user")
    assert event is not None
    return JSONResponse({"event_id": event.id})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            await asyncio.sleep(0)
            yield b"%d," % index

    return StreamingResponse(chunks(), media_type="text/plain")


async def after_response_task() -> None:
    await audit("report.emailed", "report", "r1")


@audited("report.archived", "report", resource_id=lambda arguments: "r2")
def sync_archive() -> None:
    pass


async def with_background(request: Request) -> Response:
    async def both() -> None:
        await after_response_task()
        await asyncio.to_thread(sync_archive)  # a sync task, run in a thread

    return JSONResponse({"queued": True}, background=BackgroundTask(both))


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await audit("chat.message", "chat", details={"text": text})
        await websocket.send_text(text.upper())
    # iter_text ends on disconnect


def make_app(store: SQLiteStore, **options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/projects/{project_id}", update_project, methods=["PUT"]),
            Route("/me", whoami),
            Route("/stream", stream, methods=["GET", "POST"]),
            Route("/background", with_background, methods=["POST"]),
            WebSocketRoute("/chat", chat),
        ],
        middleware=[
            Middleware(AuditMiddleware, store=store, trusted_proxies=["10.0.0.0/8"], **options),
            Middleware(AuthenticationMiddleware, backend=BearerBackend()),
        ],
    )


async def test_identity_ip_user_agent_request_id_and_diff_land(store: SQLiteStore) -> None:
    PROJECTS.clear()
    async with client_for(make_app(store), peer=PROXY) as client:
        response = await client.put(
            "/projects/p1",
            json={"description": "the moon"},
            headers={
                "authorization": "Bearer ada",
                "user-agent": "Mozilla/5.0 (test)",
                "x-forwarded-for": "6.6.6.6, 203.0.113.50",
                "x-request-id": "req-42",
            },
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    [event] = await stored(store)
    assert event.to_dict() | {"id": None, "timestamp": None, "hash": None} == {
        "action": "project.updated",
        "resource": "project",
        "resource_id": "p1",
        "outcome": "success",
        "details": {"changes": {"description": {"from": "moon", "to": "the moon"}}},
        "user_id": "ada",
        "user_email": "ada@example.com",
        "ip_address": "203.0.113.50",
        "user_agent": "Mozilla/5.0 (test)",
        "request_id": "req-42",
        "log": "default",
        "seq": 1,
        "prev_hash": auditmw.GENESIS_HASH,
        "id": None,
        "timestamp": None,
        "hash": None,
    }
    assert (await store.verify()).ok


async def test_anonymous_requests_have_no_user(store: SQLiteStore) -> None:
    async with client_for(make_app(store), peer="203.0.113.9") as client:
        response = await client.get("/me")
    event = await store.get(response.json()["event_id"])
    assert event is not None
    assert (event.user_id, event.user_email, event.ip_address) == (None, None, "203.0.113.9")
    assert isinstance(UnauthenticatedUser(), BaseUser)  # what Starlette puts in scope


async def test_200_concurrent_requests_never_swap_user_or_ip(store: SQLiteStore) -> None:
    PROJECTS.clear()
    app = make_app(store)
    count = 200

    def expected_ip(n: int) -> str:
        return f"198.51.{n // 200}.{n % 200 + 1}"

    async def one(n: int) -> httpx.Response:
        headers = {"authorization": f"Bearer user-{n}"}
        if n % 2:  # half connect directly...
            peer = expected_ip(n)
        else:  # ...half through the trusted proxy, with a forged entry in front
            peer = PROXY
            headers["x-forwarded-for"] = f"6.6.6.{n % 250}, {expected_ip(n)}"
        async with client_for(app, peer=peer) as client:
            return await client.put(f"/projects/{n}", json={"name": f"name-{n}"}, headers=headers)

    responses = await asyncio.gather(*(one(n) for n in range(count)))
    assert all(response.status_code == 200 for response in responses)
    events = await stored(store)
    assert len(events) == count
    request_ids = {f"{n}": response.headers["x-request-id"] for n, response in enumerate(responses)}
    for event in events:
        n = int(event.resource_id or "-1")
        assert event.user_id == f"user-{n}"
        assert event.user_email == f"user-{n}@example.com"
        assert event.ip_address == expected_ip(n)
        assert event.request_id == request_ids[f"{n}"]
        assert event.details == {"changes": {"name": {"from": "Apollo", "to": f"name-{n}"}}}
    assert len(set(request_ids.values())) == count
    assert (await store.verify()).ok


@pytest.mark.parametrize("record_requests", [(), ("GET",)])
async def test_streaming_responses_are_unchanged(
    store: SQLiteStore, record_requests: tuple[str, ...]
) -> None:
    async with client_for(make_app(store, record_requests=record_requests)) as client:
        response = await client.get("/stream")
    assert response.status_code == 200
    assert response.text == "0,1,2,3,4,"
    assert await store.count() == len(record_requests)


async def test_background_tasks_run_and_keep_the_request_context(store: SQLiteStore) -> None:
    async with client_for(make_app(store), peer="203.0.113.77") as client:
        response = await client.post("/background", headers={"authorization": "Bearer bob"})
    assert response.json() == {"queued": True}
    events = await stored(store)
    assert [(e.action, e.resource_id, e.user_id, e.ip_address) for e in events] == [
        ("report.emailed", "r1", "bob", "203.0.113.77"),
        ("report.archived", "r2", "bob", "203.0.113.77"),
    ]
    assert {e.request_id for e in events} == {response.headers["x-request-id"]}


async def websocket_session(
    app: Starlette,
    path: str,
    texts: list[str],
    extensions: dict[str, Any] | None = None,
) -> list[Message]:
    """Run one WebSocket connection through ``app``: connect, send ``texts``, disconnect.
    Returns what the app sent the server."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    for text in texts:
        inbox.put_nowait({"type": "websocket.receive", "text": text})
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", b"Bearer carol"), (b"user-agent", b"ws-client")],
        "client": ("203.0.113.5", 7000),
        "server": ("test", 80),
        "subprotocols": [],
        "extensions": extensions or {},
    }
    await app(scope, inbox.get, send)
    return sent


async def test_websockets_work_and_are_audited(store: SQLiteStore) -> None:
    sent = await websocket_session(make_app(store), "/chat", ["hello", "bye"])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.send"]
    assert [m["text"] for m in sent[1:]] == ["HELLO", "BYE"]
    events = await stored(store)
    assert [(e.details, e.user_id, e.ip_address, e.user_agent) for e in events] == [
        ({"text": "hello"}, "carol", "203.0.113.5", "ws-client"),
        ({"text": "bye"}, "carol", "203.0.113.5", "ws-client"),
    ]
    assert events[0].request_id == events[1].request_id
    assert (b"x-request-id", events[0].request_id.encode()) in sent[0]["headers"]


async def joined(websocket: WebSocket) -> None:
    await audit("chat.joined", "chat")  # before the handshake is answered
    await websocket.accept()
    await websocket.send_text("welcome")


async def swallowing(websocket: WebSocket) -> None:
    await websocket.accept()
    with contextlib.suppress(auditmw.StoreError):
        await audit("chat.joined", "chat")
    await websocket.send_text("welcome")  # as if the event were recorded


async def refusing(websocket: WebSocket) -> None:
    with contextlib.suppress(auditmw.StoreError):
        await audit("chat.refused", "chat", outcome="denied")
    await websocket.send_denial_response(Response("not on this channel", status_code=403))


async def refusing_with_a_note(websocket: WebSocket) -> None:
    await websocket.send({"type": "websocket.http.response.start", "status": 403, "headers": []})
    sync_archive()  # a sync @audited call: its event is committed before the next message
    await websocket.send({"type": "websocket.http.response.body", "body": b"not on this channel"})


def websocket_app(store: SQLiteStore, **options: Any) -> Starlette:
    app = make_app(store, **options)
    app.router.routes += [
        WebSocketRoute("/joined", joined),
        WebSocketRoute("/swallowing", swallowing),
        WebSocketRoute("/refusing", refusing),
        WebSocketRoute("/refusing-with-a-note", refusing_with_a_note),
    ]
    return app


async def test_fail_closed_websocket_is_closed_1013_when_its_event_is_lost(
    store: SQLiteStore,
) -> None:
    app = websocket_app(store)
    await store.close()
    # The error escapes the handler: the connection ends with "try again later", and
    # the middleware, not the server, deals with the StoreError (this call returns).
    sent = await websocket_session(app, "/chat", ["hello", "bye"])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert (sent[1]["code"], sent[1]["reason"]) == (1013, "audit_unavailable")
    # The handler swallowed the error: what it sends next is not let through.
    sent = await websocket_session(app, "/swallowing", [])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1013


async def test_fail_closed_websocket_whose_event_is_refused_is_closed_1008(
    store: SQLiteStore,
) -> None:
    """The database refuses the event's data: not "try again later" (1013) but a policy
    close (1008), or a 422 handshake answer, with reason audit_event_refused."""
    with closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_chat BEFORE INSERT ON auditmw_events "
            "WHEN new.resource = 'chat' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    app = websocket_app(store)
    sent = await websocket_session(app, "/swallowing", [])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert (sent[1]["code"], sent[1]["reason"]) == (1008, "audit_event_refused")
    extensions = {"websocket.http.response": {}}
    sent = await websocket_session(app, "/joined", [], extensions)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 422
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "audit_event_refused"
    assert all(name != b"retry-after" for name, _ in sent[0]["headers"])


@pytest.mark.parametrize("can_respond", [True, False])
async def test_fail_closed_websocket_handshake_is_refused(
    store: SQLiteStore, can_respond: bool
) -> None:
    app = websocket_app(store)
    await store.close()
    extensions = {"websocket.http.response": {}} if can_respond else {}
    sent = await websocket_session(app, "/joined", [], extensions)
    if can_respond:  # the server can answer the handshake with our own 503
        assert [m["type"] for m in sent] == [
            "websocket.http.response.start",
            "websocket.http.response.body",
        ]
        assert sent[0]["status"] == 503
        assert orjson.loads(sent[1]["body"])["error"]["code"] == "audit_unavailable"
        assert any(name == b"x-request-id" for name, _ in sent[0]["headers"])
    else:  # a close before the accept: the server refuses the handshake
        assert [(m["type"], m["code"]) for m in sent] == [("websocket.close", 1013)]


@pytest.mark.parametrize("path", ["/refusing", "/refusing-with-a-note"])
async def test_fail_closed_lets_the_apps_own_refusal_out_whole(
    store: SQLiteStore, path: str
) -> None:
    # A refusal claims nothing happened, as an HTTP error response (which fail-closed
    # lets through): the client gets the app's 403 and its body, even when an event of
    # the connection was lost before or in the middle of it.
    app = websocket_app(store)
    await store.close()
    sent = await websocket_session(app, path, [], {"websocket.http.response": {}})
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 403
    assert any(name == b"x-request-id" for name, _ in sent[0]["headers"])
    assert sent[1]["body"] == b"not on this channel"


async def test_fail_open_websocket_goes_on_and_counts_the_loss(store: SQLiteStore) -> None:
    policy = auditmw.FailurePolicy(fail_open=True)
    app = websocket_app(store, failure_policy=policy)
    await store.close()
    sent = await websocket_session(app, "/chat", ["hello"])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    sent = await websocket_session(app, "/joined", [])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    assert policy.failures == 2


async def test_fail_closed_503_through_the_decorated_handler(store: SQLiteStore) -> None:
    app = make_app(store)
    await store.close()
    async with client_for(app) as client:
        response = await client.put("/projects/p9", json={"name": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
