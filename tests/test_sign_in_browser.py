"""Signing in to the audit dashboard in a real browser.

Chromium (Debian's, through Playwright: tests/_browser.py) against the real
example app (``python -m example_app`` on 127.0.0.1, Starlette and Litestar): opening the
dashboard signed out lands on the sign-in form, signing in returns to the dashboard as it
was asked for; a member gets the 403 page; the dashboard's own fetch() calls and API
clients still get 401 JSON. A host without a sign-in page (uvicorn in a thread) shows its
401 page with the ``WWW-Authenticate`` challenge, and the browser answers a Basic one.

Without chromium the module is skipped, unless ``AUDITMW_REQUIRE_BROWSER`` is set.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from example_app.auth import return_path
from playwright.sync_api import Browser, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from auditmw import Actor, AdminApp, AdminAuth, NewEvent, SQLiteStore

from ._browser import needs_chromium, new_context, watched_page
from ._servers import running_example_app, serving_in_thread

pytestmark = needs_chromium

BASIC = 'Basic realm="audit"'
BEARER = 'Bearer realm="audit"'
DASHBOARD = "/admin/audit/?outcome=success"


@pytest.fixture(scope="module", params=["starlette", "litestar"])
def example_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The example app's base URL, served by ``python -m example_app``."""
    directory = tmp_path_factory.mktemp(f"sign-in-{request.param}")
    with running_example_app(directory, "--framework", request.param) as server:
        yield server.url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser (no cookies) whose page fails the test on a script error, a dialog
    or a breach of the Content-Security-Policy."""
    with watched_page(new_context(browser)) as page:
        yield page


def sign_in(page: Page, email: str, password: str) -> None:
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_signing_in_returns_to_the_dashboard(page: Page, example_app: str) -> None:
    page.goto(example_app + DASHBOARD)
    # Sent to the sign-in form, which remembers where to go back to.
    url = urlsplit(page.url)
    assert (url.path, parse_qs(url.query)) == ("/", {"next": [DASHBOARD]})
    assert page.input_value("input[name=next]") == DASHBOARD

    sign_in(page, "admin@example.com", "wrong")  # a mistake keeps the way back
    page.wait_for_selector("p.error")
    assert page.input_value("input[name=next]") == DASHBOARD

    with page.expect_navigation(url=example_app + DASHBOARD):
        sign_in(page, "admin@example.com", "admin")
    page.wait_for_function("() => document.querySelector('#events').dataset.state === 'ready'")
    assert page.input_value("#f-outcome") == "success"  # the dashboard as it was asked for

    # Signed out in the meantime, the dashboard's own fetch() gets JSON, not a redirect.
    page.context.clear_cookies()
    with page.expect_response(lambda response: "/admin/audit/events" in response.url) as info:
        page.select_option("#f-outcome", "failure")
    response = info.value
    assert response.status == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "unauthenticated"
    page.wait_for_function("() => document.querySelector('#events').dataset.state === 'error'")


def test_a_member_is_shown_the_403_page(page: Page, example_app: str) -> None:
    page.goto(example_app + "/admin/audit/")
    with page.expect_navigation(url=example_app + "/admin/audit/") as info:
        sign_in(page, "member@example.com", "member")
    response = info.value
    assert response is not None and response.status == 403
    assert page.inner_text("h1") == "You may not use the audit log"
    assert page.evaluate("getComputedStyle(document.body).maxWidth") == "576px"  # styled
    page.click("text=Go to the home page")
    page.wait_for_url(example_app + "/")
    assert "Signed in as member@example.com" in page.inner_text("body")


def test_return_paths_resolve_as_chromium_reads_them(page: Page) -> None:
    """Chromium's own URL parser: every path ``return_path`` accepts stays on the site;
    the refused ones it reads as another host (the reason they are refused)."""
    base = "http://127.0.0.1:9/"
    accepted = ["/", "/a//b", "/.//evil.example", "/%2F%2Fevil.example", "/%5Cevil.example"]
    accepted += ["/?next=//evil.example", "/#//evil.example", "/..//evil.example"]
    refused = ["//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example"]
    refused += ["https://evil.example", "/\t/evil.example", "\t//evil.example"]
    resolve = "([path, base]) => new URL(path, base).origin"
    for path in accepted:
        assert return_path(path) == path
        assert page.evaluate(resolve, [path, base]) == base.rstrip("/"), path
    for path in refused:
        assert return_path(path) is None
        assert page.evaluate(resolve, [path, base]) != base.rstrip("/"), path


def test_an_api_client_still_gets_401_json(example_app: str) -> None:
    response = httpx.get(example_app + "/admin/audit/", headers={"accept": "*/*"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == 'Basic realm="auditmw example"'
    assert response.json()["error"]["code"] == "unauthenticated"


# --- hosts without a sign-in page -------------------------------------------------------------


@pytest.fixture(scope="module")
def host_without_sign_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A host whose clients authenticate with a header: HTTP Basic at /basic/audit, a
    bearer token at /token/audit (browsers answer only the first kind of challenge)."""
    path = tmp_path_factory.mktemp("no-sign-in") / "audit.db"
    store = SQLiteStore(path)
    credentials = {
        "Basic " + base64.b64encode(b"auditor:secret").decode(),
        "Bearer good-token",
    }

    def authorize(request: Request) -> Actor | None:
        granted = request.headers.get("authorization") in credentials
        return Actor(user_id="auditor") if granted else None

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host home")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:
            await store.append(NewEvent(action="secret.read", resource="vault"))
            yield

    def admin(challenge: str) -> AdminApp:
        return AdminApp(store, authorize=authorize, auth=AdminAuth(challenge=challenge))

    routes = [
        Route("/", home),
        Mount("/basic/audit", admin(BASIC)),
        Mount("/token/audit", admin(BEARER)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    with serving_in_thread(app) as base:
        yield base


def test_without_a_sign_in_page_the_browser_gets_the_401_page(
    page: Page, host_without_sign_in: str
) -> None:
    response = page.goto(host_without_sign_in + "/token/audit/events")
    assert response is not None and response.status == 401
    assert response.headers["www-authenticate"] == BEARER
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert page.inner_text("h1") == "Sign in to use the audit log"
    assert "secret.read" not in page.content()
    assert page.evaluate("getComputedStyle(document.body).maxWidth") == "576px"  # CSP allows it
    page.click("text=Go to the home page")
    page.wait_for_url(host_without_sign_in + "/")
    assert page.inner_text("body") == "host home"


def test_the_browser_answers_a_basic_challenge_with_its_credentials(
    browser: Browser, host_without_sign_in: str
) -> None:
    # What the browser's password dialog does: it retries the page with the credentials.
    credentials = {"username": "auditor", "password": "secret"}
    context = new_context(browser, http_credentials=credentials)
    try:
        page = context.new_page()
        response = page.goto(host_without_sign_in + "/basic/audit/")
        assert response is not None and response.status == 200
        page.wait_for_function("() => document.querySelector('#events').dataset.state === 'ready'")
        assert page.locator("#rows td.action code").all_inner_texts() == ["secret.read"]
    finally:
        context.close()
