"""Honest clients and one hostile client at once, over real HTTP, on both backends and
under both failure policies: every honest acknowledged event is stored, exactly once.

The app is shaped like the README's (``POST /items/{rid}`` records ``item.created`` for
``rid``; tests/_refusals.py), served by uvicorn on 127.0.0.1. Its database refuses events
whose id starts with ``refuse-`` (a trigger, as an operator might add one). While honest
clients create items, the hostile client loops through ids built to hurt: control
characters, NUL, bytes that are not UTF-8, an id over the limit, and ids the database
refuses. Group commit puts its events in the same transactions as the honest ones.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from auditmw import EventFilter, FailurePolicy, open_store

from ._refusals import (
    REFUSAL_MESSAGE,
    REFUSED_PREFIX,
    items_app,
    refuse_marked_rows,
    watch_commits,
)
from ._servers import serving_in_loop

HONEST_CLIENTS = 8
REQUESTS_PER_HONEST_CLIENT = 25
HOSTILE_ROUNDS = 10
# What the hostile client puts after /items/ (percent-encoded as sent), by what should
# become of it: "stored" (the text is valid, whatever it holds), "invalid" (422: no
# event can hold it), "refused" (the database refuses it).
HOSTILE_IDS = [
    ("stored", "evil%00x"),  # NUL: kept in the entry, U+FFFD in the indexed column
    ("stored", "%00"),
    ("stored", "ctl%01%08%09%0A%0D%1B%7F"),  # C0 controls and DEL
    ("stored", "c1%C2%80%C2%85%C2%9F"),  # C1 controls
    ("stored", "%ED%A0%80"),  # an encoded lone surrogate: not UTF-8, decoded as U+FFFD
    ("stored", "%C0%80%FF%FE"),  # an overlong NUL and bytes no UTF-8 text holds
    ("stored", "rtl%E2%80%AEtxt%EF%BB%BF"),  # a bidi override and a BOM
    ("invalid", "x" * 300),  # over the 256-character limit
    ("refused", REFUSED_PREFIX + "{n}"),
    ("refused", REFUSED_PREFIX + "%00{n}"),
]


@dataclass(frozen=True)
class Sent:
    kind: str  # "honest", or what HOSTILE_IDS expects
    request_id: str
    response: httpx.Response


async def honest_client(base_url: str, client: int) -> list[Sent]:
    sent = []
    async with httpx.AsyncClient(base_url=base_url) as http:
        for n in range(REQUESTS_PER_HONEST_CLIENT):
            request_id = f"honest-{client}-{n}"
            response = await http.post(f"/items/{request_id}", headers={"x-request-id": request_id})
            sent.append(Sent("honest", request_id, response))
    return sent


async def hostile_client(base_url: str) -> list[Sent]:
    """Each round, every hostile id at once (over as many connections)."""
    sent = []
    async with httpx.AsyncClient(base_url=base_url) as http:

        async def send(kind: str, rid: str) -> Sent:
            request_id = f"hostile-{uuid.uuid4().hex}"
            response = await http.post(f"/items/{rid}", headers={"x-request-id": request_id})
            return Sent(kind, request_id, response)

        for round_ in range(HOSTILE_ROUNDS):
            sends = [
                send(kind, rid.format(n=f"{round_}-{n}"))
                for n, (kind, rid) in enumerate(HOSTILE_IDS)
            ]
            sent += await asyncio.gather(*sends)
    return sent


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
async def test_one_hostile_client_among_honest_ones_costs_them_nothing(
    store_url_factory: Callable[[], str], fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    policy = FailurePolicy(fail_open=fail_open)
    async with open_store(store_url_factory()) as store:
        await refuse_marked_rows(store)
        commits = watch_commits(store)
        with caplog.at_level(logging.ERROR, logger="auditmw"):
            async with serving_in_loop(items_app(store, policy)) as base_url:
                clients = [honest_client(base_url, c) for c in range(HONEST_CLIENTS)]
                results = await asyncio.gather(*clients, hostile_client(base_url))
        sent = [one for result in results for one in result]
        events = [event async for event in store.iter_events(EventFilter())]
        report = await store.verify()
    stored = Counter(event.request_id for event in events)
    resource_ids = {event.request_id: event.resource_id for event in events}

    # Refused events shared transactions with others (what this test is about).
    assert max(commits.refused) > 1
    by_kind = Counter(one.kind for one in sent)
    assert by_kind["honest"] == HONEST_CLIENTS * REQUESTS_PER_HONEST_CLIENT
    refused = by_kind["refused"]
    for one in sent:
        body = one.response.json()
        status = one.response.status_code
        if one.kind in ("honest", "stored"):
            assert (status, body) == (201, {"recorded": True}), (one.kind, one.request_id, body)
            assert stored[one.request_id] == 1, one.request_id  # stored, exactly once
            if one.kind == "honest":
                assert resource_ids[one.request_id] == one.request_id
            continue
        assert stored[one.request_id] == 0, one.request_id
        if one.kind == "invalid":
            assert status == 422 and body["error"]["code"] == "invalid_request"
        elif fail_open:  # refused, counted and logged below
            assert (status, body) == (201, {"recorded": False})
        else:
            assert status == 422 and body["error"]["code"] == "audit_event_refused"
    assert policy.failures == refused > 0
    losses = [r.getMessage() for r in caplog.records if "was not recorded" in r.getMessage()]
    assert len(losses) == refused
    policy_name = "fail-open" if fail_open else "fail-closed"
    assert all(policy_name in loss and REFUSAL_MESSAGE in loss for loss in losses)
    assert report.ok, report.findings
    assert report.entries == by_kind["honest"] + by_kind["stored"] == stored.total()
