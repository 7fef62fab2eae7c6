"""The dashboard in a real browser.

Playwright drives Debian's ``chromium`` (found on PATH; ``scripts/test`` installs it)
against a live uvicorn server on 127.0.0.1 that mounts the real admin app at
``/admin/audit`` (and, for the badges of damage, others over a tampered store and over
a store whose file is damaged, at other paths). Access is granted by a test cookie. The
store is seeded through the public API with several pages of varied events, including
XSS payloads.

Without chromium the module is skipped, unless ``AUDITMW_REQUIRE_BROWSER`` is set.
A screenshot is kept in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from auditmw import Actor, AdminApp, NewEvent, SQLiteStore

from . import _browser
from ._browser import needs_chromium, watched_page
from ._servers import serving_in_thread

pytestmark = needs_chromium
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ROLE_COOKIE = "auditmw-test-role"
DESKTOP = {"width": 1280, "height": 900}
# Far from UTC, so a dashboard that sent the date filters as UTC days would fail.
TIMEZONE = "Pacific/Kiritimati"  # UTC+14
CSV_HEADER = [
    "Timestamp",
    "User",
    "Action",
    "Resource",
    "Resource ID",
    "IP Address",
    "Outcome",
    "User Agent",
    "Request ID",
    "Details",
    "Seq",
    "Hash",
]
PAGE_SIZE = 50

# --- the seeded log -------------------------------------------------------------------------

USERS: list[tuple[str | None, str | None]] = [
    ("u_alice", "alice@example.com"),
    ("u_bob", "bob@example.org"),
    ("u_carol", None),  # an id but no email
    (None, None),  # the system
]
ACTIONS = [
    ("auth.login", "session"),
    ("project.create", "project"),
    ("project.delete", "project"),
    ("invoice.approve", "invoice"),
    ("user.role.grant", "user"),
    ("document.update", "document"),
]
OUTCOMES = ["success", "success", "failure", "denied"]
NEEDLE_RESOURCE_ID = "NeedleResource-4242-long-id"
XSS_ACTION = "<script>window.__xss = 'action'</script>"
XSS_RESOURCE = "<img src=x onerror=\"window.__xss = 'resource'\">"
XSS_DETAILS = {
    "html": "<img src=x onerror=\"window.__xss = 'details'\">",
    "script": "<script>window.__xss = 'details-script'</script>",
}
XSS_USER_AGENT = "<script>window.__xss = 'user_agent'</script>"
XSS_EMAIL = "<img src=x onerror=alert(1)>@example.com"


def seed_events() -> list[NewEvent]:
    """Several pages of varied events; the XSS events and the needle are the oldest."""
    events = [
        NewEvent(
            action=XSS_ACTION,
            resource=XSS_RESOURCE,
            resource_id="<b>bold</b>",
            details=XSS_DETAILS,
            user_email=XSS_EMAIL,
            user_agent=XSS_USER_AGENT,
            ip_address="203.0.113.66",
        ),
        NewEvent(
            action="project.update",
            resource="project",
            resource_id=NEEDLE_RESOURCE_ID,
            user_id="u_dave",
            user_email="dave@example.net",
            details={"changes": {"name": ["Old", "New"]}},
        ),
    ]
    for index in range(128):
        # Cycles of different lengths: every user does every action with most outcomes.
        user_id, email = USERS[index % len(USERS)]
        action, resource = ACTIONS[index // len(USERS) % len(ACTIONS)]
        events.append(
            NewEvent(
                action=action,
                resource=resource,
                resource_id=f"{index:04d}e1f0-7c1d-4d2b-9a55-{index:012x}",
                outcome=OUTCOMES[index // 3 % len(OUTCOMES)],  # type: ignore[arg-type]
                details={
                    "index": index,
                    "request": {"method": "POST", "path": f"/api/{resource}s"},
                    "tags": ["a", "b"],
                },
                user_id=user_id,
                user_email=email,
                ip_address=f"198.51.100.{index % 250 + 1}" if index % 5 else "2001:db8::7",
                user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
                request_id=f"req-{index:04d}",
            )
        )
    return events


SEEDED = seed_events()
TOTAL = len(SEEDED)


def expected_count(**filters: str) -> int:
    return sum(
        all(getattr(event, name) == value for name, value in filters.items()) for event in SEEDED
    )


async def _seed(path: Path, events: list[NewEvent]) -> None:
    async with SQLiteStore(path) as store:
        for event in events:  # one by one: a well-defined order, newest last
            await store.append(event)


async def _seed_streams(path: Path) -> None:
    """Two streams of the store at ``path``: "archive" up to date, "siem" 3 events behind
    and stopped by its destination's refusal."""
    async with SQLiteStore(path) as store:
        head = await store.last_seq("default")
        for name, cursor, error in (
            ("archive", head, None),
            ("siem", head - 3, "refused (stream stopped): NATS: no JetStream stream"),
        ):
            state = await store.backend.claim_stream(name, "bench", 0.0, 1.0, "t")
            assert state is not None
            saved = dataclasses.replace(
                state.with_cursor("default", cursor), last_error=error, lease_owner=None
            )
            assert await store.backend.save_stream(saved, "bench")


