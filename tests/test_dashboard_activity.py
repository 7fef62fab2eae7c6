"""The dashboard as a person uses it, in a real browser: activity over time, local times,
a phone's first screen, and a layout where nothing overlaps or is cut off.

Same setup as ``test_dashboard_browser`` (Debian's chromium through Playwright, a live
uvicorn server, the real admin app), over a store whose events have chosen timestamps:
spread over March 2026, across both daylight-saving changes (America/Los_Angeles on
8 March, Europe/Paris on 29 March), with bursts so that bars differ. Expected texts are
computed here with ``zoneinfo``, independently of the page's JavaScript.

Screenshots are kept in ``test-artifacts/`` (desktop and phone), and the same views are
checked by a script that measures every visible element: none may overlap another, stick
out of the viewport, or be clipped by a scrolling or hidden-overflow ancestor. A
deliberately broken stylesheet shows that the check catches both kinds of fault.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page

from auditmw import Event, EventFilter, NewEvent, SQLiteStore

from ._browser import needs_chromium, watched_page
from ._servers import serving_in_thread
from .test_dashboard_browser import (
    ARTIFACTS,
    DESKTOP,
    LOADED,
    PAGE_SIZE,
    LiveServer,
    build_app,
    column,
    event_ids,
    finished_loading,
    loads,
    new_context,
    url_query,
)
from .test_query import model_matches, write_events

pytestmark = needs_chromium
PHONE = {"width": 390, "height": 844}
PARIS = "Europe/Paris"
LOS_ANGELES = "America/Los_Angeles"
DASH = "\N{EN DASH}"  # between the two ends of a range

# --- the log: chosen times ----------------------------------------------------------------

START = datetime(2026, 3, 5, tzinfo=UTC)
STEP = timedelta(hours=4, minutes=7, seconds=13, microseconds=123_456)
ACTIONS = [("auth.login", "session"), ("project.update", "project"), ("invoice.approve", "invoice")]
USERS = ["alice@example.com", "bob@example.org", None]


def utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activity_events() -> list[tuple[NewEvent, str]]:
    """One event every 4 h 7 min from 5 March 2026 for 27 days; every tenth comes with a
    burst of three more within the second."""
    events = []
    for index in range(160):
        moment = START + index * STEP
        burst = [moment + timedelta(milliseconds=250 * k) for k in range(1 if index % 10 else 4)]
        for offset, when in enumerate(burst):
            action, resource = ACTIONS[(index + offset) % len(ACTIONS)]
            events.append(
                (
                    NewEvent(
                        action=action,
                        resource=resource,
                        resource_id=f"{resource[:3]}-{index:03d}-{offset}",
                        user_email=USERS[index % len(USERS)],
                        user_id=None if USERS[index % len(USERS)] else "u_system",
                        ip_address=f"192.0.2.{index % 250 + 1}",
                    ),
                    utc(when),
                )
            )
    return events


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    path = tmp_path_factory.mktemp("activity") / "activity.db"
    with ThreadPoolExecutor(1) as pool:  # asyncio.run outside Playwright's thread
        events = pool.submit(asyncio.run, write_events(path, activity_events())).result()
    return path, events


@pytest.fixture(scope="module")
def server(written: tuple[Path, list[Event]]) -> Iterator[LiveServer]:
    with serving_in_thread(build_app({"audit": SQLiteStore(written[0])})) as base:
        yield LiveServer(base)


@pytest.fixture
def events(written: tuple[Path, list[Event]]) -> list[Event]:
    return written[1]


def open_page(
    browser: Browser,
    server: LiveServer,
    *,
    zone: str = PARIS,
    viewport: dict[str, int] = DESKTOP,
    phone: bool = False,
) -> contextlib.AbstractContextManager[Page]:
    """An admin's page in ``zone`` (as ``watched_page``: script errors fail the test)."""
    context = new_context(
        browser, server, timezone_id=zone, viewport=viewport, is_mobile=phone, has_touch=phone
    )
    return watched_page(context)


# --- waiting for the page -----------------------------------------------------------------

CHART_LOADED = finished_loading("#chart")


