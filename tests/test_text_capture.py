"""Text that is not clean, where events are made (docs/capture.md "Text that cannot be
recorded"): header bytes through a real server, ``audit()``, the actions, ``@audited`` and
``pending_event()``, ``set_actor``/``acting_as``. Never a 500 from the library, never an
action without its event; a ``ValidationError`` naming the field where the caller passed
the bad value."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

import auditmw
from auditmw import (
    Actor,
    AdminApp,
    AuditMiddleware,
    EventFilter,
    SQLiteStore,
    ValidationError,
    acting_as,
    actions,
    audit,
    audited,
    diff,
    pending_event,
)

from ._servers import serving_in_loop

# --- header text through a real server (uvicorn on 127.0.0.1, raw bytes on a socket) ------


async def probe(request: Request) -> Response:
    event = await audit("probe.hit", "probe")
    assert event is not None
    return PlainTextResponse(event.id)


def capture_app(store: SQLiteStore) -> AuditMiddleware:
    def authorize(request: Request) -> Actor:
        return Actor(user_id="auditor")

    routes = [Route("/", probe), Mount("/admin", AdminApp(store, authorize=authorize))]
    return AuditMiddleware(Starlette(routes=routes), store=store)


async def raw_get(port: int, path: bytes, user_agent: bytes) -> tuple[int, bytes]:
    """GET ``path`` with exactly these User-Agent bytes; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: test\r\nUser-Agent: "
        + user_agent
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    response = await reader.read()  # until the server closes
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


USER_AGENTS = [
    # UTF-8, as browsers and most clients send it: read as UTF-8.
    ("Mozilla/5.0 (café ☕)".encode(), "Mozilla/5.0 (café ☕)"),
    # Not UTF-8: read as Latin-1, one character per byte, nothing lost.
    (b"\xff\xfe agent", "\xff\xfe agent"),
    (b"caf\xe9 latin-1", "café latin-1"),
    # The UTF-8 form of a lone surrogate is not UTF-8 either: Latin-1, never a surrogate.
    (b"x \xed\xa0\x80", "x \xed\xa0\x80"),
    (b"plain/1.0", "plain/1.0"),
]


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_user_agents_are_utf8_when_they_decode_else_latin1(
    store: SQLiteStore, http: str
) -> None:
    async with serving_in_loop(capture_app(store), http=http) as base:
        port = int(base.rsplit(":", 1)[1])
        answers = [await raw_get(port, b"/", raw) for raw, _ in USER_AGENTS]
        exported = await raw_get(port, b"/admin/export.jsonl", "café ☕".encode())
    assert [status for status, _ in answers] == [200] * len(USER_AGENTS)
    for (_, body), (_, logged) in zip(answers, USER_AGENTS, strict=True):
        event = await store.get(body.decode())
        assert event is not None and event.user_agent == logged
    # The admin app reads the same way when it records an export.
    assert exported[0] == 200
    [export] = (await store.query(EventFilter(action="export.requested"))).events
    assert export.user_agent == "café ☕"
    assert (await store.verify()).ok


# --- audit(), the actions and diff(): the caller's bad value, named --------------------------


CALLS: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
    ("action", lambda: audit("log\ud800in", "session")),
    ("resource_id", lambda: audit("a", "r", "\udfff")),
    ("details.note", lambda: audit("a", "r", details={"note": "\ud83d half an emoji"})),
    (
        "details.changes.name.to",
        lambda: audit("a", "r", changes=diff({"name": "a"}, {"name": "\udc00"})),
    ),
    ("user_email", lambda: audit("a", "r", user_email="\ud800@example.com")),
    ("user_id", lambda: actions.user_signed_in("\ud800")),
    ("resource_id", lambda: actions.resource_deleted("project", "\ud800")),
    ("details.new_role", lambda: actions.permission_changed("u1", "member", "\ud800")),
    ("details.type", lambda: actions.export_requested("\udfff")),
]


