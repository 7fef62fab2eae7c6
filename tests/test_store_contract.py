"""The behaviour every store shares, run against SQLite, PostgreSQL and the in-memory
reference backend alike."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from auditmw import (
    GENESIS_HASH,
    AuditStore,
    NewEvent,
    StoreClosedError,
    ValidationError,
)
from auditmw._stores.verify import YIELD_EVERY, verify_rows

from ._waiting import until
from .conftest import StoreFactory


async def test_concurrent_appends_form_one_gapless_chain(contract_store: AuditStore) -> None:
    events = await asyncio.gather(
        *(
            contract_store.append(
                NewEvent(action="item.created", resource="item", resource_id=str(i))
            )
            for i in range(300)
        )
    )
    assert sorted(event.seq for event in events) == list(range(1, 301))
    by_seq = {event.seq: event for event in events}
    assert by_seq[1].prev_hash == GENESIS_HASH
    for seq in range(2, 301):
        assert by_seq[seq].prev_hash == by_seq[seq - 1].hash
    report = await contract_store.verify()
    assert report.ok, report.findings
    assert report.entries == 300
    assert report.warnings == []


async def test_verify_lets_other_tasks_run_every_few_hundred_rows(
    contract_store: AuditStore,
) -> None:
    """The admin app verifies on the app's own event loop: requests must still be served
    while it reads a long log (the stores hand rows over a thousand at a time)."""
    await asyncio.gather(
        *(contract_store.append(NewEvent(action="a", resource="r")) for _ in range(3000))
    )
    checked = 0

    def leaf(log: str, hash: str) -> None:
        nonlocal checked
        checked += 1

    gaps: list[int] = []  # rows checked between two turns of another task
    finished = False

    async def another_request() -> None:
        seen = 0
        while not finished:
            gaps.append(checked - seen)
            seen = checked
            await asyncio.sleep(0)

    other = asyncio.ensure_future(another_request())
    report = await verify_rows(contract_store.iter_chain_rows(), on_leaf=leaf)
    finished = True
    await other
    assert report.ok and checked == 3000
    assert 0 < max(gaps) <= YIELD_EVERY


async def test_appended_event_reads_back_identically(contract_store: AuditStore) -> None:
    details = {"changes": {"name": {"from": "a", "to": "ü\U0001f600"}}, "n": 1.5, "z": None}
    event = await contract_store.append(
        NewEvent(
            action="project.updated",
            resource="project",
            resource_id="p1",
            details=details,
            user_id="u1",
            user_email="a@example.com",
            ip_address="2001:db8::1",
            user_agent="ua/1.0",
            request_id="req-1",
            outcome="failure",
        )
    )
    assert await contract_store.get(event.id) == event
    assert event.details == details
    assert await contract_store.get("no-such-id") is None
    assert await contract_store.count() == 1


async def test_each_log_is_its_own_chain(contract_store: AuditStore) -> None:
    first = await contract_store.append(NewEvent(action="a", resource="r", log="tenant-a"))
    second = await contract_store.append(NewEvent(action="a", resource="r", log="tenant-b"))
    third = await contract_store.append(NewEvent(action="a", resource="r", log="tenant-a"))
    assert (first.seq, second.seq, third.seq) == (1, 1, 2)
    assert second.prev_hash == GENESIS_HASH and third.prev_hash == first.hash
    report = await contract_store.verify()
    assert report.ok and set(report.logs) == {"tenant-a", "tenant-b"}


async def test_a_bad_event_is_rejected_before_it_is_queued(contract_store: AuditStore) -> None:
    good = [contract_store.append(NewEvent(action="ok", resource="r")) for _ in range(20)]
    bad = contract_store.append(NewEvent(action="", resource="r"))
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], ValidationError) and results[-1].field == "action"
    assert sorted(event.seq for event in results[:-1]) == list(range(1, 21))  # type: ignore[union-attr]


async def test_reopening_continues_the_chain(store_factory: StoreFactory) -> None:
    async with store_factory() as store:
        last = await store.append(NewEvent(action="a", resource="r"))
    async with store_factory() as store:
        following = await store.append(NewEvent(action="b", resource="r"))
        assert following.seq == last.seq + 1 and following.prev_hash == last.hash
        assert (await store.verify()).ok
    with pytest.raises(StoreClosedError):
        await store.append(NewEvent(action="c", resource="r"))


async def test_two_open_stores_taking_turns_keep_one_chain(
    store_factory: StoreFactory,
) -> None:
    """Each store chains after what the other appended in between, not after the last
    head it knew: two app instances (or workers) sharing one database."""
    async with store_factory() as first, store_factory() as second:
        appended = []
        for turn in range(6):
            store = (first, second)[turn % 2]
            batch = await asyncio.gather(
                *(store.append(NewEvent(action=f"a{turn}", resource="r")) for _ in range(turn + 1)),
                store.append(NewEvent(action=f"a{turn}", resource="r", log="other")),
            )
            appended.extend(batch[:-1])
        assert [event.seq for event in appended] == list(range(1, 22))
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(appended))
        report = await first.verify()
        assert report.ok, report.findings
        assert report.logs["default"].entries == 21 and report.logs["other"].entries == 6


async def test_a_batch_larger_than_one_insert_statement_keeps_one_chain(
    store_factory: StoreFactory,
) -> None:
    """SQLite writes more than ROWS_PER_INSERT rows in several statements of one
    transaction; PostgreSQL has no such limit. Either way: one gapless chain."""
    async with store_factory(max_batch=3000) as store:
        events = await asyncio.gather(
            *(store.append(NewEvent(action="bulk", resource="r")) for _ in range(2500))
        )
        assert [event.seq for event in events] == list(range(1, 2501))
        report = await store.verify()
        assert report.ok and report.entries == 2500


async def test_close_commits_every_pending_append(store_factory: StoreFactory) -> None:
    store = await store_factory().open()
    pending = [
        asyncio.ensure_future(store.append(NewEvent(action="a", resource="r"))) for _ in range(500)
    ]
    await until(lambda: store.pending == 500)  # every append is queued
    await store.close()
    assert all(task.done() and not task.cancelled() for task in pending)
    async with store_factory() as reopened:
        assert await reopened.count() == 500


async def test_a_cancelled_append_is_still_committed_and_the_others_answered(
    contract_store: AuditStore,
) -> None:
    appends = [
        asyncio.create_task(
            contract_store.append(NewEvent(action="a", resource="r", resource_id=str(i)))
        )
        for i in range(50)
    ]
    await until(lambda: contract_store.pending == 50)  # every append is queued
    appends[7].cancel()
    results = await asyncio.gather(*appends, return_exceptions=True)
    assert isinstance(results[7], asyncio.CancelledError)
    assert sum(1 for result in results if not isinstance(result, BaseException)) == 49
    assert await contract_store.count() == 50  # queued before the cancel: committed anyway
    assert (await contract_store.verify()).ok
