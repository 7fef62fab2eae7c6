"""Browsers and API clients without access (``AdminAuth``), through a host app over httpx.

A browser's page load is sent to the sign-in page with the path it asked for, or gets a
small HTML page (401 with the challenge, 403); an API client — ``fetch()``, curl, anything
asking for JSON — keeps the JSON errors, with the challenge on 401. The headers below
are what Chromium sends (recorded from Debian's chromium through Playwright).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount

from auditmw import Actor, AdminApp, AdminAuth, SQLiteStore
from auditmw._admin.access import PAGE_CSP

from ._admin_mount import CHALLENGE, MOUNT
from .test_query import SAMPLE, write_events

# Chromium opening a page (typed URL or a link), over http to 127.0.0.1.
NAVIGATION = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/jxl,image/avif,"
    "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "sec-fetch-site": "none",
    "sec-fetch-mode": "navigate",
    "sec-fetch-user": "?1",
    "sec-fetch-dest": "document",
    "upgrade-insecure-requests": "1",
}
# Chromium's fetch() from the dashboard, and with its default Accept.
DASHBOARD_FETCH = {
    "accept": "application/json",
    "sec-fetch-site": "same-origin",
    "sec-fetch-mode": "cors",
    "sec-fetch-dest": "empty",
}
PLAIN_FETCH = {**DASHBOARD_FETCH, "accept": "*/*"}
# Firefox over plain http to another host: no fetch metadata, only Accept.
NAVIGATION_WITHOUT_METADATA = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
}
ROLE = "x-role"  # the test host's authentication: a header naming the role


def authorize(request: Request) -> Actor | bool | None:
    role = request.headers.get(ROLE)
    if role is None:
        return None
    return Actor(user_id="u-admin") if role == "admin" else False


@pytest.fixture
async def store(store_path: Path) -> AsyncIterator[SQLiteStore]:
    await write_events(store_path, SAMPLE)
    async with SQLiteStore(store_path) as opened:
        yield opened


def host(store: SQLiteStore, auth: AdminAuth | None, mount: str = MOUNT) -> Starlette:
    return Starlette(routes=[Mount(mount, app=AdminApp(store, authorize=authorize, auth=auth))])


def client(app: Any, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://example.test")


SIGN_IN = AdminAuth(sign_in_url="/sign-in", challenge=CHALLENGE)


@pytest.mark.parametrize(
    ("headers", "method", "page_load"),
    [
        (NAVIGATION, "GET", True),
        (NAVIGATION, "HEAD", True),
        (NAVIGATION_WITHOUT_METADATA, "GET", True),
        ({"accept": "text/html"}, "GET", True),
        ({"accept": "application/json;q=0.5, text/html"}, "GET", True),
        (NAVIGATION, "POST", False),  # a form post: nothing to return to
        ({**NAVIGATION, "sec-fetch-dest": "iframe"}, "GET", False),  # framing is denied
        (DASHBOARD_FETCH, "GET", False),
        (PLAIN_FETCH, "GET", False),
        ({**PLAIN_FETCH, "accept": "text/html"}, "GET", False),  # a script asking for HTML
        ({"accept": "*/*"}, "GET", False),  # curl
        ({}, "GET", False),  # no Accept at all
        ({"accept": "application/json"}, "GET", False),
        ({"accept": "text/html, application/json"}, "GET", False),  # a tie goes to JSON
        ({"accept": "text/html;q=0.5, application/json"}, "GET", False),
        ({"accept": "text/html;q=0.5, */*;q=0.9"}, "GET", False),
        ({"accept": "text/html;q=nan, */*;q=0.1"}, "GET", False),  # q is not a number
        ({"accept": "text/html;q=2"}, "GET", False),  # q out of range
    ],
)
async def test_a_browser_page_load_is_told_from_an_api_call(
    store: SQLiteStore, headers: dict[str, str], method: str, page_load: bool
) -> None:
    async with client(host(store, SIGN_IN)) as http:
        response = await http.request(method, f"{MOUNT}/events", headers=headers)
    if page_load:
        assert response.status_code == 303
        assert response.headers["location"].startswith("/sign-in?next=")
        assert "www-authenticate" not in response.headers
    else:
        assert response.status_code == 401  # (even a POST: access is checked first)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "unauthenticated"
        # A browser's script gets no challenge: the browser would hold the request and
        # open a password dialog of its own.
        script = headers.get("sec-fetch-mode") not in (None, "navigate")
        assert response.headers.get("www-authenticate") == (None if script else CHALLENGE)


def next_of(location: str, param: str = "next") -> str:
    [value] = parse_qs(urlsplit(location).query)[param]
    return value


@pytest.mark.parametrize(
    "path",
    [
        f"{MOUNT}/",
        f"{MOUNT}/events?action=project.*&search=a%20b%26c&outcome=",
        f"{MOUNT}/events/ev%2F1/proof",
        f"{MOUNT}/static/dashboard.js",
        f"{MOUNT}/no/such/page?x=%3Cscript%3E",
    ],
)
async def test_the_browser_is_sent_to_sign_in_with_the_path_it_asked_for(
    store: SQLiteStore, path: str
) -> None:
    async with client(host(store, SIGN_IN)) as http:
        response = await http.get(path, headers=NAVIGATION)
    assert response.status_code == 303
    location = response.headers["location"]
    assert urlsplit(location).path == "/sign-in"
    assert next_of(location) == path  # exactly as sent, percent-encoding and all
    assert response.headers["cache-control"] == "no-store"


async def test_the_return_path_keeps_the_proxy_prefix_and_the_mount_point(
    store: SQLiteStore,
) -> None:
    app = host(store, SIGN_IN, mount="/ops/log")
    async with client(app, root_path="/proxy") as http:
        response = await http.get("/proxy/ops/log/events?limit=5", headers=NAVIGATION)
    assert next_of(response.headers["location"]) == "/proxy/ops/log/events?limit=5"


async def test_the_return_path_under_litestar(store: SQLiteStore) -> None:
    from litestar import Litestar, asgi
    from litestar.types import Receive, Scope, Send

    admin = AdminApp(store, authorize=authorize, auth=SIGN_IN)

    @asgi(MOUNT, is_mount=True, copy_scope=True)
    async def audit_admin(scope: Scope, receive: Receive, send: Send) -> None:
        await admin(scope, receive, send)  # type: ignore[arg-type]

    async with client(cast(Any, Litestar([audit_admin]))) as http:
        response = await http.get(f"{MOUNT}/events?limit=5", headers=NAVIGATION)
        page = await http.get(f"{MOUNT}/", headers={**NAVIGATION, ROLE: "viewer"})
    assert response.status_code == 303
    assert next_of(response.headers["location"]) == f"{MOUNT}/events?limit=5"
    assert page.status_code == 403
    assert 'href="/"' in page.text  # Litestar keeps the host's root in root_path


@pytest.mark.parametrize(
    ("sign_in_url", "param", "expected"),
    [
        ("/login?from=audit", "next", "/login?from=audit&next=%2Fadmin%2Faudit%2F"),
        ("https://id.example/authorize", "return_to", "https://id.example/authorize?return_to="),
    ],
)
async def test_the_sign_in_url_and_parameter_are_configurable(
    store: SQLiteStore, sign_in_url: str, param: str, expected: str
) -> None:
    auth = AdminAuth(sign_in_url=sign_in_url, next_param=param)
    async with client(host(store, auth)) as http:
        response = await http.get(f"{MOUNT}/", headers=NAVIGATION)
    assert response.headers["location"].startswith(expected)
    assert next_of(response.headers["location"], param) == f"{MOUNT}/"


def assert_static_page(response: httpx.Response, status: int, heading: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == PAGE_CSP
    for name, value in {
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "same-origin",
    }.items():
        assert response.headers[name] == value
    assert f"<h1>{heading}</h1>" in response.text
    assert "<script" not in response.text
    for marker in ("Ann@Example.com", "project.created", "P-1"):  # no log data
        assert marker not in response.text


async def test_without_a_sign_in_url_the_browser_gets_a_401_page_with_the_challenge(
    store: SQLiteStore,
) -> None:
    async with client(host(store, AdminAuth(challenge=CHALLENGE))) as http:
        page = await http.get(f"{MOUNT}/", headers=NAVIGATION)
        head = await http.head(f"{MOUNT}/events", headers=NAVIGATION)
        api = await http.get(f"{MOUNT}/", headers={"accept": "*/*"})
        script = await http.get(f"{MOUNT}/", headers=PLAIN_FETCH)
    assert_static_page(page, 401, "Sign in to use the audit log")
    assert page.headers["www-authenticate"] == CHALLENGE
    assert 'href="/"' in page.text  # the host app's home
    assert (head.status_code, head.content) == (401, b"")
    assert head.headers["www-authenticate"] == CHALLENGE
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "unauthenticated"
    assert api.headers["www-authenticate"] == CHALLENGE
    assert (script.status_code, script.json()) == (401, api.json())
    assert "www-authenticate" not in script.headers


async def test_without_any_auth_configured_nothing_claims_a_challenge(store: SQLiteStore) -> None:
    async with client(host(store, None)) as http:
        page = await http.get(f"{MOUNT}/", headers=NAVIGATION)
        api = await http.get(f"{MOUNT}/events")
    assert_static_page(page, 401, "Sign in to use the audit log")
    assert "www-authenticate" not in page.headers
    assert (api.status_code, api.headers["content-type"]) == (401, "application/json")
    assert "www-authenticate" not in api.headers


async def test_a_signed_in_browser_without_access_gets_a_403_page(store: SQLiteStore) -> None:
    viewer = {ROLE: "viewer"}
    async with client(host(store, SIGN_IN), root_path="/proxy") as http:
        page = await http.get(f"/proxy{MOUNT}/", headers={**NAVIGATION, **viewer})
        api = await http.get(f"/proxy{MOUNT}/events", headers=viewer)
    assert_static_page(page, 403, "You may not use the audit log")
    assert "www-authenticate" not in page.headers  # signing in again would not help
    assert 'href="/proxy/"' in page.text  # the host's home, behind the proxy prefix
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "forbidden"
    assert "www-authenticate" not in api.headers


async def test_the_page_escapes_the_home_link(store: SQLiteStore) -> None:
    app = host(store, None)

    async def hostile_root(scope: Any, receive: Any, send: Any) -> None:
        scope["app_root_path"] = '/"><script>alert(1)</script>'
        await app(scope, receive, send)

    async with client(hostile_root) as http:
        page = await http.get(f"{MOUNT}/", headers=NAVIGATION)
    assert page.status_code == 401
    assert "<script" not in page.text
    assert 'href="/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;/"' in page.text


async def test_the_admin_is_let_in_whatever_the_headers(store: SQLiteStore) -> None:
    admin = {ROLE: "admin"}
    async with client(host(store, SIGN_IN)) as http:
        page = await http.get(f"{MOUNT}/", headers={**NAVIGATION, **admin})
        events = await http.get(f"{MOUNT}/events", headers={**DASHBOARD_FETCH, **admin})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert events.status_code == 200 and events.json()["events"]


async def test_an_http_exception_from_authorize_is_answered_as_raised(store: SQLiteStore) -> None:
    def expired(request: Request) -> Actor:
        raise HTTPException(401, "session expired", headers={"WWW-Authenticate": "Bearer"})

    app = Starlette(routes=[Mount(MOUNT, app=AdminApp(store, authorize=expired, auth=SIGN_IN))])
    async with client(app) as http:
        response = await http.get(f"{MOUNT}/", headers=NAVIGATION)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["message"] == "session expired"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sign_in_url": "sign-in"}, "sign_in_url"),
        ({"sign_in_url": "javascript:alert(1)"}, "sign_in_url"),
        ({"sign_in_url": "/sign-in\r\nSet-Cookie: a=b"}, "sign_in_url"),
        ({"sign_in_url": "/sign in"}, "sign_in_url"),
        ({"next_param": "next page"}, "next_param"),
        ({"next_param": ""}, "next_param"),
        ({"challenge": 'Basic realm="a"\r\nSet-Cookie: a=b'}, "challenge"),
        ({"challenge": " "}, "challenge"),
        ({"security_schemes": {"basic": {"scheme": "basic"}}}, "Security Scheme"),
        ({"security_schemes": {"basic": {"type": "password"}}}, "Security Scheme"),
        ({"security_schemes": {"my scheme": {"type": "http", "scheme": "basic"}}}, "name"),
    ],
)
def test_a_bad_configuration_fails_at_once(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        AdminAuth(**options)


async def test_auth_must_be_an_admin_auth(store: SQLiteStore) -> None:
    with pytest.raises(TypeError, match="AdminAuth"):
        AdminApp(store, authorize=authorize, auth={"sign_in_url": "/"})  # type: ignore[arg-type]


def test_the_schemes_are_copied() -> None:
    schemes = {"basic": {"type": "http", "scheme": "basic"}}
    auth = AdminAuth(security_schemes=schemes)
    schemes["basic"]["scheme"] = "digest"
    schemes["other"] = {"type": "http", "scheme": "bearer"}
    assert auth.security_schemes == {"basic": {"type": "http", "scheme": "basic"}}
    assert auth.security() == [{"basic": []}]
