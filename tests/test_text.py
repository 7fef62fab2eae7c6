"""Text that is not clean, in the log itself (docs/format.md "Stored columns"): on both
backends, any string in any event field is either refused with a ``ValidationError``
naming the field, or committed, read back exactly and verified. U+0000 is kept exactly in
the entry; the indexed columns hold U+FFFD for it. Filters refuse control characters."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from auditmw import (
    GENESIS_HASH,
    Actor,
    AdminApp,
    AuditStore,
    EventFilter,
    Limits,
    NewEvent,
    QueryError,
    SQLiteStore,
    ValidationError,
    open_store,
)
from auditmw._admin.parameters import parse_filter
from auditmw._event import prepare
from auditmw._stores.verify import COLUMN_MISMATCH, INDEX_COLUMNS

from ._servers import serving_in_loop

# Characters where text goes wrong: NUL and other controls, DEL, lone surrogates (both
# halves), a whole astral character, U+FFFD itself, line/paragraph separators, blanks.
AWKWARD = ["\x00", "\x01", "\n", "\x1f", "\x7f", "\ud800", "\udfff", "\U0001f600", "\ufffd"]
AWKWARD += ["\u2028", " ", "\u3000", "é", '"', "\\"]
characters = st.one_of(st.characters(exclude_categories=()), st.sampled_from(AWKWARD))
any_text = st.text(characters, max_size=30)

# Small limits, so that "over the limit" is drawn often.
LIMITS = Limits(max_chars=16, max_email_chars=20, max_user_agent_chars=24)
TEXT_FIELDS = {
    "action": 16,
    "resource": 16,
    "resource_id": 16,
    "user_id": 16,
    "request_id": 16,
    "log": 16,
    "user_email": 20,
    "user_agent": 24,
}
REQUIRED = {"action", "resource", "log"}


def has_lone_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def refused(name: str, text: str) -> bool:
    """Whether the documented rules (docs/format.md, README) refuse ``text`` as ``name``."""
    return (
        has_lone_surrogate(text)
        or len(text) > TEXT_FIELDS[name]
        or (name in REQUIRED and not text.strip())
        or (name == "log" and "\x00" in text)
    )


def column_form(text: str | None) -> str | None:
    return None if text is None else text.replace("\x00", "\ufffd")


async def rows_of(store: AuditStore) -> dict[str, dict[str, Any]]:
    """Each stored row's index columns, by event id."""
    found = {}
    async for row in store.iter_chain_rows():
        columns = dict(zip(INDEX_COLUMNS, row.columns, strict=True))
        found[columns["id"]] = columns
    return found


# --- any text in any field, on both backends -------------------------------------------------


