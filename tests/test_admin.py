"""The admin app over real HTTP (httpx against the ASGI app) and a real SQLite store."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request

from auditmw import Actor, AdminApp, EventFilter, NewEvent, SQLiteStore
from auditmw._admin.openapi import openapi_document
from auditmw._admin.pages import DASHBOARD_DIR
from auditmw._stores.filters import MAX_PARAM_CHARS
from auditmw._stores.jsonl import verify_jsonl

from ._asgi import client_for
from .test_query import SAMPLE, model_newest_first, write_events

ADMIN = {"x-test-user": "admin"}
VIEWER = {"x-test-user": "viewer"}
ADMIN_USER = Actor(user_id="admin-1", user_email="admin@example.com")


def authorize(request: Request) -> Actor | bool | None:
    """The test's access rule: a header names the user (a real app reads its session)."""
    who = request.headers.get("x-test-user")
    if who is None:
        return None
    return ADMIN_USER if who == "admin" else False


async def fetch_all_ids(
    client: httpx.AsyncClient, params: dict[str, str], page_size: int = 100
) -> list[str]:
    """The ids of every event ``GET /events`` lists for ``params``, page by page (as the
    admin), following ``next_cursor`` to the end."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": str(page_size), **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/events", params=query, headers=ADMIN)).json()
        ids += [event["id"] for event in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


@pytest.fixture
async def seeded(store_path: Path) -> AsyncIterator[tuple[SQLiteStore, list[Any]]]:
    written = await write_events(store_path, SAMPLE)
    async with SQLiteStore(store_path) as store:
        yield store, written


@pytest.fixture
async def client(seeded: tuple[SQLiteStore, list[Any]]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(AdminApp(seeded[0], authorize=authorize)) as opened:
        yield opened


async def exports_recorded(store: SQLiteStore) -> list[Any]:
    return (await store.query(EventFilter(action="export.requested"))).events


# --- /events -------------------------------------------------------------------------------


async def test_events_page_shape(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]
) -> None:
    _, written = seeded
    response = await client.get("/events", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"events", "next_cursor", "limit"}
    assert body["limit"] == 50 and body["next_cursor"] is None
    assert [e["id"] for e in body["events"]] == model_newest_first(written, EventFilter())
    by_id = {event.id: event for event in written}
    for event in body["events"]:
        assert event == by_id[event["id"]].to_dict()  # every field, seq, hash, prev_hash too


@pytest.mark.parametrize(
    "params",
    [
        {"user_id": "u1"},
        {"action": "project.*"},
        {"action": "auth.login", "user_id": "u1"},
        {"resource": "project", "resource_id": "P-1"},
        {"outcome": "failure"},
        {"from": "2024-05-02", "to": "2024-05-03"},  # to: a date, the whole day
        {"from": "2024-05-01T00:00:02Z"},
        {"to": "2024-05-02T02:00:00+02:00"},
        {"search": "EXAMPLE"},
        {"search": "%_"},
        {"user_email": "bob@example.com", "search": "proj"},
    ],
)
async def test_cursor_pages_over_http(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]], params: dict[str, str]
) -> None:
    from auditmw._admin.parameters import parse_filter

    _, written = seeded
    ids = await fetch_all_ids(client, params, page_size=2)
    assert ids == model_newest_first(written, parse_filter(params))


async def test_page_numbers_for_simple_clients(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]
) -> None:
    _, written = seeded
    expected = model_newest_first(written, EventFilter())
    pages = []
    for page in (1, 2, 3, 4, 5):
        body = (await client.get(f"/events?limit=3&page={page}", headers=ADMIN)).json()
        assert body["page"] == page
        pages.append([event["id"] for event in body["events"]])
    assert pages == [expected[0:3], expected[3:6], expected[6:9], [], []]


LONG = "x" * (MAX_PARAM_CHARS + 1)


@pytest.mark.parametrize(
    ("query", "param", "code"),
    [
        ("limit=abc", "limit", "invalid_parameter"),
        ("limit=0", "limit", "invalid_parameter"),
        ("limit=101", "limit", "invalid_parameter"),
        ("limit=-5", "limit", "invalid_parameter"),
        ("limit=1e3", "limit", "invalid_parameter"),
        ("limit=" + "9" * 5000, "limit", "invalid_parameter"),
        ("page=0", "page", "invalid_parameter"),
        ("page=2&cursor=abc", "page", "invalid_parameter"),
        ("from=yesterday", "from", "invalid_parameter"),
        ("to=2024-02-30", "to", "invalid_parameter"),
        ("from=2024-05-02&to=2024-05-01", "to", "invalid_parameter"),
        ("cursor=forged", "cursor", "invalid_cursor"),
        ("cursor=" + "A" * 600, "cursor", "invalid_cursor"),
        ("cursor=" + "A" * 5000, "cursor", "invalid_parameter"),
        ("outcome=unknown", "outcome", "invalid_parameter"),
        ("outcome=SUCCESS", "outcome", "invalid_parameter"),
        ("search=" + LONG, "search", "invalid_parameter"),
        ("user_id=" + LONG, "user_id", "invalid_parameter"),
        ("action=" + "y" * 60_000, "action", "invalid_parameter"),
        ("search=a%00b", "search", "invalid_parameter"),
        ("search=%0a", "search", "invalid_parameter"),
        ("acton=project.created", "acton", "unknown_parameter"),
        ("limit=5&limit=6", "limit", "invalid_parameter"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, query: str, param: str, code: str
) -> None:
    response = await client.get(f"/events?{query}", headers=ADMIN)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param
    assert error["message"].startswith(f"{param}: ")
    assert len(response.content) < 2000  # the bad value is not echoed back in full


async def test_a_cursor_from_other_filters_is_rejected(client: httpx.AsyncClient) -> None:
    body = (await client.get("/events?limit=1&action=project.*", headers=ADMIN)).json()
    cursor = body["next_cursor"]
    assert (
        await client.get(f"/events?limit=1&action=project.*&cursor={cursor}", headers=ADMIN)
    ).status_code == 200
    response = await client.get(f"/events?limit=1&action=auth.*&cursor={cursor}", headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "foreign_cursor"


async def test_empty_parameters_are_ignored(client: httpx.AsyncClient) -> None:
    # An HTML form sends every field, filled or not.
    response = await client.get("/events?search=&action=&from=&to=&limit=&cursor=", headers=ADMIN)
    assert response.status_code == 200 and len(response.json()["events"]) == len(SAMPLE)


# --- /events/{id}, /facets, /verify, /openapi.json -----------------------------------------


async def test_one_event(client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]) -> None:
    _, written = seeded
    response = await client.get(f"/events/{written[3].id}", headers=ADMIN)
    assert response.status_code == 200 and response.json() == written[3].to_dict()
    for missing in ("nope", "x" * 5000, "%2e%2e", "'; DROP TABLE auditmw_events; --"):
        response = await client.get(f"/events/{missing}", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_facets(client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]) -> None:
    _, written = seeded
    body = (await client.get("/facets", headers=ADMIN)).json()
    assert body == {
        "actions": sorted({e.action for e in written}),
        "resources": sorted({e.resource for e in written}),
        "outcomes": sorted({e.outcome for e in written}),
    }
    assert (await client.get("/facets?x=1", headers=ADMIN)).status_code == 400


async def test_verify_reports_the_chain(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]], store_path: Path
) -> None:
    responses = await asyncio.gather(*(client.get("/verify", headers=ADMIN) for _ in range(3)))
    for response in responses:
        assert response.status_code == 200
        body = response.json()
        assert body["ok"] is True and body["entries"] == len(SAMPLE) and body["findings"] == []
    conn = sqlite3.connect(store_path, isolation_level=None)
    conn.executescript(
        "DROP TRIGGER auditmw_events_no_update;"
        "UPDATE auditmw_events SET entry = CAST(replace(CAST(entry AS TEXT), 'P-1', 'P-9') AS BLOB)"
        " WHERE seq = 1;"
    )
    conn.close()
    # A recent enough result is returned as it is (the dashboard's page load asks so)...
    cached = (await client.get("/verify?max_age=300", headers=ADMIN)).json()
    assert cached == responses[0].json() and cached["ok"] is True
    # ...while a plain request verifies now, and says when.
    body = (await client.get("/verify", headers=ADMIN)).json()
    assert body["ok"] is False and body["findings"][0]["seq"] == 1
    assert body["checked_at"] > cached["checked_at"]
    assert (await client.get("/verify?max_age=300", headers=ADMIN)).json() == body
    assert (await client.get("/verify?max_age=0", headers=ADMIN)).json()["checked_at"] > body[
        "checked_at"
    ]


@pytest.mark.parametrize("max_age", ["-1", "86401", "abc", "1.5", "1e3"])
async def test_verify_refuses_a_bad_max_age(client: httpx.AsyncClient, max_age: str) -> None:
    response = await client.get(f"/verify?max_age={max_age}", headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_age"


async def test_openapi_document_describes_the_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json", headers=ADMIN)
    assert response.status_code == 200
    document = response.json()
    assert document.pop("servers") == [
        {"url": "/", "description": "This admin app, where it is mounted"}
    ]
    assert document == orjson.loads(orjson.dumps(openapi_document()))
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/", "/static/{path}", "/events", "/events/{event_id}", "/events/{event_id}/proof",
        "/facets", "/histogram",
        "/export.csv", "/export.jsonl", "/streams", "/verify", "/openapi.json",
    }  # fmt: skip
    params = {p["name"] for p in document["paths"]["/events"]["get"]["parameters"]}
    assert params == {
        "user_id", "user_email", "action", "resource", "resource_id", "outcome", "from", "to",
        "search", "limit", "cursor", "page",
    }  # fmt: skip


# --- exports -------------------------------------------------------------------------------


async def test_csv_export(client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]) -> None:
    store, written = seeded
    response = await client.get("/export.csv?action=project.*", headers=ADMIN)
    assert response.status_code == 200
    today = datetime.now(UTC).date().isoformat()
    assert (
        response.headers["content-disposition"] == f'attachment; filename="audit-logs-{today}.csv"'
    )
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert rows[0][:6] == ["Timestamp", "User", "Action", "Resource", "Resource ID", "IP Address"]
    expected = [
        e for e in sorted(written, key=lambda e: (e.log, e.seq)) if e.action.startswith("project.")
    ]
    assert [row[11] for row in rows[1:]] == [e.hash for e in expected]  # chain order
    [record] = await exports_recorded(store)
    assert record.details == {"format": "csv", "filters": {"action": "project.*"}}
    assert (record.user_id, record.user_email) == ("admin-1", "admin@example.com")
    assert record.ip_address == "127.0.0.1"


async def test_jsonl_export_of_the_whole_log_verifies(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]
) -> None:
    store, _ = seeded
    response = await client.get("/export.jsonl", headers={**ADMIN, "user-agent": "auditor/1.0"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"].endswith('.jsonl"')
    lines = response.content.splitlines()
    report = verify_jsonl(lines)
    assert report.ok and not report.subset and report.entries == len(SAMPLE) + 1
    last = orjson.loads(lines[-1])  # the export's own record was committed before it
    # Format 2: the user agent is committed to in the entry, its value in the openings.
    assert last["action"] == "export.requested" and last["user_agent"] is None
    assert last["openings"]["/user_agent"][1] == '"auditor/1.0"'
    filtered = await client.get("/export.jsonl?user_id=u1", headers=ADMIN)
    report = verify_jsonl(filtered.content.splitlines())
    assert report.ok and report.subset
    assert len(await exports_recorded(store)) == 2


async def test_the_export_is_recorded_before_its_first_byte(
    seeded: tuple[SQLiteStore, list[Any]],
) -> None:
    store, _ = seeded
    async with client_for(AdminApp(store, authorize=authorize)) as client:  # noqa: SIM117
        async with client.stream("GET", "/export.csv?search=proj", headers=ADMIN) as response:
            assert response.status_code == 200
            [record] = await exports_recorded(store)  # before reading any of the body
            assert record.details == {"format": "csv", "filters": {"search": "proj"}}
            body = await response.aread()
    assert body.startswith(b"Timestamp,")


async def raw_get(app: AdminApp, path: str, headers: dict[str, str]) -> list[Any]:
    """The ASGI messages ``app`` sends for a GET (httpx joins the body parts)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    messages: list[Any] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client never disconnects during the test
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages


