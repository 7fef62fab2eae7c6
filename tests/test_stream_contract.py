"""The stream bookkeeping every backend keeps (``auditmw_streams``: cursors and lease) and
the range read a forwarder makes, run against SQLite, PostgreSQL and the in-memory
backend alike."""

from __future__ import annotations

import asyncio
import dataclasses

from auditmw import AuditStore, NewEvent
from auditmw._stores.filters import EventFilter

from .conftest import StoreFactory


async def _append(store: AuditStore, count: int, log: str = "default", **fields: str) -> None:
    await asyncio.gather(
        *(
            store.append(
                NewEvent(
                    action=fields.get("action", "item.created"),
                    resource="item",
                    resource_id=str(i),
                    log=log,
                )
            )
            for i in range(count)
        )
    )


async def test_events_after_reads_a_range_of_one_log_in_seq_order(
    contract_store: AuditStore,
) -> None:
    await _append(contract_store, 30)
    await _append(contract_store, 5, log="other")
    backend = contract_store.backend
    events = await backend.events_after("default", 10, 30, 7, EventFilter())
    assert [event.seq for event in events] == list(range(11, 18))
    assert {event.log for event in events} == {"default"}
    assert [e.seq for e in await backend.events_after("default", 25, 28, 100, EventFilter())] == [
        26,
        27,
        28,
    ]
    assert await backend.events_after("default", 30, 30, 10, EventFilter()) == []
    assert await backend.events_after("nothing", 0, 10, 10, EventFilter()) == []
    stored = await contract_store.get(events[0].id)
    assert stored == events[0]


async def test_events_after_applies_the_filter(contract_store: AuditStore) -> None:
    await contract_store.append(NewEvent(action="user.login", resource="user"))
    await contract_store.append(NewEvent(action="item.created", resource="item"))
    await contract_store.append(NewEvent(action="user.logout", resource="user"))
    backend = contract_store.backend
    users = await backend.events_after("default", 0, 3, 10, EventFilter(action="user.*"))
    assert [(event.seq, event.action) for event in users] == [(1, "user.login"), (3, "user.logout")]
    items = await backend.events_after("default", 0, 3, 10, EventFilter(resource="item"))
    assert [event.seq for event in items] == [2]


async def test_a_stream_is_created_by_its_first_claim(contract_store: AuditStore) -> None:
    backend = contract_store.backend
    assert await backend.stream_states(None) == []
    state = await backend.claim_stream("siem", "a", 100.0, 115.0, "2026-01-01T00:00:00.000000Z")
    assert state is not None
    assert (state.name, state.cursors, state.lease_owner, state.lease_expires) == (
        "siem",
        {},
        "a",
        115.0,
    )
    assert state.created_at == "2026-01-01T00:00:00.000000Z"
    assert await backend.stream_states(None) == [state]
    assert await backend.stream_states("siem") == [state]
    assert await backend.stream_states("other") == []


async def test_only_one_owner_holds_a_lease_until_it_expires(contract_store: AuditStore) -> None:
    backend = contract_store.backend
    created = "2026-01-01T00:00:00.000000Z"
    assert await backend.claim_stream("siem", "a", 100.0, 115.0, created) is not None
    assert await backend.claim_stream("siem", "b", 110.0, 125.0, created) is None
    # The holder renews its own lease; the other still waits.
    renewed = await backend.claim_stream("siem", "a", 112.0, 127.0, created)
    assert renewed is not None and renewed.lease_expires == 127.0
    assert await backend.claim_stream("siem", "b", 126.0, 141.0, created) is None
    # Expired: the other takes it over, and the first one's writes are refused.
    taken = await backend.claim_stream("siem", "b", 128.0, 143.0, created)
    assert taken is not None and taken.lease_owner == "b"
    stale = dataclasses.replace(taken, cursors={"default": 99}, lease_owner="a")
    assert await backend.save_stream(stale, "a") is False
    assert (await backend.stream_states("siem"))[0].cursors == {}
    # Other streams are independent.
    assert await backend.claim_stream("archive", "a", 128.0, 143.0, created) is not None


async def test_the_holder_saves_cursors_errors_and_releases(contract_store: AuditStore) -> None:
    backend = contract_store.backend
    state = await backend.claim_stream("siem", "a", 100.0, 115.0, "2026-01-01T00:00:00.000000Z")
    assert state is not None
    saved = dataclasses.replace(
        state,
        cursors={"default": 12, "other log": 3},
        settings={"destination": "file:///x", "filter": {"action": "user.*"}},
        delivered_at="2026-01-01T00:00:01.000000Z",
        last_error="refused: no",
        lease_expires=130.0,
    )
    assert await backend.save_stream(saved, "a") is True
    assert await backend.stream_states("siem") == [saved]
    released = dataclasses.replace(saved, lease_owner=None, lease_expires=0.0)
    assert await backend.save_stream(released, "a") is True
    # Free again: anyone may claim it at once, and finds the cursors as left.
    claimed = await backend.claim_stream("siem", "b", 101.0, 116.0, "later")
    assert claimed is not None
    assert claimed.cursors == {"default": 12, "other log": 3}
    assert claimed.created_at == "2026-01-01T00:00:00.000000Z"


async def test_stream_state_is_shared_by_stores_of_one_log(store_factory: StoreFactory) -> None:
    async with store_factory() as first, store_factory() as second:
        state = await first.backend.claim_stream("siem", "a", 100.0, 115.0, "t")
        assert state is not None
        assert await second.backend.claim_stream("siem", "b", 101.0, 116.0, "t") is None
        assert [s.lease_owner for s in await second.backend.stream_states(None)] == ["a"]
