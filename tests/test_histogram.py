"""Activity over time (auditmw._stores.histogram, ``AuditStore.histogram``, ``GET /histogram``).

The layout is checked on its own (nice widths, alignment, whole open ends), then every
store is asked for histograms of events written with chosen timestamps — ties, events
exactly on interval edges and on ``to``, before 1970 — and each count is compared with a
plain-Python count of the model's matches in that interval. Both backends, every query
path (index ranges, an action prefix, a search through the SQLite search index and
through LIKE), and the admin route over real HTTP (httpx against the ASGI app).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditmw import (
    AdminApp,
    AuditStore,
    Event,
    EventFilter,
    Histogram,
    HistogramBucket,
    NewEvent,
    SQLiteStore,
    open_store,
)
from auditmw._admin.parameters import parse_filter
from auditmw._stores.histogram import (
    DAY,
    HOUR,
    MAX_BUCKETS,
    MILLISECOND,
    MINUTE,
    SECOND,
    STEPS,
    BucketLayout,
    microseconds,
    timestamp,
)
from auditmw._stores.sqlite import SEARCH_INDEX_MAX_MATCHES

from .test_admin import ADMIN, VIEWER, authorize, client_for, fetch_all_ids
from .test_query import model_matches, ts
from .test_query_contract import write

# --- the layout ----------------------------------------------------------------------------


def test_timestamps_convert_to_microseconds_and_back() -> None:
    for text in (
        "1970-01-01T00:00:00.000000Z",
        "1969-12-31T23:59:59.999999Z",
        "2024-05-01T12:34:56.789012Z",
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
    ):
        assert timestamp(microseconds(text)) == text
    assert microseconds("1970-01-01T00:00:01.000002Z") == SECOND + 2
    assert microseconds("1969-12-31T23:59:59.999999Z") == -1
    with pytest.raises(ValueError):
        microseconds("2024-05-01T00:00:00Z")  # not the log's own format


@pytest.mark.parametrize(
    ("since", "until", "buckets", "step"),
    [
        ("2024-05-01T00:00:00.000000Z", "2024-05-02T00:00:00.000000Z", 24, HOUR),
        ("2024-05-01T00:00:00.000000Z", "2024-05-02T00:00:00.000000Z", 60, 30 * MINUTE),
        ("2024-05-01T00:00:00.000000Z", "2024-05-02T00:00:00.000000Z", 23, 2 * HOUR),
        ("2024-05-01T00:00:00.000000Z", "2024-05-01T00:00:01.000000Z", 60, 20 * MILLISECOND),
        ("2024-05-01T00:00:00.000000Z", "2024-05-01T00:00:00.000500Z", 60, MILLISECOND),
        ("2024-01-01T00:00:00.000000Z", "2025-01-01T00:00:00.000000Z", 60, 10 * DAY),
        ("2024-01-01T00:00:00.000000Z", "2025-01-01T00:00:00.000000Z", 500, DAY),
        ("2024-05-01T10:07:00.000000Z", "2024-05-01T10:52:00.000000Z", 10, 5 * MINUTE),
    ],
)
def test_the_width_is_the_narrowest_nice_step_that_fits(
    since: str, until: str, buckets: int, step: int
) -> None:
    layout = BucketLayout.over(since, until, None, buckets)
    assert layout is not None
    assert layout.step == step
    assert layout.count <= buckets
    assert layout.origin % step == 0  # whole multiples of the width since 1970 (UTC)


def test_intervals_are_aligned_and_only_the_filter_cuts_them() -> None:
    # 10:07 to 10:52 in at most 10: 5-minute intervals from 10:05, the first cut at 10:07.
    cut = BucketLayout.over("2024-05-01T10:07:00.000000Z", "2024-05-01T10:52:00.000000Z", None, 10)
    assert cut is not None
    histogram = cut.histogram([0] * cut.count)
    assert [b.start[11:16] for b in histogram.buckets] == [
        "10:07",
        *(f"10:{m:02d}" for m in range(10, 55, 5)),
    ]
    assert histogram.buckets[-1].end == "2024-05-01T10:52:00.000000Z"
    assert (histogram.start, histogram.end) == (
        "2024-05-01T10:07:00.000000Z",
        "2024-05-01T10:52:00.000000Z",
    )
    # Without from/to, the events' span is covered by whole intervals.
    span = ("2024-05-01T10:07:00.000000Z", "2024-05-01T10:52:00.000000Z")
    whole = BucketLayout.over(None, None, span, 10)
    assert whole is not None
    histogram = whole.histogram([0] * whole.count)
    assert (histogram.start, histogram.end) == (
        "2024-05-01T10:05:00.000000Z",
        "2024-05-01T10:55:00.000000Z",
    )
    assert histogram.bucket_ms == 5 * 60 * 1000
    # The last event exactly on an edge gets a whole interval of its own, not a sliver.
    span = ("2024-05-01T10:00:00.000000Z", "2024-05-01T11:00:00.000000Z")
    edge = BucketLayout.over(None, None, span, 13)  # 5-minute intervals, from 10:00
    assert edge is not None
    last = edge.histogram([0] * edge.count).buckets[-1]
    assert (last.start, last.end) == ("2024-05-01T11:00:00.000000Z", "2024-05-01T11:05:00.000000Z")


def test_no_range_without_events_and_open_bounds() -> None:
    assert BucketLayout.over(None, None, None, 60) is None
    assert BucketLayout.over("2024-05-01T00:00:00.000000Z", None, None, 60) is None
    assert BucketLayout.over(None, "2024-05-01T00:00:00.000000Z", None, 60) is None


def test_the_widest_ranges_fit_in_one_interval() -> None:
    # From year 1 to 9999, across 1970: no multiple of a nice width fits one interval.
    layout = BucketLayout.over(
        "0001-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z", None, 1
    )
    assert layout is not None and layout.count == 1
    histogram = layout.histogram([7])
    assert (histogram.buckets[0].start, histogram.buckets[0].end) == (
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
    )
    # Just after an event at the very last timestamp: still within the format's years.
    layout = BucketLayout.over(None, None, ("9999-12-31T23:59:59.999999Z",) * 2, 60)
    assert layout is not None
    assert layout.histogram([1] * layout.count).end == "9999-12-31T23:59:59.999999Z"


LATEST = microseconds("9999-12-31T23:59:59.999999Z")
MOMENTS = st.integers(microseconds("0001-01-01T00:00:00.000000Z"), LATEST - 1)


@given(
    first=MOMENTS,
    length=st.integers(1, 10**7) | st.integers(1, 10**17),
    buckets=st.integers(1, MAX_BUCKETS),
    open_start=st.booleans(),
    open_end=st.booleans(),
)
def test_intervals_tile_the_range(
    first: int, length: int, buckets: int, open_start: bool, open_end: bool
) -> None:
    stop = min(first + length, LATEST)
    since, until = timestamp(first), timestamp(stop)
    span = (since, timestamp(stop - 1))  # the first and last event
    layout = BucketLayout.over(
        None if open_start else since, None if open_end else until, span, buckets
    )
    assert layout is not None
    assert 1 <= layout.count <= buckets
    assert layout.step % MILLISECOND == 0
    if layout.step in STEPS[1:]:  # the narrowest that fits: the one before needs more
        narrower = STEPS[STEPS.index(layout.step) - 1]
        assert -(-(stop - first // narrower * narrower) // narrower) > buckets
    histogram = layout.histogram([0] * layout.count)
    assert all(b.start < b.end for b in histogram.buckets)
    assert [b.end for b in histogram.buckets[:-1]] == [b.start for b in histogram.buckets[1:]]
    assert layout.edges == [b.start for b in histogram.buckets[1:]]
    assert histogram.start is not None and histogram.end is not None
    assert histogram.start <= since and until <= histogram.end
    if not open_start:
        assert histogram.start == since
    if not open_end:
        assert histogram.end == until


# --- every store ---------------------------------------------------------------------------

# Around the day edges of 2024-05-02 and -03, with ties, and one event before 1970 in the
# "billing" log (so a year-spanning range appears when no time filter is given).
EDGE_EVENTS: list[tuple[NewEvent, str]] = [
    (NewEvent("auth.login", "session", user_id="u1"), "2024-05-01T23:59:59.999999Z"),
    (NewEvent("auth.login", "session", user_id="u2"), "2024-05-02T00:00:00.000000Z"),
    (NewEvent("auth.logout", "session", user_id="u1"), "2024-05-02T00:00:00.000000Z"),
    (NewEvent("project.create", "project", "P-1", user_id="u1"), "2024-05-02T00:00:00.000001Z"),
    (
        NewEvent("project.update", "project", "P-1", user_email="ann@example.com"),
        "2024-05-02T11:59:59.999999Z",
    ),
    (
        NewEvent("project.update", "project", "P-2", outcome="failure"),
        "2024-05-02T12:00:00.000000Z",
    ),
    (NewEvent("invoice.approve", "invoice", "I-9", user_id="u2"), "2024-05-02T23:59:59.999999Z"),
    (NewEvent("invoice.approve", "invoice", "I-9", user_id="u2"), "2024-05-03T00:00:00.000000Z"),
    (
        NewEvent("auth.login", "session", user_id="u3", outcome="denied"),
        "2024-05-03T00:00:00.000000Z",
    ),
    (NewEvent("document.share", "document", "D-1", user_id="u1"), "2024-05-03T06:30:00.000000Z"),
]
OLD_EVENT = (NewEvent("system.boot", "host", log="billing"), "1969-12-31T23:59:59.999999Z")

HISTOGRAM_FILTERS = [
    EventFilter(),
    EventFilter(user_id="u1"),
    EventFilter(action="auth.login"),
    EventFilter(action="project.*"),
    EventFilter(action="auth.*", user_id="u1"),
    EventFilter(resource="invoice", resource_id="I-9"),
    EventFilter(outcome="denied"),
    EventFilter(since="2024-05-02T00:00:00.000000Z", until="2024-05-03T00:00:00.000000Z"),
    EventFilter(since="2024-05-02T00:00:00.000000Z"),
    EventFilter(until="2024-05-03T00:00:00.000000Z"),
    EventFilter(since="2024-05-02T00:00:00.000001Z", until="2024-05-02T12:00:00.000000Z"),
    EventFilter(search="session"),  # the search index (3+ characters)
    EventFilter(search="P-"),  # LIKE (too short for the index)
    EventFilter(search="auth", since="2024-05-02T00:00:00.000000Z"),
    EventFilter(search="nothing like it"),
    EventFilter(user_id="nobody"),
    EventFilter(since="2030-01-01T00:00:00.000000Z", until="2030-01-02T00:00:00.000000Z"),
]


def check_against_model(histogram: Histogram, written: Sequence[Event], f: EventFilter) -> None:
    """Every interval holds exactly the model's matches in it; together, all of them."""
    matches = [event for event in written if model_matches(event, f)]
    assert histogram.total == len(matches), f
    for bucket in histogram.buckets:
        expected = sum(bucket.start <= event.timestamp < bucket.end for event in matches)
        assert bucket.count == expected, (f, bucket)
    if f.since is not None:
        assert histogram.start == f.since
    if f.until is not None:
        assert histogram.end == f.until
    if histogram.buckets:
        assert histogram.start == histogram.buckets[0].start
        assert histogram.end == histogram.buckets[-1].end
        assert [b.end for b in histogram.buckets[:-1]] == [b.start for b in histogram.buckets[1:]]