@pytest.mark.parametrize(("field", "call"), CALLS, ids=[field for field, _ in CALLS])
async def test_audit_and_the_actions_name_the_field_of_a_lone_surrogate(
    store: SQLiteStore, field: str, call: Callable[[], Awaitable[Any]]
) -> None:
    with acting_as(user_id="job", store=store), pytest.raises(ValidationError) as raised:
        await call()
    assert raised.value.field == field
    assert "surrogate" in raised.value.message
    assert await store.count() == 0


async def test_set_actor_and_acting_as_refuse_a_bad_actor_where_it_is_named(
    store: SQLiteStore,
) -> None:
    with pytest.raises(ValidationError) as raised, acting_as(user_id="\ud800", store=store):
        pytest.fail("entered")
    assert raised.value.field == "user_id"
    with acting_as(user_id="job", store=store):
        with pytest.raises(ValidationError) as raised:
            auditmw.set_actor(user_email="x" * (store.limits.max_email_chars + 1))
        assert raised.value.field == "user_email"
        with pytest.raises(ValidationError) as raised:
            auditmw.set_actor(user_id=42)  # type: ignore[arg-type]
        assert raised.value.field == "user_id"
        event = await audit("still.job", "r")  # the actor did not change
    assert event is not None and event.user_id == "job"


def test_audited_refuses_text_it_could_never_record_when_it_decorates() -> None:
    with pytest.raises(ValidationError) as raised:
        audited("project.\ud800", "project")
    assert raised.value.field == "action"


# --- pending_event(): bad values fail at the line that sets them -----------------------------


ASSIGNMENTS: list[tuple[str, Callable[[auditmw.PendingEvent], None]]] = [
    ("action", lambda event: setattr(event, "action", " ")),
    ("resource", lambda event: setattr(event, "resource", "\ud800")),
    ("resource_id", lambda event: setattr(event, "resource_id", "\udfff")),
    ("resource_id", lambda event: setattr(event, "resource_id", "x" * 300)),  # limit: 256
    ("resource_id", lambda event: setattr(event, "resource_id", 1.5)),
    ("outcome", lambda event: setattr(event, "outcome", "ok")),
    ("details", lambda event: setattr(event, "details", ["not", "a", "dict"])),
    ("details.note", lambda event: event.details.__setitem__("note", "\ud800")),
    ("details.deep.list[1]", lambda event: event.details.update(deep={"list": ["a", "\udc00"]})),
    ("details", lambda event: event.details.setdefault(7, "x")),  # type: ignore[call-overload]
    ("details.k", lambda event: event.details.__ior__({"k": "\ud800"})),
    ("details.note", lambda event: setattr(event, "details", {"note": "\ud800"})),
    (
        "details.changes.name.to",
        lambda event: setattr(event, "changes", {"name": {"to": "\ud800"}}),
    ),
]


@pytest.mark.parametrize(("field", "assign"), ASSIGNMENTS, ids=[f for f, _ in ASSIGNMENTS])
async def test_a_bad_value_set_on_the_pending_event_fails_at_that_line(
    store: SQLiteStore, field: str, assign: Callable[[auditmw.PendingEvent], None]
) -> None:
    reached: list[str] = []

    @audited("doc.saved", "doc")
    async def save_doc() -> str:
        reached.append("before")
        assign(pending_event())
        reached.append("after")  # never: the action does not go on with a bad value
        return "saved"

    with acting_as(user_id="job", store=store), pytest.raises(ValidationError) as raised:
        await save_doc()
    assert raised.value.field.startswith(field), raised.value
    assert reached == ["before"]
    # The call failed with ValidationError, and that is recorded like any failure.
    [event] = (await store.query(EventFilter())).events
    assert (event.action, event.outcome) == ("doc.saved", "failure")
    assert event.details == {"error": "ValidationError"}


# --- what only the whole event shows: recorded all the same, the bad part left out ---------


