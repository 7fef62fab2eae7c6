"""audit(), acting_as(), set_actor(), @audited and the convenience actions."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import auditmw
from auditmw import SQLiteStore, acting_as, actions, audit, audited

from ._asgi import stored

# --- audit() and the actor outside requests -------------------------------------------


async def test_audit_outside_a_request_needs_a_store() -> None:
    with pytest.raises(RuntimeError, match="no audit store"):
        await audit("job.ran", "job")
    with acting_as(user_id="cron"), pytest.raises(RuntimeError, match="no audit store"):
        await audit("job.ran", "job")


async def test_audit_with_an_explicit_store(store: SQLiteStore) -> None:
    event = await audit("job.ran", "job", 7, {"rows": 3}, user_id="cron", store=store)
    assert event is not None
    assert (event.action, event.resource, event.resource_id) == ("job.ran", "job", "7")
    assert (event.user_id, event.ip_address, event.user_agent, event.request_id) == (
        "cron",
        None,
        None,
        None,
    )
    assert await store.get(event.id) == event


async def test_acting_as_names_actor_and_store_and_nests(store: SQLiteStore) -> None:
    with acting_as(user_id="job-1", user_email="ops@example.com", store=store):
        outer = await audit("report.built", "report")
        with acting_as(user_id="job-2"):
            inner = await audit("report.sent", "report")
        again = await audit("report.archived", "report")
    assert outer is not None and inner is not None and again is not None
    assert (outer.user_id, outer.user_email) == ("job-1", "ops@example.com")
    assert (inner.user_id, inner.user_email) == ("job-2", None)  # a new actor, not a mix
    assert again.user_id == "job-1"
    assert [event.action for event in await stored(store)] == [
        "report.built",
        "report.sent",
        "report.archived",
    ]


async def test_set_actor_changes_the_current_context(store: SQLiteStore) -> None:
    with pytest.raises(RuntimeError):
        auditmw.set_actor(user_id="nobody")
    with acting_as(store=store):
        auditmw.set_actor(user_id="u9", user_email="u9@example.com")
        event = await audit("thing.done", "thing")
    assert event is not None and (event.user_id, event.user_email) == ("u9", "u9@example.com")


async def test_explicit_user_wins_and_is_not_mixed_with_the_context(store: SQLiteStore) -> None:
    with acting_as(user_id="admin", user_email="admin@example.com", store=store):
        event = await audit("user.signed_in", "session", user_id="u2")
    assert event is not None and (event.user_id, event.user_email) == ("u2", None)


async def test_resource_ids_of_any_common_type_become_strings(store: SQLiteStore) -> None:
    ident = uuid.uuid4()
    with acting_as(store=store):
        by_int = await audit("a.b", "a", 12)
        by_uuid = await audit("a.b", "a", ident)
    assert by_int is not None and by_int.resource_id == "12"
    assert by_uuid is not None and by_uuid.resource_id == str(ident)


async def test_skip_if_unchanged_records_nothing_for_no_changes(store: SQLiteStore) -> None:
    with acting_as(store=store):
        skipped = await audit("p.updated", "p", 1, changes={}, skip_if_unchanged=True)
        kept = await audit("p.updated", "p", 1, changes={}, skip_if_unchanged=False)
        changed = await audit(
            "p.updated", "p", 1, changes={"a": {"from": 1, "to": 2}}, skip_if_unchanged=True
        )
    assert skipped is None
    assert kept is not None and kept.details == {"changes": {}}
    assert changed is not None and changed.details == {"changes": {"a": {"from": 1, "to": 2}}}
    assert await store.count() == 2


async def test_a_bad_event_is_a_validation_error(store: SQLiteStore) -> None:
    with acting_as(store=store), pytest.raises(auditmw.ValidationError):
        await audit("", "thing")
    assert await store.count() == 0


async def test_store_errors_outside_requests_raise(store_path: Any) -> None:
    store = SQLiteStore(store_path)  # never opened
    with pytest.raises(auditmw.StoreError):
        await audit("a.b", "a", store=store)


# --- @audited, outside requests ----------------------------------------------------------


async def test_audited_async_function_in_a_job(store: SQLiteStore) -> None:
    @audited("invoice.sent", "invoice", resource_id="invoice_id")
    async def send_invoice(invoice_id: int, *, copy: bool = False) -> str:
        auditmw.pending_event().details["copy"] = copy
        return f"sent {invoice_id}"

    with acting_as(user_id="billing-job", store=store):
        assert await send_invoice(41, copy=True) == "sent 41"
        assert await send_invoice(invoice_id=42) == "sent 42"
    events = await stored(store)
    assert [(e.resource_id, e.details, e.user_id) for e in events] == [
        ("41", {"copy": True}, "billing-job"),
        ("42", {"copy": False}, "billing-job"),
    ]


async def test_sync_audited_outside_a_request_refuses_to_run() -> None:
    calls: list[int] = []

    @audited("x.done", "x")
    def do_it() -> None:
        calls.append(1)

    with pytest.raises(RuntimeError, match="sync @audited"):
        do_it()
    assert calls == []  # the unaudited action was not performed


def test_audited_keeps_signature_and_kind() -> None:
    async def handler(project_id: int, name: str = "x") -> dict[str, Any]:
        return {}

    def sync_handler(project_id: int) -> None:
        pass

    wrapped = audited("p.read", "p")(handler)
    wrapped_sync = audited("p.read", "p")(sync_handler)
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert inspect.iscoroutinefunction(wrapped)
    assert not inspect.iscoroutinefunction(wrapped_sync)
    assert inspect.signature(wrapped_sync) == inspect.signature(sync_handler)
    assert wrapped.__name__ == "handler" and wrapped.__wrapped__ is handler  # type: ignore[attr-defined]


def test_audited_needs_action_and_resource() -> None:
    with pytest.raises(ValueError):
        audited("", "p")


def test_pending_event_outside_audited_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        auditmw.pending_event()


async def test_nested_audited_calls_each_record_their_own_event(store: SQLiteStore) -> None:
    @audited("inner.done", "inner")
    async def inner() -> None:
        auditmw.pending_event().details["level"] = "inner"

    @audited("outer.done", "outer")
    async def outer() -> None:
        await inner()
        auditmw.pending_event().details["level"] = "outer"

    with acting_as(store=store):
        await outer()
    events = await stored(store)
    assert [(e.action, e.details) for e in events] == [
        ("inner.done", {"level": "inner"}),
        ("outer.done", {"level": "outer"}),
    ]


# --- @audited in requests: outcomes, ids, exactly one event ------------------------------


class Boom(Exception):
    pass


@audited("doc.deleted", "doc", resource_id="doc_id")
async def delete_doc(request: Request) -> Response:
    mode = request.query_params.get("mode", "ok")
    if mode == "boom":
        raise Boom("disk on fire")
    if mode == "forbidden":
        raise HTTPException(403, "not yours")
    if mode == "permission":
        raise PermissionError("nope")
    if mode == "missing":
        return JSONResponse({"error": "not found"}, status_code=404)
    if mode == "unauthorized":
        return JSONResponse({"error": "who are you"}, status_code=401)
    return PlainTextResponse("deleted")


@audited("doc.deleted", "doc", resource_id="doc_id")
def delete_doc_sync(request: Request) -> Response:
    if request.query_params.get("mode") == "boom":
        raise Boom("sync disk on fire")
    return PlainTextResponse("deleted")


def ids_from_arguments(arguments: Mapping[str, Any]) -> str:
    return f"computed-{arguments['request'].path_params['doc_id']}"


@audited("doc.copied", "doc", resource_id=ids_from_arguments)
async def copy_doc(request: Request) -> Response:
    return PlainTextResponse("copied")


@audited("doc.created", "doc")
async def create_doc(request: Request) -> Response:
    auditmw.pending_event().resource_id = "new-7"  # known only inside the handler
    return PlainTextResponse("created", status_code=201)


@audited("doc.updated", "doc", resource_id="doc_id", skip_if_unchanged=True)
async def update_doc(request: Request) -> Response:
    before = {"title": "a", "body": "b"}
    after = {"title": request.query_params.get("title", "a"), "body": "b"}
    auditmw.pending_event().changes = auditmw.diff(before, after)
    return PlainTextResponse("updated")


def docs_app(store: SQLiteStore) -> Starlette:
    return Starlette(
        routes=[
            Route("/docs/{doc_id}", delete_doc, methods=["DELETE"]),
            Route("/sync/docs/{doc_id}", delete_doc_sync, methods=["DELETE"]),
            Route("/docs/{doc_id}/copy", copy_doc, methods=["POST"]),
            Route("/docs", create_doc, methods=["POST"]),
            Route("/docs/{doc_id}", update_doc, methods=["PATCH"]),
        ],
        middleware=[Middleware(auditmw.AuditMiddleware, store=store)],
    )


@pytest.fixture
async def client(store: SQLiteStore) -> Any:
    # raise_app_exceptions=False: a handler's exception becomes the 500 a server sends.
    transport = httpx.ASGITransport(docs_app(store), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize(
    ("mode", "status", "outcome", "details"),
    [
        ("ok", 200, "success", None),
        ("boom", 500, "failure", {"error": "Boom"}),
        ("forbidden", 403, "denied", {"error": "HTTPException", "status_code": 403}),
        ("permission", 500, "denied", {"error": "PermissionError"}),
        ("missing", 404, "failure", None),
        ("unauthorized", 401, "denied", None),
    ],
)
async def test_outcome_follows_how_the_call_ended(
    client: httpx.AsyncClient,
    store: SQLiteStore,
    mode: str,
    status: int,
    outcome: str,
    details: dict[str, Any] | None,
) -> None:
    response = await client.delete("/docs/d1", params={"mode": mode})
    assert response.status_code == status
    events = await stored(store)
    assert len(events) == 1  # exactly one event per call
    assert (events[0].action, events[0].resource_id, events[0].outcome) == (
        "doc.deleted",
        "d1",
        outcome,
    )
    assert events[0].details == details
    if status != 500:  # Starlette's 500 is sent from outside every user middleware
        assert events[0].request_id == response.headers["x-request-id"]


async def test_the_exception_is_reraised_unchanged(store: SQLiteStore) -> None:
    error = Boom("the original")

    @audited("x.failed", "x")
    async def fail() -> None:
        raise error

    with acting_as(store=store), pytest.raises(Boom) as caught:
        await fail()
    assert caught.value is error
    assert [e.outcome for e in await stored(store)] == ["failure"]


@pytest.mark.parametrize(
    ("mode", "status", "outcome"), [("ok", 200, "success"), ("boom", 500, "failure")]
)
async def test_sync_handler_event_is_committed_before_the_response(
    client: httpx.AsyncClient, store: SQLiteStore, mode: str, status: int, outcome: str
) -> None:
    response = await client.delete("/sync/docs/d2", params={"mode": mode})
    assert response.status_code == status
    events = await stored(store)
    assert [(e.resource_id, e.outcome) for e in events] == [("d2", outcome)]


async def test_resource_id_from_callable_and_from_the_handler(
    client: httpx.AsyncClient, store: SQLiteStore
) -> None:
    assert (await client.post("/docs/d3/copy")).status_code == 200
    assert (await client.post("/docs")).status_code == 201
    events = await stored(store)
    assert [(e.action, e.resource_id, e.outcome) for e in events] == [
        ("doc.copied", "computed-d3", "success"),
        ("doc.created", "new-7", "success"),
    ]


async def test_audited_skip_if_unchanged(client: httpx.AsyncClient, store: SQLiteStore) -> None:
    assert (await client.patch("/docs/d4", params={"title": "a"})).status_code == 200
    assert await store.count() == 0  # nothing changed: nothing recorded
    assert (await client.patch("/docs/d4", params={"title": "b"})).status_code == 200
    events = await stored(store)
    assert [(e.resource_id, e.details) for e in events] == [
        ("d4", {"changes": {"title": {"from": "a", "to": "b"}}})
    ]


# --- convenience actions ---------------------------------------------------------------


async def test_convenience_actions_match_the_original_design(store: SQLiteStore) -> None:
    with acting_as(user_id="admin-1", store=store):
        await actions.user_signed_in("u1", "u1@example.com")
        await actions.user_signed_out("u1")
        await actions.resource_created("project", "p1", {"name": "Apollo"})
        await actions.resource_updated("project", "p1", auditmw.diff({"n": 1}, {"n": 2}))
        assert (await actions.resource_updated("project", "p1", {}, skip_if_unchanged=True)) is None
        await actions.resource_deleted("project", "p1")
        await actions.permission_changed("u7", "viewer", "admin")
        await actions.api_key_created("key_123")
        await actions.export_requested("csv")
        await actions.user_signed_out()  # the current actor
    rows = [
        (e.action, e.resource, e.resource_id, e.details, e.user_id, e.user_email)
        for e in await stored(store)
    ]
    assert rows == [
        ("user.signed_in", "session", None, None, "u1", "u1@example.com"),
        ("user.signed_out", "session", None, None, "u1", None),
        ("project.created", "project", "p1", {"name": "Apollo"}, "admin-1", None),
        (
            "project.updated",
            "project",
            "p1",
            {"changes": {"n": {"from": 1, "to": 2}}},
            "admin-1",
            None,
        ),
        ("project.deleted", "project", "p1", None, "admin-1", None),
        (
            "permission.changed",
            "user",
            "u7",
            {"old_role": "viewer", "new_role": "admin"},
            "admin-1",
            None,
        ),
        ("api_key.created", "api_key", "key_123", None, "admin-1", None),
        ("export.requested", "export", None, {"type": "csv"}, "admin-1", None),
        ("user.signed_out", "session", None, None, "admin-1", None),
    ]