@pytest.mark.parametrize("buckets", [1, 2, 3, 24, 60, MAX_BUCKETS])
async def test_counts_match_the_model_on_every_store(
    store_url_factory: Callable[[], str], buckets: int
) -> None:
    async with open_store(store_url_factory()) as store:
        written = await write(store, EDGE_EVENTS)
        for f in HISTOGRAM_FILTERS:
            check_against_model(await store.histogram(f, buckets=buckets), written, f)


async def test_intervals_split_exactly_at_their_edges_on_every_store(
    store_url_factory: Callable[[], str],
) -> None:
    async with open_store(store_url_factory()) as store:
        written = await write(store, EDGE_EVENTS)
        # 2024-05-01T12:00 to 05-03T12:00 in at most 4: 12-hour intervals, so events at
        # 05-02T00:00:00.000000 and 12:00:00.000000 open an interval, those a microsecond
        # earlier close the one before; an event at `to` is outside.
        f = EventFilter(since="2024-05-01T12:00:00.000000Z", until="2024-05-03T00:00:00.000000Z")
        histogram = await store.histogram(f, buckets=4)
        assert histogram.bucket_ms == 12 * 3600 * 1000
        assert [(b.start[8:13], b.count) for b in histogram.buckets] == [
            ("01T12", 1),
            ("02T00", 4),
            ("02T12", 2),
        ]
        check_against_model(histogram, written, f)
        assert histogram.total == len((await store.query(f, limit=100)).events) == 7


