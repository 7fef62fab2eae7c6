from __future__ import annotations

import asyncio

from auditmw import GENESIS_HASH, NewEvent, SQLiteStore


async def test_concurrent_appends_form_one_gapless_chain(store: SQLiteStore) -> None:
    events = await asyncio.gather(
        *(
            store.append(NewEvent(action="item.created", resource="item", resource_id=str(i)))
            for i in range(300)
        )
    )
    assert sorted(event.seq for event in events) == list(range(1, 301))
    by_seq = {event.seq: event for event in events}
    assert by_seq[1].prev_hash == GENESIS_HASH
    for seq in range(2, 301):
        assert by_seq[seq].prev_hash == by_seq[seq - 1].hash
    report = await store.verify()
    assert report.ok, report.findings
    assert report.entries == 300
