"""Queries, pages, exports order and facets: the same answers from every store.

The events are written with chosen timestamps (ties included) through the store's own
backend's append, so both backends hold the same chained rows; the expected answers come from
the plain-Python model in ``test_query``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from auditmw import AuditStore, Event, EventFilter, NewEvent, QueryError
from auditmw.testing import append_at

from .conftest import StoreFactory
from .test_query import SAMPLE, model_matches, model_newest_first, random_events, ts


async def write(store: AuditStore, events: Sequence[tuple[NewEvent, str]]) -> list[Event]:
    """Commit ``(event, timestamp)`` pairs in this order, with exactly those timestamps."""
    return await append_at(store, events)


async def all_pages(store: AuditStore, f: EventFilter, limit: int) -> list[str]:
    ids: list[str] = []
    page = await store.query(f, limit=limit)
    while True:
        ids += [event.id for event in page.events]
        if page.next_cursor is None:
            return ids
        page = await store.query(f, limit=limit, cursor=page.next_cursor)


FILTERS = [
    EventFilter(),
    EventFilter(user_id="u1"),
    EventFilter(user_email="BOB@example.com"),
    EventFilter(action="auth.login"),
    EventFilter(action="project.*"),
    EventFilter(action="proj*"),
    EventFilter(action="*"),
    EventFilter(resource="project", resource_id="P-1"),
    EventFilter(outcome="denied"),
    EventFilter(since=ts(2), until=ts(3)),
    EventFilter(user_id="u1", action="auth.*", since=ts(2)),
    EventFilter(search="EXAMPLE.COM"),
    EventFilter(search="p%_"),
    EventFilter(search="_"),
    EventFilter(search="'1\""),
    EventFilter(search="Ü-USER"),
    EventFilter(search="x"),
    EventFilter(search="session", user_id="u1"),
    EventFilter(search="zzzzzz"),
]


async def test_queries_match_the_model_on_every_store(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        written = await write(store, SAMPLE)
        for f in FILTERS:
            expected = model_newest_first(written, f)
            for limit in (1, 3, 100):
                assert await all_pages(store, f, limit) == expected, (f, limit)
            chain_order = [
                e.id for e in sorted(written, key=lambda e: (e.log, e.seq)) if model_matches(e, f)
            ]
            assert [event.id async for event in store.iter_events(f)] == chain_order, f
        page = await store.query(EventFilter(), limit=3, offset=3)
        assert [e.id for e in page.events] == model_newest_first(written, EventFilter())[3:6]
        for column in ("action", "resource", "outcome"):
            assert await store.distinct_values(column) == sorted(
                {getattr(e, column) for e in written}
            )
        assert (await store.verify()).ok


async def test_keyset_pages_survive_ties_on_every_store(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        written = await write(store, random_events(3, 120))
        expected = model_newest_first(written, EventFilter())
        first = await store.query(EventFilter(), limit=7)
        await store.append(NewEvent("late.event", "r"))  # newer: never on later pages
        ids = [e.id for e in first.events]
        cursor = first.next_cursor
        while cursor:
            page = await store.query(EventFilter(), limit=7, cursor=cursor)
            ids += [e.id for e in page.events]
            cursor = page.next_cursor
        assert ids == expected


async def test_foreign_and_forged_cursors_are_refused_on_every_store(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        await write(store, SAMPLE)
        cursor = (await store.query(EventFilter(), limit=2)).next_cursor
        assert cursor is not None
        with pytest.raises(QueryError) as foreign:
            await store.query(EventFilter(user_id="u1"), limit=2, cursor=cursor)
        assert foreign.value.param == "cursor"
        with pytest.raises(QueryError):
            await store.query(EventFilter(), limit=2, cursor="bm90IGEgY3Vyc29y")