async def test_a_histogram_across_1970_on_every_store(
    store_url_factory: Callable[[], str],
) -> None:
    async with open_store(store_url_factory()) as store:
        written = await write(store, [OLD_EVENT, *EDGE_EVENTS])
        for buckets in (1, 2, 60, MAX_BUCKETS):
            histogram = await store.histogram(EventFilter(), buckets=buckets)
            check_against_model(histogram, written, EventFilter())
            assert histogram.buckets[0].count >= 1  # the 1969 event, first
        f = EventFilter(since="1969-12-31T23:59:59.999999Z", until="1970-01-01T00:00:00.000001Z")
        histogram = await store.histogram(f, buckets=2)
        assert [b.count for b in histogram.buckets] == [1, 0]


async def test_empty_results_are_empty_not_errors_on_every_store(
    store_url_factory: Callable[[], str],
) -> None:
    async with open_store(store_url_factory()) as store:
        histogram = await store.histogram(EventFilter())
        assert histogram.to_dict() == {
            "from": None,
            "to": None,
            "bucket_ms": None,
            "total": 0,
            "buckets": [],
        }
        f = EventFilter(since="2024-05-01T00:00:00.000000Z", until="2024-05-02T00:00:00.000000Z")
        histogram = await store.histogram(f, buckets=24)
        assert [b.count for b in histogram.buckets] == [0] * 24