def tamper(path: Path) -> None:
    """Rewrite one stored entry behind the store's back (as an attacker with file access)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TRIGGER auditmw_events_no_update")
        # One more byte (still valid JSON): the entry no longer matches its hash.
        changed = conn.execute(
            "UPDATE auditmw_events SET entry = CAST(CAST(entry AS TEXT) || ' ' AS BLOB) "
            "WHERE seq = 4"
        ).rowcount
        conn.commit()
        assert changed == 1
    finally:
        conn.close()


def damage(path: Path) -> None:
    """Write garbage over the root page of an index the dashboard never reads (the
    store closed), as a failing disk would: the chain stays intact, the file does not."""
    conn = sqlite3.connect(path)
    try:
        (page,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'auditmw_events_user_email'"
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    with open(path, "r+b") as file:
        file.seek((page - 1) * size)
        file.write(b"\xff" * size)


# --- the server ---------------------------------------------------------------------------


def authorize(request: Request) -> Actor | Literal[False] | None:
    """The host app's rule for this test: a cookie names the role."""
    role = request.cookies.get(ROLE_COOKIE)
    if role is None:
        return None
    if role != "admin":
        return False
    return Actor(user_id="u_admin", user_email="admin@example.com")


def build_app(stores: dict[str, SQLiteStore]) -> Starlette:
    """A host application mounting one real admin app per store (``/admin/<name>``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for store in stores.values():
                await stack.enter_async_context(store)
            yield

    routes = [
        Mount(f"/admin/{name}", app=AdminApp(store, authorize=authorize))
        for name, store in stores.items()
    ]
    return Starlette(routes=routes, lifespan=lifespan)


@dataclass
class LiveServer:
    base: str  # e.g. http://127.0.0.1:54321

    @property
    def dashboard(self) -> str:
        return self.mount("audit")

    def mount(self, name: str) -> str:
        return f"{self.base}/admin/{name}/"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("dashboard")
    names = ("audit", "exports", "tampered", "damaged", "streaming")
    paths = {name: directory / f"{name}.db" for name in names}
    # In a thread of its own: sync Playwright may already run an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _seed(paths["audit"], SEEDED)).result()
        pool.submit(asyncio.run, _seed(paths["exports"], SEEDED)).result()  # gets exports
        pool.submit(asyncio.run, _seed(paths["tampered"], SEEDED[:10])).result()
        pool.submit(asyncio.run, _seed(paths["damaged"], SEEDED[:10])).result()
        pool.submit(asyncio.run, _seed(paths["streaming"], SEEDED[:10])).result()
        pool.submit(asyncio.run, _seed_streams(paths["streaming"])).result()
    tamper(paths["tampered"])
    damage(paths["damaged"])
    app = build_app({name: SQLiteStore(path) for name, path in paths.items()})
    with serving_in_thread(app) as base:
        yield LiveServer(base)


# --- the browser --------------------------------------------------------------------------


def new_context(
    browser: Browser, server: LiveServer, role: str | None = "admin", **options: Any
) -> BrowserContext:
    """A browser with ``role``'s cookie (None: without one), in a desktop window far from
    UTC; ``options`` (of ``Browser.new_context``) replace those settings."""
    settings = {"viewport": DESKTOP, "timezone_id": TIMEZONE, "locale": "en-US"}
    context = _browser.new_context(browser, accept_downloads=True, **(settings | options))
    if role is not None:
        context.add_cookies([{"name": ROLE_COOKIE, "value": role, "url": server.base}])
    return context


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    """An admin's page; fails the test on any script error, dialog or breach of the
    admin app's Content-Security-Policy."""
    with watched_page(new_context(browser, live_server)) as page:
        yield page


