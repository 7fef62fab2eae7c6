"""``auditmw.mount()``: which app gets each request, with which scope, and who gets the
lifespan events. (The Django and Quart tests serve the admin app through it over HTTP.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

import auditmw


class Recorder:
    """An ASGI app that answers its name and remembers the scopes it got."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(dict(scope))
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.name.encode()})


async def who_answers(app: Any, path: str, root_path: str = "") -> str:
    transport = httpx.ASGITransport(app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get(path)).text


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/admin/audit", "admin"),
        ("/admin/audit/", "admin"),
        ("/admin/audit/events", "admin"),
        ("/admin/audit/static/app.js", "admin"),
        ("/admin/auditor", "host"),
        ("/admin/audi", "host"),
        ("/admin", "host"),
        ("/", "host"),
        ("/Admin/audit", "host"),  # paths are case-sensitive, as routing is
        ("/admin/audit/nested", "nested"),  # the longest prefix wins
        ("/admin/audit/nested/x", "nested"),
        ("/admin/audit/nestedx", "admin"),
    ],
)
async def test_each_request_goes_to_the_app_of_its_longest_prefix(path: str, expected: str) -> None:
    apps = {name: Recorder(name) for name in ("host", "admin", "nested")}
    app = auditmw.mount(
        apps["host"], {"/admin/audit": apps["admin"], "/admin/audit/nested/": apps["nested"]}
    )
    assert await who_answers(app, path) == expected


async def test_the_mounted_app_gets_the_root_path_grown_and_the_path_whole() -> None:
    host, admin = Recorder("host"), Recorder("admin")
    app = auditmw.mount(host, {"/admin/audit": admin})
    assert await who_answers(app, "/admin/audit/events?limit=2") == "admin"
    [scope] = admin.scopes
    assert (scope["root_path"], scope["path"], scope["query_string"]) == (
        "/admin/audit",
        "/admin/audit/events",
        b"limit=2",
    )
    assert await who_answers(app, "/elsewhere") == "host"
    assert (host.scopes[0]["root_path"], host.scopes[0]["path"]) == ("", "/elsewhere")


async def test_under_a_root_path_the_prefix_is_below_it() -> None:
    """Served at /app (a proxy's prefix): /app/admin/audit/... is the admin app's."""
    host, admin = Recorder("host"), Recorder("admin")
    app = auditmw.mount(host, {"/admin/audit": admin})
    assert await who_answers(app, "/app/admin/audit/events", root_path="/app") == "admin"
    assert admin.scopes[0]["root_path"] == "/app/admin/audit"
    # A path without the root path in front (a server that strips it): read as Starlette
    # reads it, the whole path is below the root.
    assert await who_answers(app, "/admin/audit/events", root_path="/app") == "admin"
    assert await who_answers(app, "/app/elsewhere", root_path="/app") == "host"


async def run_lifespan(app: Any) -> list[str]:
    """Drive startup and shutdown as a server does; the message types the app sent."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message["type"])

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app.get, send)
    )
    await to_app.put({"type": "lifespan.startup"})
    await to_app.put({"type": "lifespan.shutdown"})
    await task
    return sent


async def test_without_lifespan_the_host_app_gets_the_lifespan_events() -> None:
    host, admin = Recorder("host"), Recorder("admin")
    sent = await run_lifespan(auditmw.mount(host, {"/admin/audit": admin}))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [scope["type"] for scope in host.scopes] == ["lifespan"]
    assert admin.scopes == []


async def test_with_lifespan_the_dispatcher_runs_it_and_the_host_never_sees_lifespan() -> None:
    host, admin = Recorder("host"), Recorder("admin")
    store_states: list[str] = []

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        store_states.append("opened")
        yield
        store_states.append("closed")

    app = auditmw.mount(host, {"/admin/audit": admin}, lifespan=lifespan)
    sent = await run_lifespan(app)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert store_states == ["opened", "closed"]
    assert host.scopes == []


async def test_a_lifespan_that_fails_at_startup_says_so_to_the_server() -> None:
    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        raise OSError("the store cannot be opened")
        yield

    app = auditmw.mount(Recorder("host"), {"/admin/audit": Recorder("admin")}, lifespan=lifespan)
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await to_app.put({"type": "lifespan.startup"})
    with pytest.raises(OSError, match="cannot be opened"):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, send)
    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]


@pytest.mark.parametrize("prefix", ["", "/", "//", "admin/audit"])
def test_a_prefix_must_name_a_path_below_the_root(prefix: str) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        auditmw.mount(Recorder("host"), {prefix: Recorder("admin")})
