"""AuditMiddleware as an ASGI citizen: pass-through, request ids, context lifetime,
``http.request`` events and the failure policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

import auditmw
from auditmw import AuditMiddleware, FailurePolicy, SQLiteStore, audit
from auditmw._record import audit_context

from ._asgi import client_for, stored


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: Any = ("127.0.0.1", 5000),
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": client,
        "server": ("test", 80),
    }


async def run_asgi(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    on_send: Callable[[Message], Awaitable[None]] | None = None,
) -> list[Message]:
    """Drive one HTTP request through ``app`` the way a server does; return what it sent."""
    sent: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # like a server: nothing more until the client leaves
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if on_send is not None:
            await on_send(message)
        sent.append(message)

    await app(scope, receive, send)
    return sent


# --- an ASGI citizen ------------------------------------------------------------------


@pytest.mark.parametrize("scope_type", ["lifespan", "something-new"])
async def test_lifespan_and_unknown_scopes_pass_straight_through(
    store: SQLiteStore, scope_type: str
) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))
        assert audit_context.get() is None

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": scope_type}
    await AuditMiddleware(app=inner, store=store)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert scope == {"type": scope_type}


async def test_the_request_body_is_left_to_the_app(store: SQLiteStore) -> None:
    receives: list[Receive] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        receives.append(receive)
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"payload", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await AuditMiddleware(inner, store=store)(http_scope(method="POST"), receive, send)
    assert receives == [receive]  # the very callable the server gave: never read by us
    assert sent[-1]["body"] == b"payload"


# --- request ids ------------------------------------------------------------------------


async def echo_request_id(request: Request) -> Response:
    event = await audit("ping", "ping")
    assert event is not None
    return JSONResponse({"event_request_id": event.request_id})


async def own_request_id(request: Request) -> Response:
    return PlainTextResponse("own", headers={"X-Request-ID": "chosen-by-app"})


@pytest.fixture
def ids_app(store: SQLiteStore) -> Starlette:
    return Starlette(
        routes=[Route("/", echo_request_id), Route("/own", own_request_id)],
        middleware=[Middleware(AuditMiddleware, store=store)],
    )


@pytest.mark.parametrize(
    "given",
    ["abc-123", "0b5c6f0e-3c51-4f4e-9d3f-6f2a2b4a9c1e", "a" * 128, "trace.id_~!#$%&'*+^`|"],
)
async def test_a_valid_request_id_is_kept_and_echoed(ids_app: Starlette, given: str) -> None:
    async with client_for(ids_app) as client:
        response = await client.get("/", headers={"x-request-id": given})
    assert response.headers["x-request-id"] == given
    assert response.json() == {"event_request_id": given}


@pytest.mark.parametrize("given", ["", "a" * 129, "has space", "semi;colon", 'quote"', "é"])
async def test_an_invalid_request_id_is_replaced(ids_app: Starlette, given: str) -> None:
    async with client_for(ids_app) as client:
        response = await client.get("/", headers={b"x-request-id": given.encode()})
    generated = response.headers["x-request-id"]
    assert generated != given and len(generated) == 36  # a fresh UUID
    assert response.json() == {"event_request_id": generated}


async def test_request_id_first_header_line_decides(ids_app: Starlette) -> None:
    async with client_for(ids_app) as client:
        response = await client.get(
            "/", headers=[("x-request-id", "bad id"), ("x-request-id", "ok")]
        )
    assert response.headers["x-request-id"] not in ("ok", "bad id")


async def test_generated_ids_differ_and_the_apps_own_header_wins(ids_app: Starlette) -> None:
    async with client_for(ids_app) as client:
        first = await client.get("/")
        second = await client.get("/")
        own = await client.get("/own")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert own.headers.get_list("x-request-id") == ["chosen-by-app"]


async def test_request_id_header_name_is_configurable(store: SQLiteStore) -> None:
    app = Starlette(
        routes=[Route("/", echo_request_id)],
        middleware=[Middleware(AuditMiddleware, store=store, request_id_header="X-Trace-Id")],
    )
    async with client_for(app) as client:
        response = await client.get("/", headers={"x-trace-id": "t-1", "x-request-id": "r-1"})
    assert response.headers["x-trace-id"] == "t-1"
    assert "x-request-id" not in response.headers


# --- the context: per request, reset after it ----------------------------------------------


async def test_context_is_reset_after_each_request_no_leak_on_keep_alive(
    store: SQLiteStore,
) -> None:
    async def login(request: Request) -> Response:
        auditmw.set_actor(user_id="alice")
        await audit("user.signed_in", "session")
        return PlainTextResponse("ok")

    async def anonymous(request: Request) -> Response:
        assert audit_context.get() is not None
        await audit("page.viewed", "page")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/login", login), Route("/page", anonymous)],
        middleware=[Middleware(AuditMiddleware, store=store)],
    )
    async with client_for(app) as client:  # one client: one keep-alive connection
        await client.get("/login")
        await client.get("/page")
    assert audit_context.get() is None
    events = await stored(store)
    assert [(e.action, e.user_id) for e in events] == [
        ("user.signed_in", "alice"),
        ("page.viewed", None),
    ]
    assert events[0].request_id != events[1].request_id


async def test_a_huge_user_agent_is_cut_to_the_store_limit(store: SQLiteStore) -> None:
    app = Starlette(
        routes=[Route("/", echo_request_id)],
        middleware=[Middleware(AuditMiddleware, store=store)],
    )
    async with client_for(app) as client:
        response = await client.get("/", headers={"user-agent": "x" * 10_000})
    assert response.status_code == 200
    [event] = await stored(store)
    assert event.user_agent == "x" * store.limits.max_user_agent_chars


# --- http.request events ---------------------------------------------------------------------


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def crash(request: Request) -> Response:
    raise RuntimeError("handler bug")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            yield f"chunk{index};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


def request_events_app(store: SQLiteStore, **options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/hello", hello, methods=["GET", "POST", "DELETE"]),
            Route("/crash", crash, methods=["POST"]),
            Route("/stream", stream, methods=["POST"]),
        ],
        middleware=[Middleware(AuditMiddleware, store=store, **options)],
    )


async def test_request_events_are_off_by_default(store: SQLiteStore) -> None:
    async with client_for(request_events_app(store)) as client:
        assert (await client.post("/hello")).status_code == 200
    assert await store.count() == 0


async def test_request_events_for_chosen_methods(store: SQLiteStore) -> None:
    app = request_events_app(store, record_requests=["post", "DELETE"])
    async with client_for(app, peer="198.51.100.4") as client:
        await client.get("/hello")
        posted = await client.post("/hello", headers={"user-agent": "ua/1"})
        await client.delete("/hello")
        missing = await client.post("/nowhere")
    assert missing.status_code == 404
    events = await stored(store)
    assert [(e.action, e.resource, e.details["method"], e.details["path"]) for e in events] == [  # type: ignore[index]
        ("http.request", "http", "POST", "/hello"),
        ("http.request", "http", "DELETE", "/hello"),
        ("http.request", "http", "POST", "/nowhere"),
    ]
    first = events[0]
    assert first.details is not None and first.details["status"] == 200
    assert isinstance(first.details["duration_ms"], int | float)
    assert (first.outcome, first.ip_address, first.user_agent) == (
        "success",
        "198.51.100.4",
        "ua/1",
    )
    assert first.request_id == posted.headers["x-request-id"]
    assert events[2].outcome == "failure" and events[2].details["status"] == 404  # type: ignore[index]


@pytest.mark.parametrize("path", ["/hello", "/stream"])
async def test_request_event_is_committed_before_the_response_completes(
    store: SQLiteStore, path: str
) -> None:
    app = request_events_app(store, record_requests=["POST"])
    committed_when_final_body_sent: list[int] = []

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            committed_when_final_body_sent.append(await store.count())

    sent = await run_asgi(app, http_scope(path, "POST"), on_send)
    assert committed_when_final_body_sent == [1]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert body == (b"hello" if path == "/hello" else b"chunk0;chunk1;chunk2;")


async def test_a_crash_before_the_response_is_recorded_as_a_500(store: SQLiteStore) -> None:
    app = request_events_app(store, record_requests=["POST"])
    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.post("/crash")
    assert response.status_code == 500
    [event] = await stored(store)
    assert event.outcome == "failure" and event.details is not None
    assert event.details["status"] == 500


# --- the failure policy -------------------------------------------------------------------


async def records(request: Request) -> Response:
    event = await audit("thing.done", "thing")
    return JSONResponse({"recorded": event is not None})


async def swallows(request: Request) -> Response:
    with contextlib.suppress(auditmw.StoreError):  # careless: must still not claim success
        await audit("thing.done", "thing")
    status = int(request.query_params.get("status", "200"))
    return JSONResponse({"claimed": "success"}, status_code=status)


def policy_app(store: SQLiteStore, **options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/", records, methods=["POST"]),
            Route("/swallow", swallows, methods=["POST"]),
        ],
        middleware=[Middleware(AuditMiddleware, store=store, **options)],
    )


def assert_audit_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == "audit_unavailable"
    assert body["error"]["message"]
    assert "x-request-id" in response.headers
    assert response.headers["retry-after"] == "5"  # a 503 says when to try again


async def test_fail_closed_is_the_default_503(store: SQLiteStore) -> None:
    policy = FailurePolicy()
    app = policy_app(store, failure_policy=policy)
    await store.close()  # the store can no longer write
    async with client_for(app) as client:
        response = await client.post("/")
        swallowed = await client.post("/swallow")
        honest_error = await client.post("/swallow", params={"status": "409"})
    assert_audit_unavailable(response)
    assert_audit_unavailable(swallowed)
    assert honest_error.status_code == 409  # an error response claims nothing: left alone
    assert policy.failures == 3


async def test_fail_closed_on_a_locked_database(store_path: Path) -> None:
    async with SQLiteStore(store_path, busy_timeout=0.05) as store:
        app = policy_app(store)
        blocker = sqlite3.connect(store_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            async with client_for(app) as client:
                locked = await client.post("/")
            blocker.execute("ROLLBACK")
            async with client_for(app) as client:
                recovered = await client.post("/")
        finally:
            blocker.close()
        assert_audit_unavailable(locked)
        assert recovered.status_code == 200 and recovered.json() == {"recorded": True}
        assert await store.count() == 1


async def test_fail_open_logs_counts_and_carries_on(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    policy = FailurePolicy(fail_open=True)
    app = policy_app(store, failure_policy=policy)
    await store.close()
    with caplog.at_level(logging.ERROR, logger="auditmw"):
        async with client_for(app) as client:
            responses = [await client.post("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.json() for r in responses] == [{"recorded": False}] * 3
    assert policy.failures == 3
    messages = [record.getMessage() for record in caplog.records if record.name == "auditmw"]
    assert len(messages) == 3 and all("thing.done" in m and "fail-open" in m for m in messages)


async def test_one_policy_counts_for_every_middleware_instance(store: SQLiteStore) -> None:
    policy = FailurePolicy(fail_open=True)
    first, second = (
        policy_app(store, failure_policy=policy),
        policy_app(store, failure_policy=policy),
    )
    await store.close()
    for app in (first, second):
        async with client_for(app) as client:
            await client.post("/")
    assert policy.failures == 2


async def test_a_streamed_response_is_cut_short_when_its_request_event_fails(
    store: SQLiteStore,
) -> None:
    app = request_events_app(store, record_requests=["POST"])
    started = asyncio.Event()

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.set()
        if message["type"] == "http.response.body" and message.get("more_body"):
            await store.close()  # the store fails while the response streams

    with pytest.raises(auditmw.StoreError):
        sent = await run_asgi(app, http_scope("/stream", "POST"), on_send)
        pytest.fail(f"the response completed: {sent}")
    assert started.is_set()


async def test_fail_closed_request_event_failure_becomes_503(store: SQLiteStore) -> None:
    app = request_events_app(store, record_requests=["POST"])
    await store.close()
    async with client_for(app) as client:
        response = await client.post("/hello")
    assert_audit_unavailable(response)


async def test_a_validation_error_is_a_bug_even_when_failing_open(store: SQLiteStore) -> None:
    async def bad(request: Request) -> Response:
        await audit("thing.done", "thing", details={"when": object()})
        return PlainTextResponse("unreachable")

    app = Starlette(
        routes=[Route("/", bad)],
        middleware=[
            Middleware(AuditMiddleware, store=store, failure_policy=FailurePolicy(fail_open=True))
        ],
    )
    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/")
    assert response.status_code == 500
    assert await store.count() == 0


def test_the_503_body_is_json() -> None:
    from auditmw._middleware import AUDIT_UNAVAILABLE_BODY

    assert orjson.loads(AUDIT_UNAVAILABLE_BODY)["error"]["code"] == "audit_unavailable"


async def test_a_start_without_body_is_still_forwarded_when_recording(store: SQLiteStore) -> None:
    async def headers_only(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})

    app = AuditMiddleware(headers_only, store=store, record_requests=["POST"])
    sent = await run_asgi(app, http_scope(method="POST"))
    assert [message["status"] for message in sent] == [204]
    [event] = await stored(store)
    assert event.details is not None and event.details["status"] == 204
