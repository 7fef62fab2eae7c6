"""The admin app's own events are captured like every other event, over real HTTP.

An export records ``export.requested`` with the request as ``RequestCapture`` read it:
under ``AuditMiddleware`` the middleware's capture (its trusted proxies, its request-id
header, the request id it echoes); standing alone, the admin app's own capture with the
same options. Either way the event has one shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Mount

from auditmw import Actor, AdminApp, AuditMiddleware, Event, EventFilter, SQLiteStore

from ._servers import serving_in_loop

ADMIN = Actor(user_id="admin-1", user_email="admin@example.com")
CLIENT = "198.51.100.9"
# The test's client is 127.0.0.1: it plays the trusted proxy, after a client that forged
# the leftmost entry.
FORWARDED = {"x-forwarded-for": f"203.0.113.66, {CLIENT}"}


def authorize(request: Request) -> Actor:
    return ADMIN


def under_middleware(store: SQLiteStore, **options: Any) -> Starlette:
    admin = AdminApp(store, authorize=authorize)
    middleware = Middleware(AuditMiddleware, store=store, trusted_proxies=["127.0.0.1"], **options)
    return Starlette(routes=[Mount("/admin", app=admin)], middleware=[middleware])


def standing_alone(store: SQLiteStore, **options: Any) -> Starlette:
    admin = AdminApp(store, authorize=authorize, trusted_proxies=["127.0.0.1"], **options)
    return Starlette(routes=[Mount("/admin", app=admin)])


async def export_over_http(app: Any, headers: dict[str, str]) -> httpx.Response:
    # uvicorn without proxy headers: auditmw, not the server, applies the proxy rule.
    async with (
        serving_in_loop(app, proxy_headers=False) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        response = await client.get("/admin/export.csv?outcome=denied", headers=headers)
    assert response.status_code == 200
    return response


async def the_export(store: SQLiteStore) -> Event:
    [event] = (await store.query(EventFilter(action="export.requested"))).events
    return event


@pytest.mark.parametrize("layout", [under_middleware, standing_alone])
async def test_the_export_carries_the_client_and_request_id(store_path: Path, layout: Any) -> None:
    async with SQLiteStore(store_path) as store:
        headers = {**FORWARDED, "x-request-id": "req-42", "user-agent": "auditor/1.0"}
        response = await export_over_http(layout(store), headers)
        event = await the_export(store)
    assert response.headers["x-request-id"] == "req-42"
    assert event.to_dict() | {"id": "", "timestamp": "", "seq": 0, "hash": "", "prev_hash": ""} == {
        "id": "",
        "log": event.log,
        "seq": 0,
        "timestamp": "",
        "action": "export.requested",
        "resource": "audit_log",
        "resource_id": None,
        "outcome": "success",
        "details": {"format": "csv", "filters": {"outcome": "denied"}},
        "user_id": "admin-1",
        "user_email": "admin@example.com",
        "ip_address": CLIENT,
        "user_agent": "auditor/1.0",
        "request_id": "req-42",
        "prev_hash": "",
        "hash": "",
    }


@pytest.mark.parametrize("layout", [under_middleware, standing_alone])
async def test_the_configured_request_id_header_is_read(store_path: Path, layout: Any) -> None:
    async with SQLiteStore(store_path) as store:
        app = layout(store, request_id_header="x-correlation-id")
        headers = {"x-correlation-id": "corr-7", "x-request-id": "ignored"}
        response = await export_over_http(app, headers)
        event = await the_export(store)
    assert response.headers["x-correlation-id"] == "corr-7"
    assert event.request_id == "corr-7"
    assert event.ip_address == "127.0.0.1"  # no forwarding header: the peer


@pytest.mark.parametrize("layout", [under_middleware, standing_alone])
async def test_without_a_request_id_the_echoed_one_is_recorded(
    store_path: Path, layout: Any
) -> None:
    async with SQLiteStore(store_path) as store:
        response = await export_over_http(layout(store), {"x-request-id": "not a token!"})
        event = await the_export(store)
    assert event.request_id is not None and event.request_id != "not a token!"
    assert response.headers["x-request-id"] == event.request_id