def loads(page: Page, element: str = "#events") -> int:
    """How many loads ``element`` (the table; the chart: ``#chart``) has finished."""
    return int(page.get_attribute(element, "data-loads") or 0)


def finished_loading(element: str) -> str:
    """A predicate for ``wait_for_function``, given ``loads`` before an action: true once
    ``element`` finished the load the action started. In the same document, its load
    counter went up; after a full navigation (reload), the new document loaded once."""
    return f"""before => {{
    const element = document.querySelector("{element}");
    if (!element || element.dataset.state === "loading") return false;
    const count = Number(element.dataset.loads || 0);
    return window.__sameDocument ? count > before : count > 0;
}}"""


LOADED = finished_loading("#events")


# Predicates are functions: the dashboard's CSP forbids eval, which expressions would need.
CHAIN_CHECKED = "() => document.querySelector('#chain').dataset.state !== 'checking'"
STREAMS_SHOWN = "() => !document.querySelector('#streams').hidden"


def wait_loaded(page: Page) -> None:
    """Wait for the first load of a freshly opened page."""
    page.wait_for_function(LOADED, arg=0)


def act(page: Page, action: Callable[[], object]) -> None:
    """Do something that reloads the table (in place or by navigating); wait for it."""
    before = loads(page)
    page.evaluate("window.__sameDocument = true")
    action()
    page.wait_for_function(LOADED, arg=before)


def enter(page: Page, selector: str, text: str) -> Callable[[], None]:
    """Type ``text`` into a field and press Enter (which applies it at once)."""

    def action() -> None:
        page.fill(selector, text)
        page.press(selector, "Enter")

    return action


def open_dashboard(
    page: Page, server: LiveServer, query: str = "", *, mount: str = "audit"
) -> None:
    response = page.goto(server.mount(mount) + (f"?{query}" if query else ""))
    assert response is not None and response.status == 200
    wait_loaded(page)


def column(page: Page, name: str) -> list[str]:
    return page.locator(f"#rows tr.event-row td.{name}").all_inner_texts()


def url_query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def row_count(page: Page) -> int:
    return page.locator("#rows tr.event-row").count()


def event_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#rows tr.event-row").evaluate_all(
        "rows => rows.map(row => row.dataset.id)"
    )
    return ids


# --- tests --------------------------------------------------------------------------------


