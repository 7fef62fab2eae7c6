"""auditmw.testing: the in-memory store and the helpers an application's tests use."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import auditmw
from auditmw import Checkpointing, EventFilter, NewEvent, StoreClosedError
from auditmw._transparency.notes import SigningKey, open_checkpoint
from auditmw.testing import MemoryStore, append_at, recorded


async def test_an_app_tested_against_a_memory_store() -> None:
    """What the module docstring shows: drive the app, then read what it recorded."""

    async def delete_project(request: Request) -> JSONResponse:
        project = request.path_params["project"]
        await auditmw.audit("project.deleted", "project", project)
        return JSONResponse({"deleted": project})

    async with MemoryStore() as store:
        app = Starlette(
            routes=[Route("/projects/{project}", delete_project, methods=["DELETE"])],
            middleware=[Middleware(auditmw.AuditMiddleware, store=store)],
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.delete("/projects/p-1", headers={"x-request-id": "r-9"})
        assert response.status_code == 200
        [event] = await recorded(store, action="project.deleted")
        assert (event.resource, event.resource_id, event.outcome) == ("project", "p-1", "success")
        assert store.events == [event]
        assert (await store.verify()).ok


async def test_events_in_commit_order_and_recorded_in_chain_order() -> None:
    async with MemoryStore() as store:
        for log, action in [("b", "x.one"), ("a", "x.two"), ("b", "y.three")]:
            await store.append(NewEvent(action=action, resource="r", log=log))
        assert [e.action for e in store.events] == ["x.one", "x.two", "y.three"]
        assert [e.action for e in await recorded(store)] == ["x.two", "x.one", "y.three"]
        assert [e.action for e in await recorded(store, action="x.*")] == ["x.two", "x.one"]
        only_b = await recorded(store, EventFilter(action="y.three"))
        assert [(e.log, e.seq) for e in only_b] == [("b", 2)]
        with pytest.raises(TypeError):
            await recorded(store, EventFilter(), action="x.one")


async def test_a_memory_store_keeps_its_log_when_reopened_and_shares_it() -> None:
    store = MemoryStore()
    async with store:
        first = await store.append(NewEvent(action="a", resource="r"))
    with pytest.raises(StoreClosedError):
        await store.count()
    async with store, MemoryStore(shared_with=store) as other:
        second = await other.append(NewEvent(action="b", resource="r"))
        assert second.prev_hash == first.hash and second.seq == 2
        assert [e.id for e in store.events] == [first.id, second.id]


async def test_a_memory_store_issues_checkpoints() -> None:
    key = SigningKey.generate("audit.example.com/memory")
    store = MemoryStore(checkpointing=Checkpointing(key, every=None, interval=None))
    async with store:
        await store.append(NewEvent(action="a", resource="r"))
    async with store:
        [checkpoint] = await store.checkpoints()
        assert checkpoint.size == 2  # the key record and the event, issued on close
        opened = open_checkpoint(checkpoint.note, [key.verifier])
        assert opened.checkpoint.root == checkpoint.root
        report = await store.verify()
        assert report.ok, report.findings


async def test_append_at_backdates_events_chained_as_every_append() -> None:
    january = datetime(2024, 1, 31, 23, 0, tzinfo=timezone(timedelta(hours=-2)))
    async with MemoryStore() as store:
        before = await store.append(NewEvent(action="now", resource="r"))
        backdated = await append_at(
            store,
            [
                (NewEvent(action="old", resource="r"), "2023-05-01T12:00:00.000001Z"),
                (NewEvent(action="older", resource="r"), january),
            ],
        )
        assert [event.timestamp for event in backdated] == [
            "2023-05-01T12:00:00.000001Z",
            "2024-02-01T01:00:00.000000Z",
        ]
        assert [event.seq for event in backdated] == [before.seq + 1, before.seq + 2]
        assert backdated[0].prev_hash == before.hash
        assert store.events == [before, *backdated]
        assert (await store.verify()).ok
        with pytest.raises(ValueError):
            await append_at(store, [(NewEvent(action="x", resource="r"), "2023-05-01")])
    with pytest.raises(StoreClosedError):
        await append_at(store, [(NewEvent(action="x", resource="r"), january)])
