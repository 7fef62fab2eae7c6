"""The example app's sign-in returns a browser to the page it came from — and only to a
page of this site (an open redirect would let a link to it send people anywhere).

Both frameworks (Starlette and Litestar share ``auth.py`` and ``pages.py``), over httpx.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from example_app import app as starlette_app
from example_app import litestar_app
from example_app.auth import return_path
from example_app.settings import Settings

from auditmw import AuditStore, EventFilter

from ._asgi import client_for as asgi_client
from ._example import ADMIN as ADMIN_ACCOUNT
from ._example import MEMBER as MEMBER_ACCOUNT
from ._example import sign_in_form

BROWSER = {"accept": "text/html", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
ADMIN = sign_in_form(ADMIN_ACCOUNT)
MEMBER = sign_in_form(MEMBER_ACCOUNT)
HOSTILE = [
    "//evil.example/",
    "//evil.example",
    "///evil.example",  # browsers skip any number of slashes before a host
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/admin/audit/\\..\\",
    "/\t/evil.example",
    "/ /evil.example",
    "/\r\nSet-Cookie: x=1",
    "/%0d%0a\n",
    "/\x00",
    "/é",
    "evil.example",
    "admin/audit/",
    "",
    "/" + "a" * 3000,
]


@pytest.fixture(params=["starlette", "litestar"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The app with its databases open (opened by hand: see test_example_app_litestar)."""
    module = starlette_app if request.param == "starlette" else litestar_app
    (tmp_path / "data").mkdir()
    application: Any = module.create_app(Settings(data_dir=tmp_path / "data"))
    async with application.state.db, application.state.store:
        yield application


client_for = functools.partial(asgi_client, base_url="http://example.test")


def hidden_next(page: str) -> str | None:
    marker = '<input type="hidden" name="next" value="'
    if marker not in page:
        return None
    return page.split(marker, 1)[1].split('"', 1)[0]


async def test_a_browser_signs_in_and_returns_to_the_dashboard(app: Any) -> None:
    wanted = "/admin/audit/?action=user.*&outcome=success"
    async with client_for(app) as browser:
        redirect = await browser.get(wanted, headers=BROWSER)
        assert redirect.status_code == 303
        sign_in_page = redirect.headers["location"]
        assert parse_qs(urlsplit(sign_in_page).query) == {"next": [wanted]}

        page = await browser.get(sign_in_page, headers=BROWSER)
        assert page.status_code == 200
        assert hidden_next(page.text) == "/admin/audit/?action=user.*&amp;outcome=success"

        # A wrong password keeps the way back in the form shown again.
        wrong = await browser.post("/auth/sign-in", data={**ADMIN, "password": "x", "next": wanted})
        assert wrong.status_code == 401
        assert hidden_next(wrong.text) == "/admin/audit/?action=user.*&amp;outcome=success"

        signed_in = await browser.post("/auth/sign-in", data={**ADMIN, "next": wanted})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == wanted
        dashboard = await browser.get(wanted, headers=BROWSER)
    assert dashboard.status_code == 200
    assert "text/html" in dashboard.headers["content-type"]
    store: AuditStore = app.state.store
    signed = await store.query(EventFilter(action="user.signed_in"))
    assert [event.user_email for event in signed.events] == ["admin@example.com"]


async def test_an_api_client_still_gets_401_json_with_the_challenge(app: Any) -> None:
    async with client_for(app) as client:
        response = await client.get("/admin/audit/events")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == 'Basic realm="auditmw example"'
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_member_gets_the_403_page(app: Any) -> None:
    async with client_for(app) as browser:
        await browser.post("/auth/sign-in", data=MEMBER)
        page = await browser.get("/admin/audit/", headers=BROWSER)
    assert page.status_code == 403
    assert "<h1>You may not use the audit log</h1>" in page.text


@pytest.mark.parametrize("target", HOSTILE)
async def test_sign_in_never_redirects_off_site(app: Any, target: str) -> None:
    assert return_path(target) is None
    async with client_for(app) as browser:
        page = await browser.get("/", params={"next": target})
        signed_in = await browser.post("/auth/sign-in", data={**ADMIN, "next": target})
    assert page.status_code == 200
    assert hidden_next(page.text) is None  # not even carried along
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"


@pytest.mark.parametrize(
    "target", ["/", "/admin/audit/", "/admin/audit/events?search=%2F%2Fevil", "/a//b", "/%5Cx"]
)
def test_local_paths_are_followed(target: str) -> None:
    assert return_path(target) == target


async def test_a_json_sign_in_is_unchanged(app: Any) -> None:
    async with client_for(app) as client:
        response = await client.post("/auth/sign-in", json={**ADMIN, "next": "/admin/audit/"})
    assert response.status_code == 200
    assert response.json()["user"]["email"] == "admin@example.com"