def show(page: Page, server: LiveServer, query: str = "") -> dict[str, Any]:
    """Open the dashboard and wait for its table and histogram; the histogram's answer."""
    with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/histogram")) as answer:
        response = page.goto(server.dashboard + (f"?{query}" if query else ""))
    assert response is not None and response.status == 200
    page.wait_for_function(LOADED, arg=0)
    page.wait_for_function(CHART_LOADED, arg=0)
    body: dict[str, Any] = answer.value.json()
    return body


def reloading(page: Page, action: Callable[[], object]) -> dict[str, Any]:
    """Do something that changes the filters; wait for the table and the histogram; the
    histogram's new answer."""
    table, chart = loads(page), loads(page, "#chart")
    page.evaluate("window.__sameDocument = true")  # a reload makes a new document
    with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/histogram")) as answer:
        action()
    page.wait_for_function(LOADED, arg=table)
    page.wait_for_function(CHART_LOADED, arg=chart)
    body: dict[str, Any] = answer.value.json()
    return body


# --- expected texts, computed here ------------------------------------------------------------


def local_text(timestamp: str, zone: str) -> str:
    """``2026-03-29 03:00:00.000 +02:00``: what the page must show for ``timestamp``."""
    moment = datetime.fromisoformat(timestamp).astimezone(ZoneInfo(zone))
    offset = moment.strftime("%z")
    millis = moment.microsecond // 1000
    return f"{moment:%Y-%m-%d %H:%M:%S}.{millis:03d} {offset[:3]}:{offset[3:]}"


def utc_text(timestamp: str) -> str:
    return timestamp.replace("T", " ").removesuffix("Z") + " UTC"


def local_input(timestamp: str, zone: str) -> str:
    """The value of a datetime-local input showing ``timestamp`` in ``zone``, as the
    browser writes it (``2026-03-29T03:00``, ``...T03:00:05``, ``...T03:00:00.25``)."""
    moment = datetime.fromisoformat(timestamp).astimezone(ZoneInfo(zone))
    millis = moment.microsecond // 1000
    text = f"{moment:%Y-%m-%dT%H:%M}"
    if moment.second or millis:
        text += f":{moment.second:02d}"
    if millis:
        text += f".{millis:03d}".rstrip("0")
    return text


def between(events: list[Event], start: str, end: str, **filters: str) -> list[Event]:
    """The events in [start, end) (and matching ``filters``), newest first."""
    f = EventFilter(**filters)
    chosen = [e for e in events if start <= e.timestamp < end and model_matches(e, f)]
    ranked = sorted(enumerate(chosen), key=lambda pair: (pair[1].timestamp, pair[0]))
    return [event for _, event in reversed(ranked)]


def bar_box(page: Page) -> dict[str, float]:
    box = page.locator("#bars").bounding_box()
    assert box is not None
    return box


def bar_center(page: Page, index: int, count: int) -> tuple[float, float]:
    box = bar_box(page)
    return box["x"] + (index + 0.5) * box["width"] / count, box["y"] + box["height"] / 2


# --- the histogram ------------------------------------------------------------------------