class PropertyRun:
    """One store for all the examples of a test (a fresh one per example would take the
    test from seconds to minutes on PostgreSQL); the log must verify at the end."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner()
        self.store = open_store(url, limits=LIMITS)
        self.appended = 0
        self.refusals = 0

    def __enter__(self) -> PropertyRun:
        self.runner.run(self.store.open())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.runner.run(self.store.close())
        finally:
            self.runner.close()

    def append(self, event: NewEvent) -> Any:
        """The committed event, or the ``ValidationError`` that refused it."""
        try:
            committed = self.runner.run(self.store.append(event))
        except ValidationError as error:
            self.refusals += 1
            return error
        self.appended += 1
        assert self.runner.run(self.store.get(committed.id)) == committed
        return committed

    def verify(self) -> None:
        report = self.runner.run(self.store.verify())
        assert report.ok, report.summary()
        assert report.entries == self.appended


PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("name", sorted(TEXT_FIELDS))
def test_any_text_in_a_text_field_is_refused_naming_it_or_kept_exactly(
    store_url_factory: Callable[[], str], name: str
) -> None:
    with PropertyRun(store_url_factory()) as run:

        @PROPERTY_SETTINGS
        @given(text=any_text)
        def check(text: str) -> None:
            outcome = run.append(NewEvent(**{"action": "a", "resource": "r", name: text}))
            if refused(name, text):
                assert isinstance(outcome, ValidationError), outcome
                assert outcome.field == name
            else:
                assert not isinstance(outcome, ValidationError), outcome
                assert getattr(outcome, name) == text  # exactly: NUL, controls and all

        check()
        run.verify()


@pytest.mark.parametrize("part", ["key", "value"])
def test_any_text_in_details_is_refused_naming_it_or_kept_exactly(
    store_url_factory: Callable[[], str], part: str
) -> None:
    with PropertyRun(store_url_factory()) as run:

        @PROPERTY_SETTINGS
        @given(text=any_text)
        def check(text: str) -> None:
            details = {text: [1]} if part == "key" else {"note": {"list": ["x", text]}}
            outcome = run.append(NewEvent(action="a", resource="r", details=details))
            if has_lone_surrogate(text):
                assert isinstance(outcome, ValidationError), outcome
                assert outcome.field.startswith("details")
            else:
                assert not isinstance(outcome, ValidationError), outcome
                assert outcome.details == details

        check()
        run.verify()


ip_like = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(str).flatmap(lambda ip: any_text.map(lambda zone: f"{ip}%{zone}")),
    any_text,
)


def test_any_text_as_an_ip_address_is_refused_unless_it_is_one(
    store_url_factory: Callable[[], str],
) -> None:
    with PropertyRun(store_url_factory()) as run:

        @PROPERTY_SETTINGS
        @given(text=ip_like)
        def check(text: str) -> None:
            outcome = run.append(NewEvent(action="a", resource="r", ip_address=text))
            try:
                ipaddress.ip_address(text)
                is_ip = not any(ord(char) < 0x20 or char == "\x7f" for char in text)
            except ValueError:
                is_ip = False
            if is_ip:
                assert not isinstance(outcome, ValidationError), outcome
                assert outcome.ip_address == text
            else:
                assert isinstance(outcome, ValidationError), outcome
                assert outcome.field == "ip_address"

        check()
        run.verify()


# --- U+0000: exact in the entry, U+FFFD in the columns ---------------------------------------


def with_nul(number: int) -> NewEvent:
    mark = f"\x00{number}\x00"
    return NewEvent(
        action=f"nul{mark}.made",
        resource=f"thing{mark}",
        resource_id=f"id{mark}",
        details={f"key{mark}": f"value{mark}", "list": [mark]},
        user_id=f"user{mark}",
        user_email=f"e{mark}@example.com",
        ip_address="192.0.2.1",
        user_agent=f"agent{mark}",
        request_id=f"req{mark}",
    )


TEXT_COLUMNS = ["action", "resource", "resource_id", "user_id", "user_email", "user_agent"]
TEXT_COLUMNS += ["request_id"]


async def test_events_with_nul_in_every_text_field_commit_with_good_ones_and_verify(
    any_store: AuditStore,
) -> None:
    """PostgreSQL text refuses U+0000, and one refused row failed its whole group-commit
    batch: the good events appended at the same time were lost too."""
    given_events = []
    for number in range(40):
        given_events += [with_nul(number), NewEvent(action="ok.made", resource="thing")]
    committed = await asyncio.gather(*(any_store.append(event) for event in given_events))

    assert sorted(event.seq for event in committed) == list(range(1, 81))
    for new, event in zip(given_events, committed, strict=True):
        for name in [*TEXT_COLUMNS, "details", "ip_address", "outcome"]:
            assert getattr(event, name) == getattr(new, name)
        assert await any_store.get(event.id) == event  # read back exactly, from the entry
    report = await any_store.verify()
    assert report.ok, report.summary()
    assert report.entries == 80

    rows = await rows_of(any_store)
    for event in committed:
        for name in TEXT_COLUMNS:
            assert rows[event.id][name] == column_form(getattr(event, name))
    # Exact filters and search match the column form.
    [found] = (await any_store.query(EventFilter(resource_id="id\ufffd7\ufffd"))).events
    assert found.resource_id == "id\x007\x00"
    searched = (await any_store.query(EventFilter(search="user\ufffd12\ufffd"))).events
    assert [event.user_id for event in searched] == ["user\x0012\x00"]


async def test_a_log_name_with_nul_is_refused(any_store: AuditStore) -> None:
    # Its column form could be another log's name: two chains in one.
    with pytest.raises(ValidationError) as raised:
        await any_store.append(NewEvent(action="a", resource="r", log="billing\x00"))
    assert raised.value.field == "log"
    assert await any_store.count() == 0


def insert_as_written(path: Path, event: NewEvent, **columns: str) -> None:
    """Append ``event`` to the SQLite store at ``path`` the way a store written before the
    column rule did (its text columns exactly as the entry), with ``columns`` changed."""
    prepared = prepare(event, Limits())
    entry, hash_ = prepared.seal(1, GENESIS_HASH)
    row = {
        **prepared.columns,
        "seq": 1,
        "prev_hash": GENESIS_HASH,
        "hash": hash_,
        "personal": prepared.personal,  # format 2: the openings beside the entry
        **columns,
    }
    names = ["log", *INDEX_COLUMNS, "seq", "hash", "personal", "entry"]
    values = [row[name] for name in names[:-1]] + [entry]
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"INSERT INTO auditmw_events ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            values,
        )


async def test_verify_accepts_the_exact_text_that_older_sqlite_stores_hold(
    store_path: Path,
) -> None:
    async with SQLiteStore(store_path):
        pass
    insert_as_written(store_path, with_nul(1))  # raw NUL in the columns
    async with SQLiteStore(store_path) as store:
        report = await store.verify()
        [event] = (await store.query(EventFilter())).events
        assert report.ok, report.summary()
        assert event.user_id == "user\x001\x00"
        # and the chain goes on under the new rule
        await store.append(with_nul(2))
        assert (await store.verify()).ok


@pytest.mark.parametrize(
    "column", ["user_id", "user_email", "action", "resource", "resource_id", "request_id"]
)
async def test_a_text_column_holding_neither_form_is_a_mismatch(
    store_path: Path, column: str
) -> None:
    async with SQLiteStore(store_path):
        pass
    event = with_nul(1)
    exact = getattr(event, column)
    insert_as_written(store_path, event, **{column: exact.replace("\x00", "?")})
    async with SQLiteStore(store_path) as store:
        report = await store.verify()
    [finding] = report.findings
    assert finding.kind == COLUMN_MISMATCH
    assert column in finding.message


# --- filters ------------------------------------------------------------------------------

FILTERS = ["user_id", "user_email", "action", "resource", "resource_id", "outcome", "search"]


@pytest.mark.parametrize("param", FILTERS)
@pytest.mark.parametrize("value", ["a\x00b", "pasted\n", "\t", "x\x7f", "x\ud800", "\udfffz"])
def test_filters_refuse_control_characters_and_lone_surrogates(param: str, value: str) -> None:
    with pytest.raises(QueryError) as raised:
        parse_filter({param: value})
    assert raised.value.param == param
    with pytest.raises(QueryError):
        EventFilter(**{param: value})


def admin_app(store: AuditStore) -> AdminApp:
    def authorize(request: Request) -> Actor:
        return Actor(user_id="auditor")

    return AdminApp(store, authorize=authorize)


async def test_the_admin_app_answers_text_it_cannot_look_up_with_4xx(
    any_store: AuditStore,
) -> None:
    await any_store.append(with_nul(1))
    transport = httpx.ASGITransport(admin_app(any_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        by_nul = await client.get("/events", params={"resource_id": "id\x001\x00"})
        by_column_form = await client.get("/events", params={"resource_id": "id\ufffd1\ufffd"})
        no_such_id = await client.get("/events/%00")
        no_such_proof = await client.get("/events/%00/proof")
    assert by_nul.status_code == 400
    assert by_nul.json()["error"]["param"] == "resource_id"
    assert by_column_form.status_code == 200
    assert [event["resource_id"] for event in by_column_form.json()["events"]] == ["id\x001\x00"]
    assert (no_such_id.status_code, no_such_proof.status_code) == (404, 404)


FILTERED_ROUTES = ["/events", "/histogram", "/export.csv", "/export.jsonl"]
HTTP_FILTERS = ["action", "user_id", "user_email", "resource", "resource_id", "outcome"]
HTTP_FILTERS += ["from", "to", "search"]


async def test_nul_in_any_admin_filter_or_id_over_http_is_a_4xx_before_anything_is_recorded(
    any_store: AuditStore,
) -> None:
    """Issue 16: on PostgreSQL these answered 500 text/plain, and an export answered 200,
    recorded ``export.requested`` and cut its body off. Real HTTP (uvicorn): what a
    client gets is the whole response."""
    await any_store.append(with_nul(1))
    before = [event async for event in any_store.iter_events(EventFilter())]
    answers: dict[str, httpx.Response] = {}
    async with (
        serving_in_loop(admin_app(any_store)) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        for route in FILTERED_ROUTES:
            for param in HTTP_FILTERS:
                query = f"{route}?{param}=a%00b"
                answers[query] = await client.get(query)
            query = f"{route}?act%00ion=project.created"  # in a parameter's name
            answers[query] = await client.get(query)
        for path in ("/events/a%00b", "/events/a%00b/proof", "/events/%00", "/events/%00/proof"):
            answers[path] = await client.get(path)

    for query, response in answers.items():
        error = response.json()["error"]  # a whole JSON body, whatever the route
        assert response.headers["content-type"] == "application/json", query
        if query.startswith("/events/"):
            assert (response.status_code, error["code"]) == (404, "not_found"), query
        elif "act%00ion" in query:
            assert (response.status_code, error["code"]) == (400, "unknown_parameter"), query
            assert error["param"] == "act\x00ion", query
        else:
            assert (response.status_code, error["code"]) == (400, "invalid_parameter"), query
            assert error["param"] == query.split("?")[1].split("=")[0], query
    # No export began, so none was recorded.
    assert [event async for event in any_store.iter_events(EventFilter())] == before


# --- the CLI: arguments that are not UTF-8 ------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        ("prove", [b"--log", b"a\xff", b"--seq", b"1"], b"has no entry with seq 1"),
        ("export", [b"--format", b"jsonl", b"--user-id", b"\xff"], b"not valid Unicode"),
    ],
)
def test_cli_arguments_that_are_not_utf8_get_a_message_never_a_traceback(
    store_url_factory: Callable[[], str], command: str, options: list[bytes], message: bytes
) -> None:
    """Python hands such bytes over as lone surrogates (surrogateescape)."""
    url = store_url_factory()

    async def one_event() -> None:
        async with open_store(url) as store:
            await store.append(NewEvent(action="a", resource="r"))

    asyncio.run(one_event())
    argv = [os.fsencode(sys.executable), b"-m", b"auditmw", command.encode(), url.encode()]
    result = subprocess.run([*argv, *options], capture_output=True, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and b"Traceback" not in result.stderr