async def test_a_value_changed_in_place_is_left_out_and_the_action_still_recorded(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    @audited("doc.saved", "doc")
    async def save_doc() -> str:
        event = pending_event()
        event.resource_id = "d1"
        tags = ["ok"]
        event.details["tags"] = tags
        tags.append("\ud800")  # changed after it was set: only the whole event shows it
        return "saved"

    with acting_as(user_id="job", store=store), caplog.at_level(logging.ERROR, "auditmw"):
        assert await save_doc() == "saved"  # the call returns as it would have
    [event] = (await store.query(EventFilter())).events
    assert (event.action, event.resource_id, event.outcome, event.user_id) == (
        "doc.saved",
        "d1",
        "success",
        "job",
    )
    assert event.details == {
        "audit_errors": ["details.tags[1]: contains a lone surrogate (not valid Unicode)"]
    }
    assert "details.tags[1]" in caplog.text and "recorded without it" in caplog.text


async def test_a_failed_call_keeps_its_error_when_its_details_are_left_out(
    store: SQLiteStore,
) -> None:
    @audited("doc.saved", "doc")
    async def save_doc() -> str:
        pending_event().details["blob"] = object()  # not JSON: found when it is recorded
        raise LookupError("no such doc")

    with acting_as(user_id="job", store=store), pytest.raises(LookupError):
        await save_doc()
    [event] = (await store.query(EventFilter())).events
    assert event.outcome == "failure"
    assert event.details == {
        "error": "LookupError",
        "audit_errors": [
            "details.blob: object is not JSON; convert it to a string, number or object"
        ],
    }


def decorated_app(store: SQLiteStore) -> AuditMiddleware:
    """A resource_id from the path (the client's text) and a sync handler's event."""

    @audited("doc.read", "doc", resource_id="doc_id")
    async def read_doc(request: Request) -> Response:
        return PlainTextResponse("read")

    @audited("doc.tagged", "doc", resource_id="doc_id")
    def tag_doc(request: Request) -> Response:
        tags = ["ok"]
        pending_event().details["tags"] = tags
        tags.append("\udfff")
        return PlainTextResponse("tagged")

    routes = [Route("/docs/{doc_id}", read_doc), Route("/docs/{doc_id}/tag", tag_doc)]
    return AuditMiddleware(Starlette(routes=routes), store=store)


async def test_an_id_the_client_sends_that_cannot_be_recorded_is_never_a_500(
    store: SQLiteStore,
) -> None:
    transport = httpx.ASGITransport(decorated_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        long_id = await client.get("/docs/" + "x" * 300)  # the limit is 256 characters
        tagged = await client.get("/docs/d7/tag")  # sync: committed by the middleware
    assert (long_id.status_code, long_id.text) == (200, "read")
    assert (tagged.status_code, tagged.text) == (200, "tagged")
    read, tag = reversed((await store.query(EventFilter())).events)
    assert (read.action, read.resource_id, read.outcome) == ("doc.read", None, "success")
    assert read.details == {
        "audit_errors": ["resource_id: is 300 characters long; the limit is 256"]
    }
    assert (tag.action, tag.resource_id, tag.outcome) == ("doc.tagged", "d7", "success")
    assert tag.details == {
        "audit_errors": ["details.tags[1]: contains a lone surrogate (not valid Unicode)"]
    }
    assert (await store.verify()).ok


async def test_a_user_the_resolver_finds_that_cannot_be_recorded(store: SQLiteStore) -> None:
    """The resolver is the app's: audit() names the field; an @audited call's action has
    happened, so its event is recorded without the bad part."""
    long_email = "x" * 400 + "@example.com"  # the limit is 320 characters

    @audited("doc.read", "doc")
    async def read_doc(request: Request) -> Response:
        return PlainTextResponse("read")

    async def plain_audit(request: Request) -> Response:
        try:
            await audit("doc.listed", "doc")
        except ValidationError as error:
            return PlainTextResponse(error.field, status_code=400)
        return PlainTextResponse("listed")

    app = AuditMiddleware(
        Starlette(routes=[Route("/read", read_doc), Route("/list", plain_audit)]),
        store=store,
        resolve_user=lambda scope: auditmw.Actor("u1", long_email),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test"
    ) as client:
        read = await client.get("/read")
        listed = await client.get("/list")
    assert (read.status_code, listed.status_code, listed.text) == (200, 400, "user_email")
    [event] = (await store.query(EventFilter())).events
    assert (event.action, event.user_id, event.user_email) == ("doc.read", "u1", None)
    assert event.details == {
        "audit_errors": ["user_email: is 412 characters long; the limit is 320"]
    }