def test_the_histogram_draws_the_api_counts(
    browser: Browser,
    server: LiveServer,
    events: list[Event],
) -> None:
    with open_page(browser, server) as page:
        body = show(page, server)
        buckets = body["buckets"]
        assert body["total"] == len(events) == sum(b["count"] for b in buckets)
        # The page asked for about one bar per 8 pixels; the API chose 6-hour bars.
        assert body["bucket_ms"] == 6 * 3600 * 1000
        assert 30 <= len(buckets) <= 120

        bars = page.locator("#bars rect.bar").evaluate_all(
            "rects => rects.map(r => ({count: Number(r.dataset.count), start: r.dataset.start,"
            " end: r.dataset.end, height: r.getBBox().height}))"
        )
        assert [(b["count"], b["start"], b["end"]) for b in bars] == [
            (b["count"], b["start"], b["end"]) for b in buckets
        ]
        # Heights follow counts: the busiest bar is full height, empty bars have none.
        highest = max(b["count"] for b in buckets)
        for bar in bars:
            if bar["count"] == 0:
                assert bar["height"] == 0
            else:
                assert bar["height"] == pytest.approx(max(1.5, bar["count"] / highest * 100))
        # Counted by the server as the model counts them.
        for bucket in buckets:
            assert bucket["count"] == len(between(events, bucket["start"], bucket["end"]))

        # Said in words, with the range in local time and UTC on hover.
        assert page.inner_text("#activity-summary") == f"{len(events)} events · 6 hours per bar"
        label = page.get_attribute("#bars", "aria-label") or ""
        assert label.startswith(f"Activity: {len(events)} events from ")
        assert f"in {len(buckets)} bars of 6 hours; the busiest has {highest} events." in label
        for selector, timestamp in (("#chart-start", body["from"]), ("#chart-end", body["to"])):
            assert page.inner_text(selector) == local_text(timestamp, PARIS)
            assert page.get_attribute(selector, "title") == utc_text(timestamp)
        # A bar's tooltip: its range locally, its count, its range in UTC.
        title = page.locator("#bars rect.bar title").first.text_content()
        first = buckets[0]
        assert title == (
            f"{local_text(first['start'], PARIS)} {DASH} {local_text(first['end'], PARIS)}: "
            f"{first['count']} event{'s' if first['count'] != 1 else ''}\n"
            f"{utc_text(first['start'])} {DASH} {utc_text(first['end'])}"
        )

        # Another filter: the histogram follows it.
        body = reloading(page, lambda: page.select_option("#f-resource", "invoice"))
        assert body["total"] == sum(e.resource == "invoice" for e in events)
        counts = page.locator("#bars rect.bar").evaluate_all(
            "rects => rects.map(r => Number(r.dataset.count))"
        )
        assert counts == [b["count"] for b in body["buckets"]]
        assert page.inner_text("#activity-summary").startswith(f"{body['total']} events · ")


def test_dragging_across_the_bars_narrows_the_time_filter(
    browser: Browser,
    server: LiveServer,
    events: list[Event],
) -> None:
    with open_page(browser, server) as page:
        body = show(page, server)
        buckets = body["buckets"]
        first, last = 40, 47  # eight 6-hour bars: two days of the second half of March
        start, end = buckets[first]["start"], buckets[last]["end"]
        expected = between(events, start, end)
        assert 0 < len(expected) == sum(b["count"] for b in buckets[first : last + 1]) < PAGE_SIZE

        def drag() -> None:
            page.mouse.move(*bar_center(page, first, len(buckets)))
            page.mouse.down()
            page.mouse.move(*bar_center(page, last, len(buckets)), steps=6)
            # While dragging, the readout says what is chosen.
            assert page.inner_text("#chart-readout") == (
                f"{local_text(start, PARIS)} {DASH} {local_text(end, PARIS)}: "
                f"{len(expected)} events (release to show them)"
            )
            page.mouse.up()

        narrowed = reloading(page, drag)
        assert url_query(page)["from"] == [start] and url_query(page)["to"] == [end]
        assert page.input_value("#f-from") == local_input(start, PARIS)
        assert page.input_value("#f-to") == local_input(end, PARIS)
        assert event_ids(page) == [event.id for event in expected]
        assert (narrowed["from"], narrowed["to"], narrowed["total"]) == (start, end, len(expected))
        assert page.is_visible("#clear-range")

        # Reloading the page keeps the range; "Clear time range" removes it.
        reloading(page, page.reload)
        assert event_ids(page) == [event.id for event in expected]
        cleared = reloading(page, lambda: page.click("#clear-range"))
        assert "from" not in url_query(page) and "to" not in url_query(page)
        assert cleared["total"] == len(events)
        assert page.input_value("#f-from") == "" and page.is_hidden("#clear-range")
        assert len(event_ids(page)) == PAGE_SIZE


