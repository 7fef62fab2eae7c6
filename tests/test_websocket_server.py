"""WebSockets through a real uvicorn server on 127.0.0.1 and a real ``websockets`` client.

The ASGI-level tests in ``test_integration_starlette`` show which messages the middleware
sends; only a real server and client show what those become on the wire: the handshake
response and its headers, the 503 through the ``websocket.http.response`` extension,
the close frame's code and reason, the peer address of a real socket, and whether the
server logs a traceback because a ``StoreError`` reached it.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

import orjson
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import auditmw
from auditmw import SQLiteStore

from ._servers import serving_in_loop
from .test_integration_starlette import stored, websocket_app

USER_AGENT = "auditmw-test-client/1.0"
HEADERS = {"authorization": "Bearer carol"}
# uvicorn's websockets-sansio logs this after every websocket.http.response denial, which
# it never marks as a completed handshake (Kludex/uvicorn#3138); the client got the 503.
DENIAL_RESPONSE_NOISE = "ASGI callable returned without completing handshake."


def serving(app: ASGIApp) -> AbstractAsyncContextManager[str]:
    """``app`` on a real uvicorn server in this event loop (the store is bound to it), its
    WebSockets implemented by the ``websockets`` package's sans-I/O protocol."""
    return serving_in_loop(app, ws="websockets-sansio")


def open_socket(base: str, path: str) -> connect:
    """A WebSocket connection to ``path`` of the server at ``base`` (``http://...``)."""
    url = "ws://" + base.removeprefix("http://") + path
    return connect(url, additional_headers=HEADERS, user_agent_header=USER_AGENT)


def server_complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What uvicorn logged at WARNING or above, e.g. "Exception in ASGI application"."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("uvicorn") and record.levelno >= logging.WARNING
    ]


async def closed_by_server(websocket: ClientConnection) -> ConnectionClosed:
    """The close the client sees, after failing if anything else arrives first."""
    with pytest.raises(ConnectionClosed) as closed:
        message = await websocket.recv()
        pytest.fail(f"received {message!r} instead of the close")
    return closed.value


async def test_chat_through_a_real_server_is_audited_with_the_connection_context(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(websocket_app(store)) as base, open_socket(base, "/chat") as websocket:
        assert websocket.response is not None
        request_id = websocket.response.headers["x-request-id"]
        replies = []
        for text in ["hello", "bye"]:
            await websocket.send(text)
            replies.append(await websocket.recv())
    assert replies == ["HELLO", "BYE"]
    events = await stored(store)
    assert [
        (e.action, e.details, e.user_id, e.ip_address, e.user_agent, e.request_id) for e in events
    ] == [
        ("chat.message", {"text": "hello"}, "carol", "127.0.0.1", USER_AGENT, request_id),
        ("chat.message", {"text": "bye"}, "carol", "127.0.0.1", USER_AGENT, request_id),
    ]
    assert (await store.verify()).ok
    assert server_complaints(caplog) == []


async def test_fail_closed_refuses_the_handshake_with_503_audit_unavailable(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = websocket_app(store)
    await store.close()
    async with serving(app) as base:
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(base, "/joined"):
                pytest.fail("the handshake was accepted")
    response = refused.value.response
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert orjson.loads(response.body)["error"]["code"] == "audit_unavailable"
    assert response.headers["x-request-id"]
    assert set(server_complaints(caplog)) <= {DENIAL_RESPONSE_NOISE}


def without_http_response_extension(app: ASGIApp) -> ASGIApp:
    """``app`` behind a server that cannot send its own handshake response."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions.pop("websocket.http.response", None)
        await app({**scope, "extensions": extensions}, receive, send)

    return wrapped


async def test_fail_closed_without_the_extension_refuses_the_handshake_with_403(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = without_http_response_extension(websocket_app(store))
    await store.close()
    async with serving(app) as base:
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(base, "/joined"):
                pytest.fail("the handshake was accepted")
    # uvicorn turns a close before the accept into 403, not the app's own 500.
    assert refused.value.response.status_code == 403
    assert server_complaints(caplog) == []


async def test_fail_closed_closes_an_accepted_socket_1013_when_its_event_is_lost(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = websocket_app(store)
    await store.close()
    async with serving(app) as base, open_socket(base, "/chat") as websocket:
        assert websocket.response is not None
        assert websocket.response.headers["x-request-id"]
        await websocket.send("hello")
        closed = await closed_by_server(websocket)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1013, "audit_unavailable")
    assert server_complaints(caplog) == []


async def test_fail_closed_stops_a_handler_that_swallowed_the_store_error(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = websocket_app(store)
    await store.close()
    async with serving(app) as base, open_socket(base, "/swallowing") as websocket:
        closed = await closed_by_server(websocket)  # never the handler's "welcome"
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1013, "audit_unavailable")
    assert server_complaints(caplog) == []


async def test_fail_open_keeps_the_sockets_going_and_counts_the_lost_events(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    policy = auditmw.FailurePolicy(fail_open=True)
    app = websocket_app(store, failure_policy=policy)
    await store.close()
    async with serving(app) as base:
        async with open_socket(base, "/chat") as websocket:
            replies = []
            for text in ["hello", "bye"]:
                await websocket.send(text)
                replies.append(await websocket.recv())
        async with open_socket(base, "/joined") as websocket:
            replies.append(await websocket.recv())
    assert replies == ["HELLO", "BYE", "welcome"]
    assert policy.failures == 3
    assert server_complaints(caplog) == []