async def test_exports_stream_in_many_chunks(store_path: Path) -> None:
    events = [
        (NewEvent("bulk.write", "item", f"i-{n}", details={"pad": "x" * 200}), SAMPLE[0][1])
        for n in range(3000)
    ]
    await write_events(store_path, events)
    async with SQLiteStore(store_path) as store:
        app = AdminApp(store, authorize=authorize)
        for path in ("/export.csv", "/export.jsonl"):
            messages = await raw_get(app, path, ADMIN)
            assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200
            bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
            assert len(bodies) > 10, path  # sent as it is read, a chunk at a time
            assert sum(map(len, bodies)) > 900_000


async def test_no_export_when_it_cannot_be_recorded(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]], store_path: Path
) -> None:
    conn = sqlite3.connect(store_path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER refuse_exports BEFORE INSERT ON auditmw_events "
        "WHEN new.action = 'export.requested' BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    conn.close()
    for path in ("/export.csv", "/export.jsonl"):
        response = await client.get(path, headers=ADMIN)
        assert response.status_code == 422  # refused data: asking again will not help
        assert response.json()["error"]["code"] == "export_not_recorded"
        assert "retry-after" not in response.headers
        assert "Timestamp" not in response.text and "P-1" not in response.text


async def test_an_admin_identity_too_long_to_record_gets_no_export(
    seeded: tuple[SQLiteStore, list[Any]],
) -> None:
    store, _ = seeded
    app = AdminApp(store, authorize=lambda request: Actor(user_id="u" * 10_000))
    async with client_for(app) as client:
        response = await client.get("/export.csv")
    assert response.status_code == 500 and response.json()["error"]["code"] == "export_not_recorded"
    assert await exports_recorded(store) == []


async def test_head_of_an_export_records_nothing(
    client: httpx.AsyncClient, seeded: tuple[SQLiteStore, list[Any]]
) -> None:
    response = await client.head("/export.csv", headers=ADMIN)
    assert response.status_code == 200 and response.content == b""
    assert "attachment" in response.headers["content-disposition"]
    assert await exports_recorded(seeded[0]) == []


async def test_exports_take_filters_only(client: httpx.AsyncClient) -> None:
    for query in ("limit=5", "cursor=x", "from=nope", "outcome=maybe"):
        response = await client.get(f"/export.csv?{query}", headers=ADMIN)
        assert response.status_code == 400, query


# --- the page, static files, headers, errors -----------------------------------------------


async def test_dashboard_and_static_files(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers=ADMIN)
    index = DASHBOARD_DIR / "index.html"
    if index.exists():
        assert response.status_code == 200 and response.content == index.read_bytes()
        assert "script-src 'self'" in response.headers["content-security-policy"]
    else:
        assert response.status_code == 404
    for file in sorted(DASHBOARD_DIR.glob("*")):
        response = await client.get(f"/static/{file.name}", headers=ADMIN)
        assert response.status_code == 200 and response.content == file.read_bytes()
    for path in (
        "/static/missing.js",
        "/static/%2e%2e/_admin.py",
        "/static/..%2f_admin.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/",
        "/static",
    ):
        response = await client.get(path, headers=ADMIN, follow_redirects=True)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


async def test_every_response_is_uncacheable_and_unframeable(client: httpx.AsyncClient) -> None:
    for path, headers in (
        ("/events", ADMIN),
        ("/events", {}),
        ("/nope", ADMIN),
        ("/export.csv", ADMIN),
    ):
        response = await client.get(path, headers=headers)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


async def test_unknown_paths_and_methods_are_json_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope", headers=ADMIN)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = await client.post("/events", headers=ADMIN)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_a_closed_store_is_a_503(store_path: Path) -> None:
    store = SQLiteStore(store_path)
    async with client_for(AdminApp(store, authorize=authorize)) as client:
        for path in ("/events", "/facets", "/export.csv", "/verify", "/events/x"):
            response = await client.get(path, headers=ADMIN)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "store_unavailable"


def test_the_admin_app_needs_an_authorize_callable(store_path: Path) -> None:
    with pytest.raises(TypeError):
        AdminApp(SQLiteStore(store_path), authorize=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AdminApp(SQLiteStore(store_path))  # type: ignore[call-arg]