def test_the_keyboard_chooses_bars_too(
    browser: Browser,
    server: LiveServer,
    events: list[Event],
) -> None:
    with open_page(browser, server, zone=LOS_ANGELES) as page:
        body = show(page, server, "action=auth.login")
        buckets = body["buckets"]
        page.focus("#chart")
        for _ in range(3):
            page.keyboard.press("ArrowRight")  # bar 0, 1, 2
        for _ in range(2):
            page.keyboard.press("Shift+ArrowRight")  # and on to bar 4
        start, end = buckets[2]["start"], buckets[4]["end"]
        expected = between(events, start, end, action="auth.login")
        assert page.inner_text("#chart-readout") == (
            f"{local_text(start, LOS_ANGELES)} {DASH} {local_text(end, LOS_ANGELES)}: "
            f"{len(expected)} event{'s' if len(expected) != 1 else ''} (press Enter to show them)"
        )
        reloading(page, lambda: page.keyboard.press("Enter"))
        assert url_query(page) == {"action": ["auth.login"], "from": [start], "to": [end]}
        assert event_ids(page) == [event.id for event in expected]


# --- local times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "query", "offsets"),
    [
        # The newest page spans 29 March, when Paris moves from +01:00 to +02:00.
        (PARIS, "", {"+01:00", "+02:00"}),
        # Until 12 March: Los Angeles moved from -08:00 to -07:00 on the 8th.
        (LOS_ANGELES, "to=2026-03-12T00:00:00Z", {"-08:00", "-07:00"}),
    ],
)
def test_times_show_the_local_zone_with_utc_in_the_tooltip(
    browser: Browser,
    server: LiveServer,
    zone: str,
    query: str,
    offsets: set[str],
) -> None:
    with open_page(browser, server, zone=zone) as page:
        show(page, server, query)
        times = page.locator("#rows tr.event-row time").evaluate_all(
            "ts => ts.map(t => [t.dateTime, t.textContent, t.title])"
        )
        assert len(times) == PAGE_SIZE
        for timestamp, shown, title in times:
            assert shown == local_text(timestamp, zone)
            assert title == utc_text(timestamp)
        assert {shown[-6:] for _, shown, _ in times} == offsets

        # The details: the same local time, and the exact UTC timestamp.
        timestamp = times[0][0]
        page.locator("#rows button.toggle").first.click()
        facts = page.locator("#rows tr.detail-row dl.facts").first
        assert facts.locator("dd time").inner_text() == local_text(timestamp, zone)
        assert facts.locator("dd time").get_attribute("title") == utc_text(timestamp)
        assert utc_text(timestamp) in facts.inner_text()
        assert zone in page.inner_text("#tz-note")


@pytest.mark.parametrize(
    ("zone", "typed", "instant"),
    [
        # 03:00 in Paris on 29 March is after the change (+02:00): 01:00 UTC.
        (PARIS, "2026-03-29T03:00", "2026-03-29T01:00:00.000Z"),
        # 03:00 in Los Angeles on 8 March is after its change (-07:00): 10:00 UTC.
        (LOS_ANGELES, "2026-03-08T03:00", "2026-03-08T10:00:00.000Z"),
        (LOS_ANGELES, "2026-03-07T23:30:15", "2026-03-08T07:30:15.000Z"),
    ],
)
def test_from_and_until_are_local_times_sent_as_utc(
    browser: Browser,
    server: LiveServer,
    events: list[Event],
    zone: str,
    typed: str,
    instant: str,
) -> None:
    with open_page(browser, server, zone=zone) as page:
        show(page, server)
        body = reloading(page, lambda: page.fill("#f-to", typed))
        assert url_query(page) == {"to": [instant]}
        assert body["to"] == instant.replace(".000Z", ".000000Z")
        expected = between(events, "", body["to"])
        assert event_ids(page) == [event.id for event in expected[:PAGE_SIZE]]
        assert column(page, "time")[0] == local_text(expected[0].timestamp, zone)
        # The input keeps showing the local time typed, after a reload too.
        reloading(page, page.reload)
        assert page.input_value("#f-to") == typed


def test_links_with_days_mean_local_days(
    browser: Browser,
    server: LiveServer,
    events: list[Event],
) -> None:
    """A link from before times had hours (``from=2026-03-10``) still means local days."""
    with open_page(browser, server, zone=LOS_ANGELES) as page:
        body = show(page, server, "from=2026-03-10&to=2026-03-10")
        # Midnight to midnight in Los Angeles (-07:00), as exact instants in the URL.
        assert url_query(page) == {
            "from": ["2026-03-10T07:00:00.000Z"],
            "to": ["2026-03-11T07:00:00.000Z"],
        }
        assert body["total"] == len(
            between(events, "2026-03-10T07:00:00.000000Z", "2026-03-11T07:00:00.000000Z")
        )
        assert page.input_value("#f-from") == "2026-03-10T00:00"