def test_first_page_table_details_and_chain_badge(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server)
    assert page.get_attribute("#events", "data-state") == "ready"
    assert row_count(page) == PAGE_SIZE
    newest = SEEDED[-1]
    first = page.locator("#rows tr.event-row").first

    # Time: the viewer's local time with its offset (a UTC+14 zone here); the exact UTC
    # time in the tooltip (more in test_dashboard_activity).
    time_element = first.locator("time")
    utc = time_element.get_attribute("datetime")
    assert utc is not None and utc.endswith("Z")
    local = datetime.fromisoformat(utc).astimezone(ZoneInfo(TIMEZONE))
    millis = local.microsecond // 1000
    assert time_element.inner_text() == f"{local:%Y-%m-%d %H:%M:%S}.{millis:03d} +14:00"
    assert time_element.get_attribute("title") == utc.replace("T", " ")[:-1] + " UTC"

    # User: email, else id, else "System".
    assert {"alice@example.com", "bob@example.org", "u_carol", "System"} <= set(
        column(page, "user")
    )
    assert first.locator("td.user").inner_text() == "System"
    # Action as code; resource with the first 8 characters of its id.
    assert first.locator("td.action code").inner_text() == newest.action
    assert newest.resource_id is not None
    assert first.locator("td.resource").inner_text() == (
        f"{newest.resource} #{newest.resource_id[:8]}"
    )
    assert set(column(page, "outcome")) == {"success", "failure", "denied"}
    assert "2001:db8::7" in column(page, "ip")

    # Details expand to formatted JSON (and the event's other fields).
    toggle = first.locator("button.toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    detail = page.locator("#rows tr.detail-row").first
    json_text = detail.locator("pre.json").inner_text()
    assert json.loads(json_text) == newest.details
    assert '\n  "index": 127,\n' in json_text  # indented, one member a line
    assert newest.user_agent is not None and newest.user_agent in detail.inner_text()
    event_id = first.get_attribute("data-id")
    assert event_id is not None and event_id in detail.inner_text()

    # The chain badge (the verification runs in the background).
    page.wait_for_function(CHAIN_CHECKED)
    badge = page.locator("#chain")
    assert badge.get_attribute("data-state") == "ok"
    assert badge.inner_text() == f"Chain intact · {TOTAL} events"
    assert "checked" in (badge.get_attribute("title") or "")
    # A page load may show a recent result; "Verify again" asks for a new verification.
    with page.expect_request(lambda request: request.url.endswith("/verify")):
        page.click("#reverify")
    page.wait_for_function(CHAIN_CHECKED)
    assert badge.get_attribute("data-state") == "ok"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    toggle.click()
    assert detail.is_hidden()

    with page.expect_request(lambda request: request.url.endswith("/verify?max_age=300")):
        page.reload()
    page.wait_for_function(CHAIN_CHECKED)
    assert badge.get_attribute("data-state") == "ok"


def test_the_streams_badge_shows_a_stopped_stream_and_the_lag(
    page: Page, live_server: LiveServer
) -> None:
    open_dashboard(page, live_server, mount="streaming")
    badge = page.locator("#streams")
    page.wait_for_function(STREAMS_SHOWN)
    assert badge.get_attribute("data-state") == "damaged"
    assert badge.inner_text() == "Stream siem stopped"
    title = badge.get_attribute("title") or ""
    assert "archive: 0 events behind" in title
    assert "siem: 3 events behind (refused (stream stopped): NATS: no JetStream stream)" in title
    # A store without streams shows no streams badge (once its answer came).
    open_dashboard(page, live_server)
    with page.expect_response(lambda response: response.url.endswith("/streams")):
        page.reload()
    page.wait_for_function(CHAIN_CHECKED)
    assert page.locator("#streams").is_hidden()


def test_filters_are_applied_and_reflected_in_the_url(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server)
    # Resource choices are the values present in the log.
    page.wait_for_function("() => document.querySelectorAll('#f-resource option').length > 1")
    options = page.locator("#f-resource option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["", *sorted({event.resource for event in SEEDED})]

    act(page, lambda: page.select_option("#f-resource", "project"))
    assert {text.split(" #")[0] for text in column(page, "resource")} == {"project"}
    assert row_count(page) == expected_count(resource="project")
    assert url_query(page) == {"resource": ["project"]}

    act(page, lambda: page.select_option("#f-outcome", "denied"))
    assert set(column(page, "outcome")) == {"denied"}
    assert row_count(page) == expected_count(resource="project", outcome="denied")
    assert url_query(page) == {"resource": ["project"], "outcome": ["denied"]}

    # Action: a prefix with a trailing * (typed, applied on Enter), then an exact one.
    act(page, lambda: page.select_option("#f-outcome", ""))
    act(page, enter(page, "#f-action", "project.*"))
    assert set(column(page, "action")) == {"project.create", "project.delete", "project.update"}
    act(page, enter(page, "#f-action", "project.create"))
    assert set(column(page, "action")) == {"project.create"}
    assert row_count(page) == expected_count(action="project.create")

    # User: an email filters by user_email, anything else by user_id.
    act(page, enter(page, "#f-user", "bob@example.org"))
    assert url_query(page) == {
        "action": ["project.create"],
        "resource": ["project"],
        "user_email": ["bob@example.org"],
    }
    assert set(column(page, "user")) == {"bob@example.org"}
    rows = page.locator("#rows tr.event-row").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert len(rows) == expected_count(action="project.create", user_email="bob@example.org") > 0

    # Reloading the URL restores the filters and the same rows.
    act(page, page.reload)
    assert page.input_value("#f-resource") == "project"
    assert page.input_value("#f-action") == "project.create"
    assert page.input_value("#f-user") == "bob@example.org"
    assert event_ids(page) == rows

    # Back goes to the previous filters; forward returns.
    act(page, page.go_back)
    assert page.input_value("#f-user") == ""
    assert "user_email" not in url_query(page)
    assert len(set(column(page, "user"))) > 1
    act(page, page.go_forward)
    assert page.input_value("#f-user") == "bob@example.org"
    assert event_ids(page) == rows

    # Clear resets everything.
    act(page, lambda: page.click("#clear"))
    assert url_query(page) == {}
    assert page.input_value("#f-action") == ""
    assert row_count(page) == PAGE_SIZE


def test_a_shared_url_restores_its_filters(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server, "resource=invoice&outcome=success&user_id=u_alice")
    assert page.input_value("#f-resource") == "invoice"
    assert page.input_value("#f-outcome") == "success"
    assert page.input_value("#f-user") == "u_alice"
    count = expected_count(resource="invoice", outcome="success", user_id="u_alice")
    assert count > 0 and row_count(page) == count
    assert set(column(page, "user")) == {"alice@example.com"}


def test_a_page_link_that_does_not_fit_starts_from_the_newest_page(
    page: Page, live_server: LiveServer
) -> None:
    open_dashboard(page, live_server, "outcome=denied&cursor=not-a-real-cursor")
    assert page.get_attribute("#events", "data-state") == "ready"
    assert url_query(page) == {"outcome": ["denied"]}
    assert row_count(page) == expected_count(outcome="denied")
    assert "showing the newest events" in page.inner_text("#status")


def test_search(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server)
    # A case-insensitive substring, applied on Enter.
    act(
        page,
        enter(page, "#f-search", "NEEDLERESOURCE-4242"),
    )
    assert column(page, "user") == ["dave@example.net"]
    assert url_query(page) == {"search": ["NEEDLERESOURCE-4242"]}

    # Typing applies by itself after a pause.
    act(page, lambda: page.fill("#f-search", "bob@"))
    assert set(column(page, "user")) == {"bob@example.org"}
    assert row_count(page) == expected_count(user_email="bob@example.org")

    # Under 3 characters the store cannot use its search index: only Enter runs it.
    before, query = loads(page), url_query(page)
    page.clock.install()  # the page's timers now run when the test says so
    page.fill("#f-search", "bo")
    page.clock.run_for(60_000)  # far past the typing pause: a debounced search would run
    assert url_query(page) == query
    assert page.get_attribute("#events", "data-state") != "loading"
    assert loads(page) == before
    assert page.is_visible("#f-search-hint")
    act(page, lambda: page.press("#f-search", "Enter"))
    assert url_query(page) == {"search": ["bo"]}
    assert page.is_hidden("#f-search-hint")

    # Nothing found: the empty state.
    act(page, enter(page, "#f-search", "no such thing"))
    assert page.get_attribute("#events", "data-state") == "empty"
    assert "No events match these filters" in page.inner_text("#rows")


def test_paging_forward_and_back(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server)
    pages = [event_ids(page)]
    assert page.is_disabled("#prev") and page.is_enabled("#next")
    act(page, lambda: page.click("#next"))
    pages.append(event_ids(page))
    assert page.inner_text("#page-label") == "Page 2"
    assert "cursor" in url_query(page)
    act(page, lambda: page.click("#next"))
    pages.append(event_ids(page))
    assert page.inner_text("#page-label") == "Page 3"
    assert [len(ids) for ids in pages] == [PAGE_SIZE, PAGE_SIZE, TOTAL - 2 * PAGE_SIZE]
    assert page.is_disabled("#next")
    # Newest first across pages: nothing repeated, nothing skipped.
    times = page.locator("#rows time").evaluate_all("ts => ts.map(t => t.dateTime)")
    assert times == sorted(times, reverse=True)
    assert len({id_ for ids in pages for id_ in ids}) == TOTAL

    act(page, lambda: page.click("#prev"))
    assert event_ids(page) == pages[1]
    assert page.inner_text("#page-label") == "Page 2"
    act(page, lambda: page.click("#prev"))
    assert event_ids(page) == pages[0]
    assert "cursor" not in url_query(page)
    assert page.is_disabled("#prev")

    # The browser's back button walks the same way; a reload keeps the page and its
    # way back.
    act(page, page.go_back)
    assert event_ids(page) == pages[1]
    act(page, page.reload)
    assert event_ids(page) == pages[1]
    assert page.inner_text("#page-label") == "Page 2"
    act(page, lambda: page.click("#prev"))
    assert event_ids(page) == pages[0]


def test_from_and_until_are_local_times(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server)
    newest = page.locator("#rows time").first.get_attribute("datetime")
    assert newest is not None
    today = datetime.fromisoformat(newest).astimezone(ZoneInfo(TIMEZONE)).date()
    midnight = datetime.combine(today, datetime.min.time(), ZoneInfo(TIMEZONE))
    tomorrow = midnight + timedelta(days=1)

    def utc(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    # From today's local midnight until tomorrow's (UTC+14): everything, all logged today.
    act(page, lambda: page.fill("#f-from", f"{today}T00:00"))
    act(page, lambda: page.fill("#f-to", f"{tomorrow:%Y-%m-%d}T00:00"))
    assert url_query(page) == {"from": [utc(midnight)], "to": [utc(tomorrow)]}
    assert row_count(page) == PAGE_SIZE

    # Until today's local midnight: nothing.
    act(page, lambda: page.fill("#f-from", ""))
    act(page, lambda: page.fill("#f-to", f"{today}T00:00"))
    assert url_query(page) == {"to": [utc(midnight)]}
    assert page.get_attribute("#events", "data-state") == "empty"


def test_csv_and_jsonl_exports_keep_the_filters(page: Page, live_server: LiveServer) -> None:
    # Its own store: every export records an export.requested event.
    open_dashboard(page, live_server, "resource=project&outcome=success", mount="exports")
    wanted = expected_count(resource="project", outcome="success")
    assert wanted > 0

    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename.startswith("audit-logs-")
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_HEADER
    assert len(rows) - 1 == wanted
    resource, outcome = CSV_HEADER.index("Resource"), CSV_HEADER.index("Outcome")
    assert {(row[resource], row[outcome]) for row in rows[1:]} == {("project", "success")}

    with page.expect_download() as info:
        page.click("#export-jsonl")
    assert info.value.suggested_filename.endswith(".jsonl")
    lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == wanted
    assert {(event["resource"], event["outcome"]) for event in events} == {("project", "success")}


def test_log_content_is_rendered_as_text_never_run(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server, "search=window.__xss")
    assert row_count(page) == 1
    row = page.locator("#rows tr.event-row").first
    assert row.locator("td.action code").inner_text() == XSS_ACTION
    assert row.locator("td.resource").inner_text() == f"{XSS_RESOURCE} #<b>bold<"
    assert row.locator("td.user").inner_text() == XSS_EMAIL
    row.locator("button.toggle").click()
    detail = page.locator("#rows tr.detail-row").first
    assert json.loads(detail.locator("pre.json").inner_text()) == XSS_DETAILS
    assert XSS_USER_AGENT in detail.inner_text()

    # An injected <img onerror> fires when its load fails: wait until no request is left.
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#events img, #events script, #events b").count() == 0
    assert page.locator("script").count() == 1  # the dashboard's own
    # (the page fixture also fails the test on any dialog or script error)


# What an injection that got past the escaping would do: the page refuses to run it.
ADD_INLINE_SCRIPT = """() => {
    const script = document.createElement("script");
    script.textContent = "window.__xss = 'inline'";
    document.body.append(script);
}"""


def test_a_breach_caused_by_the_last_action_still_fails_the_test(
    browser: Browser, live_server: LiveServer
) -> None:
    # The browser reports a breach in a task of its own, after the action that caused it:
    # the watch waits for that report, not for a while.
    watched = watched_page(new_context(browser, live_server))
    with pytest.raises(AssertionError, match=r"CSP: script-src-elem inline"), watched as page:
        open_dashboard(page, live_server)
        page.evaluate(ADD_INLINE_SCRIPT)


def test_error_state_shows_the_api_message(page: Page, live_server: LiveServer) -> None:
    too_long = "x" * 2000  # the API rejects it (400)
    open_dashboard(page, live_server, f"search={too_long}")
    assert page.get_attribute("#events", "data-state") == "error"
    shown = page.locator("#rows [role=alert] .error-message").inner_text()
    reply = page.request.get(f"{live_server.dashboard}events?search={too_long}")
    assert reply.status == 400
    assert shown == reply.json()["error"]["message"]
    assert shown.startswith("search:")


def test_damaged_chain_badge_names_the_first_finding(page: Page, live_server: LiveServer) -> None:
    open_dashboard(page, live_server, mount="tampered")  # also: mounted at another path
    assert row_count(page) == 10
    page.wait_for_function(CHAIN_CHECKED)
    badge = page.locator("#chain")
    assert badge.get_attribute("data-state") == "damaged"
    assert badge.inner_text() == "Chain damaged · log default seq 4: modified"


def test_damaged_store_badge_names_the_damage(page: Page, live_server: LiveServer) -> None:
    """Damage to the store as a whole (no log, no seq): the file SQLite found damaged."""
    open_dashboard(page, live_server, mount="damaged")
    assert row_count(page) == 10  # the events are all there: the chain is intact
    page.wait_for_function(CHAIN_CHECKED)
    badge = page.locator("#chain")
    assert badge.get_attribute("data-state") == "damaged"
    assert badge.inner_text() == "Store damaged · storage_damaged"
    title = badge.get_attribute("title") or ""
    assert title.startswith("the database file is damaged (PRAGMA quick_check): ")
    assert "damaged pages belong to index auditmw_events_user_email (1 finding(s)," in title


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("viewer", 403)])
def test_without_admin_rights_the_browser_gets_no_data(
    browser: Browser, live_server: LiveServer, role: str | None, status: int
) -> None:
    context = new_context(browser, live_server, role)
    try:
        page = context.new_page()
        response = page.goto(live_server.dashboard)
        assert response is not None and response.status == status
        content = page.content()
        assert "alice@example.com" not in content and "<table" not in content
        for path in (
            "events",
            "facets",
            "verify",
            "export.csv",
            "export.jsonl",
            "static/dashboard.js",
        ):
            reply = page.request.get(live_server.dashboard + path)
            assert reply.status == status, path
            assert "alice@example.com" not in reply.text()
    finally:
        context.close()