async def test_events_appended_later_are_counted(any_store: AuditStore) -> None:
    await any_store.append(NewEvent("a.b", "r"))
    await any_store.append(NewEvent("a.c", "r"))
    assert (await any_store.histogram(EventFilter())).total == 2
    assert (await any_store.histogram(EventFilter(action="a.c"))).total == 1


async def test_sqlite_search_paths_agree(store_path: Path) -> None:
    """The SQLite store counts a search through its index (few matches) or by testing
    every event with LIKE (many): the same counts either way."""
    async with SQLiteStore(store_path) as store:
        events = [
            (NewEvent("auth.login", "session", user_id=f"user-{n % 7}"), ts(1 + n % 3, n % 60))
            for n in range(300)
        ]
        written = await write(store, events)
        for term in ("user-3", "SESSION", "ser-"):
            f = EventFilter(search=term, since=ts(1, 30))
            indexed = await store.histogram(f, buckets=7)
            store.backend._search_index_max_matches = 0  # every search now tests each event
            scanned = await store.histogram(f, buckets=7)
            store.backend._search_index_max_matches = 10**9  # and now always uses the index
            everything = await store.histogram(f, buckets=7)
            store.backend._search_index_max_matches = SEARCH_INDEX_MAX_MATCHES
            assert indexed == scanned == everything
            check_against_model(indexed, written, f)


async def test_bucket_count_is_checked(any_store: AuditStore) -> None:
    for buckets in (0, MAX_BUCKETS + 1):
        with pytest.raises(ValueError):
            await any_store.histogram(EventFilter(), buckets=buckets)


# --- GET /histogram ------------------------------------------------------------------------