# --- a phone ------------------------------------------------------------------------------


def test_on_a_phone_the_filters_fold_and_events_come_first(
    browser: Browser,
    server: LiveServer,
    events: list[Event],
) -> None:
    with open_page(browser, server, viewport=PHONE, phone=True) as page:
        body = show(page, server, "outcome=success")
        assert page.evaluate("() => document.querySelector('#filter-panel').open") is False
        assert page.is_hidden("#f-search")
        assert page.inner_text("#filter-panel summary") == "Filters · 1 active"
        # The first screen (no scrolling) shows the histogram and whole events.
        rows = page.locator("#rows tr.event-row")
        in_view = [
            box
            for box in (rows.nth(index).bounding_box() for index in range(4))
            if box is not None and box["y"] + box["height"] <= PHONE["height"]
        ]
        assert len(in_view) >= 2
        assert (bar_box(page)["y"] + bar_box(page)["height"]) < in_view[0]["y"]

        # A finger drags across the bars (touch events, as a phone sends them).
        buckets = body["buckets"]
        first, last = 2, 5
        x1, y = bar_center(page, first, len(buckets))
        x2, _ = bar_center(page, last, len(buckets))
        cdp = page.context.new_cdp_session(page)

        def swipe() -> None:
            touch = {"x": x1, "y": y}
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [touch]})
            for step in range(1, 7):
                touch = {"x": x1 + (x2 - x1) * step / 6, "y": y}
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [touch]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

        reloading(page, swipe)
        start, end = buckets[first]["start"], buckets[last]["end"]
        assert url_query(page) == {"outcome": ["success"], "from": [start], "to": [end]}
        assert event_ids(page) == [e.id for e in between(events, start, end, outcome="success")]

        # The filters are a tap away.
        page.click("#filter-panel summary")
        assert page.is_visible("#f-search")
        assert page.input_value("#f-from") == local_input(start, PARIS)


# --- the layout: nothing overlaps, nothing is cut off -------------------------------------

