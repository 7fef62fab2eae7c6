"""The admin app's ``/streams``: what ``auditmw streams --json`` prints, behind the same
access rule as every route, and in the OpenAPI document."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from auditmw import AdminApp, AuditStore, NewEvent
from auditmw._admin.openapi import openapi_document

from ._asgi import client_for
from .test_admin import ADMIN, VIEWER, authorize


def streams_schema() -> dict[str, object]:
    document = openapi_document()
    schema = document["paths"]["/streams"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    return {**schema, "components": document["components"]}


async def test_streams_shows_cursor_lag_and_error(any_store: AuditStore) -> None:
    for _ in range(3):
        await any_store.append(NewEvent(action="a", resource="r"))
    app = AdminApp(any_store, authorize=authorize)
    async with client_for(app) as client:
        empty = await client.get("/streams", headers=ADMIN)
        assert (empty.status_code, empty.json()) == (200, {"streams": []})
        backend = any_store.backend
        state = await backend.claim_stream("siem", "host:1:ab", 0.0, 1.0, "t")
        assert state is not None
        saved = dataclasses.replace(state.with_cursor("default", 1), last_error="x")
        assert await backend.save_stream(saved, "host:1:ab")
        response = await client.get("/streams", headers=ADMIN)
        assert response.status_code == 200
        body = response.json()
        jsonschema.validate(body, streams_schema())
        [stream] = body["streams"]
        assert stream["name"] == "siem" and stream["last_error"] == "x"
        assert stream["lease_owner"] is None  # its lease (until t=1.0) expired long ago
        [log] = stream["logs"]
        assert (log["cursor"], log["head"], log["lag_events"]) == (1, 3, 2)
        assert log["lag_seconds"] >= 0
        assert (await client.get("/streams", headers=VIEWER)).status_code == 403
        assert (await client.get("/streams")).status_code == 401
        bad = await client.get("/streams", params={"x": "1"}, headers=ADMIN)
        assert bad.status_code == 400


@pytest.mark.parametrize("path", ["/streams"])
def test_streams_is_in_the_openapi_document(path: str) -> None:
    assert "get" in openapi_document()["paths"][path]