@pytest.fixture
async def edge_client(store_path: Path) -> Any:
    async with SQLiteStore(store_path) as store:
        written = await write(store, EDGE_EVENTS)
        async with client_for(AdminApp(store, authorize=authorize)) as client:
            yield client, written


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"buckets": "3"},
        {"action": "auth.*", "buckets": "500"},
        {"from": "2024-05-02", "to": "2024-05-02"},  # a date `to` includes that whole day
        {"from": "2024-05-02T02:00:00+02:00", "to": "2024-05-03T00:00:00Z", "buckets": "1"},
        {"search": "session", "user_id": "u1"},
        {"outcome": "failure", "buckets": ""},  # empty: the default
    ],
)
async def test_the_route_counts_what_events_returns(
    edge_client: tuple[httpx.AsyncClient, list[Event]], params: dict[str, str]
) -> None:
    client, written = edge_client
    response = await client.get("/histogram", params=params, headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"from", "to", "bucket_ms", "total", "buckets"}
    filters = {name: value for name, value in params.items() if name != "buckets"}
    ids = await fetch_all_ids(client, filters)
    assert body["total"] == sum(b["count"] for b in body["buckets"]) == len(ids) > 0
    assert len(body["buckets"]) <= int(params.get("buckets") or 60)
    # Each event /events returns lies in exactly one interval, which counted it.
    by_id = {event.id: event for event in written}
    for bucket in body["buckets"]:
        inside = [i for i in ids if bucket["start"] <= by_id[i].timestamp < bucket["end"]]
        assert bucket["count"] == len(inside), bucket
    f = parse_filter(filters)
    buckets = tuple(HistogramBucket(b["start"], b["end"], b["count"]) for b in body["buckets"])
    check_against_model(Histogram(body["from"], body["to"], body["bucket_ms"], buckets), written, f)


async def test_the_route_with_nothing_to_count(
    edge_client: tuple[httpx.AsyncClient, list[Event]],
) -> None:
    client, _ = edge_client
    response = await client.get("/histogram", params={"user_id": "nobody"}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        "from": None,
        "to": None,
        "bucket_ms": None,
        "total": 0,
        "buckets": [],
    }
    response = await client.get(
        "/histogram",
        params={"from": "2030-01-01", "to": "2030-01-01", "buckets": "24"},
        headers=ADMIN,
    )
    body = response.json()
    assert (body["from"], body["to"], body["total"]) == (
        "2030-01-01T00:00:00.000000Z",
        "2030-01-02T00:00:00.000000Z",
        0,
    )
    assert [b["count"] for b in body["buckets"]] == [0] * 24
    assert body["buckets"][0]["start"] == "2030-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("buckets=0", "buckets"),
        ("buckets=501", "buckets"),
        ("buckets=-1", "buckets"),
        ("buckets=1.5", "buckets"),
        ("buckets=ten", "buckets"),
        ("buckets=%EF%BC%91", "buckets"),  # a fullwidth digit
        ("buckets=" + "9" * 2000, "buckets"),
        ("buckets=2&buckets=3", "buckets"),
        ("bucket=3", "bucket"),
        ("limit=10", "limit"),  # a page parameter means nothing here
        ("from=yesterday", "from"),
        ("from=2024-05-03&to=2024-05-02", "to"),
        ("outcome=maybe", "outcome"),
        ("search=a%00b", "search"),
    ],
)
async def test_bad_parameters_are_named_in_a_400(
    edge_client: tuple[httpx.AsyncClient, list[Event]], query: str, param: str
) -> None:
    client, _ = edge_client
    response = await client.get(f"/histogram?{query}", headers=ADMIN)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["code"] in ("invalid_parameter", "unknown_parameter")
    assert error["message"]


async def test_the_route_needs_access(edge_client: tuple[httpx.AsyncClient, list[Event]]) -> None:
    client, _ = edge_client
    assert (await client.get("/histogram")).status_code == 401
    response = await client.get("/histogram", headers=VIEWER)
    assert response.status_code == 403
    assert "buckets" not in response.text


def test_the_route_is_in_the_openapi_document() -> None:
    from auditmw._admin.app import openapi_document

    document = openapi_document()
    operation = document["paths"]["/histogram"]["get"]
    names = [parameter["name"] for parameter in operation["parameters"]]
    assert names[-1] == "buckets" and {"from", "to", "search", "action"} <= set(names)
    schema = document["components"]["schemas"]["Histogram"]
    assert set(schema["required"]) == {"from", "to", "bucket_ms", "total", "buckets"}