# Measures every visible element that shows something (text of its own, a control, the
# chart): its box, and where its text overflows it, the text's box. Reports any two that
# overlap (neither inside the other), any outside the viewport's width, and any clipped
# by an ancestor that hides or scrolls its overflow.
LAYOUT_PROBLEMS = """() => {
    const width = document.documentElement.clientWidth;
    const controls = new Set(["INPUT", "SELECT", "BUTTON", "TEXTAREA", "IMG", "svg"]);
    const opaque = new Set(["SELECT", "BUTTON", "svg", "OPTION", "DATALIST", "SCRIPT"]);
    const hidesOverflow = (style) => style.overflowX !== "visible" || style.overflowY !== "visible";
    const name = (el) => {
        const id = el.id ? `#${el.id}` : "";
        const cls = typeof el.className === "string" && el.className
            ? "." + el.className.trim().split(/\\s+/).join(".") : "";
        const words = (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 30);
        return `<${el.tagName.toLowerCase()}${id}${cls}>${words ? ` "${words}"` : ""}`;
    };
    const union = (a, b) => ({
        left: Math.min(a.left, b.left), right: Math.max(a.right, b.right),
        top: Math.min(a.top, b.top), bottom: Math.max(a.bottom, b.bottom),
    });
    const items = [];
    for (const el of document.body.querySelectorAll("*")) {
        if ([...opaque].some((tag) => el.parentElement && el.parentElement.closest(tag))) continue;
        const ownText = [...el.childNodes].filter(
            (n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
        if (!controls.has(el.tagName) && ownText.length === 0) continue;
        // Rendered (not in a closed <details>, not display: none or visibility: hidden).
        if (!el.checkVisibility({ visibilityProperty: true })) continue;
        const style = getComputedStyle(el);
        const rect = el.getBoundingClientRect();
        if (rect.width < 2 || rect.height < 2) continue;
        // Visually hidden (screen-reader-only): inside a tiny box that hides its overflow.
        let hidden = false;
        for (let a = el; a && !hidden; a = a.parentElement) {
            const r = a.getBoundingClientRect();
            hidden = (r.width < 2 || r.height < 2) && hidesOverflow(getComputedStyle(a));
        }
        if (hidden) continue;
        let box = rect;
        if (!hidesOverflow(style)) {  // text spilling out of its element counts too
            for (const node of ownText) {
                const range = document.createRange();
                range.selectNodeContents(node);
                box = union(box, range.getBoundingClientRect());
            }
        }
        items.push({ el, box });
    }
    const problems = [];
    for (const { el, box } of items) {
        if (box.left < -0.5 || box.right > width + 0.5) {
            const where = `${Math.round(box.left)}..${Math.round(box.right)} of ${width}`;
            problems.push(`cut off: ${name(el)} is outside the viewport (${where})`);
        }
        for (let a = el.parentElement; a; a = a.parentElement) {
            if (!hidesOverflow(getComputedStyle(a))) continue;
            const r = a.getBoundingClientRect();
            if (box.left < r.left - 0.5 || box.right > r.right + 0.5 ||
                box.top < r.top - 0.5 || box.bottom > r.bottom + 0.5) {
                problems.push(`cut off: ${name(el)} is clipped by ${name(a)}`);
            }
        }
    }
    for (let i = 0; i < items.length; i++) {
        for (let j = i + 1; j < items.length; j++) {
            const a = items[i], b = items[j];
            if (a.el.contains(b.el) || b.el.contains(a.el)) continue;
            const w = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left);
            const h = Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top);
            if (w > 1 && h > 1) problems.push(`overlap: ${name(a.el)} and ${name(b.el)}`);
        }
    }
    if (document.documentElement.scrollWidth > width) {
        const scrolled = document.documentElement.scrollWidth;
        problems.push(`the page scrolls sideways (${scrolled} > ${width})`);
    }
    return { problems, checked: items.length };
}"""


def layout_problems(page: Page) -> list[str]:
    result = page.evaluate(LAYOUT_PROBLEMS)
    assert result["checked"] > 40  # the check saw the page
    problems: list[str] = result["problems"]
    return problems


def open_details_and_filters(page: Page) -> None:
    page.evaluate("() => { document.querySelector('#filter-panel').open = true; }")
    page.locator("#rows button.toggle").first.click()
    page.wait_for_selector("#rows tr.detail-row pre.json")


@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_nothing_overlaps_or_is_cut_off(
    browser: Browser,
    server: LiveServer,
    size: str,
    viewport: dict[str, int],
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with open_page(browser, server, viewport=viewport, phone=size == "phone") as page:
        show(page, server)
        # As it first appears (a phone: filters folded).
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{size}.png"))
        assert layout_problems(page) == []
        # With the filters open and an event's details shown, on a narrowed range.
        open_details_and_filters(page)
        page.hover("#bars")
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{size}-open.png"), full_page=True)
        assert layout_problems(page) == []


BROKEN_STYLES = {
    # The histogram pulled up over the filters' summary and the header.
    "overlap": ".activity { margin-top: -5rem; }",
    # The histogram's axis wider than a phone: its end label off the screen.
    "cut off": ".chart-axis { flex-wrap: nowrap; width: 30rem; }",
    # Clipped: the summary line cut by a box that hides what does not fit.
    "clipped": ".activity-head { height: 0.5rem; overflow: hidden; }",
}


@pytest.mark.parametrize("fault", list(BROKEN_STYLES))
def test_the_layout_check_catches_a_broken_stylesheet(
    browser: Browser,
    server: LiveServer,
    fault: str,
) -> None:
    with open_page(browser, server, viewport=PHONE, phone=True) as page:

        def broken_css(route: Any) -> None:
            response = route.fetch()
            route.fulfill(response=response, body=response.text() + BROKEN_STYLES[fault])

        page.route("**/static/dashboard.css", broken_css)
        show(page, server)
        problems = layout_problems(page)
        said = {"overlap": "overlap: ", "cut off": "outside the viewport", "clipped": "clipped by"}
        assert any(said[fault] in problem for problem in problems), problems
