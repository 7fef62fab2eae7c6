"""Every rule of the event model: bad events are rejected with an error naming the field,
good ones are stored exactly as given (never coerced, never truncated)."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from auditmw import (
    GENESIS_HASH,
    OUTCOMES,
    Event,
    Limits,
    NewEvent,
    SQLiteStore,
    ValidationError,
)
from auditmw._event import ROW_FIELDS, prepare, utc_timestamp
from auditmw._ids import uuid7
from auditmw._stores import sqlite as sqlite_store

MAX_SAFE = 2**53 - 1
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def event(**fields: Any) -> NewEvent:
    values: dict[str, Any] = {"action": "user.login", "resource": "session"}
    values.update(fields)
    return NewEvent(**values)


def rejected(limits: Limits | None = None, /, **fields: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        prepare(event(**fields), limits or Limits())
    error = caught.value
    assert str(error).startswith(f"{error.field}: ")  # the message names the field too
    return error


def accepted(limits: Limits | None = None, /, **fields: Any) -> dict[str, Any]:
    """The validated values of an accepted event, as they will be stored."""
    return prepare(event(**fields), limits or Limits()).columns


def sealed(**fields: Any) -> bytes:
    return prepare(event(**fields), Limits()).seal(1, GENESIS_HASH)[0]


# --- action and resource (and log) are required -------------------------------------------


@pytest.mark.parametrize("name", ["action", "resource", "log"])
@pytest.mark.parametrize("value", [None, "", " ", "\t\n", "\u3000"])
def test_required_text_must_be_present_and_not_blank(name: str, value: Any) -> None:
    error = rejected(**{name: value})
    assert error.field == name
    assert "required" in error.message


@pytest.mark.parametrize("name", ["action", "resource", "log"])
def test_required_text_must_be_a_string(name: str) -> None:
    assert rejected(**{name: 42}).field == name  # not str(42)


# --- length limits ---------------------------------------------------------------------------

TEXT_LIMITS = [
    ("action", 256),
    ("resource", 256),
    ("log", 256),
    ("resource_id", 256),
    ("user_id", 256),
    ("request_id", 256),
    ("user_email", 320),
    ("user_agent", 1024),
]


@pytest.mark.parametrize(("name", "limit"), TEXT_LIMITS)
def test_text_over_its_limit_is_rejected_and_at_the_limit_is_kept_whole(
    name: str, limit: int
) -> None:
    at_limit = "x" * (limit - 1) + "\U0001f600"  # limits count characters (code points)
    assert accepted(**{name: at_limit})[name] == at_limit

    error = rejected(**{name: at_limit + "y"})
    assert error.field == name
    assert str(limit) in error.message
    assert str(limit + 1) in error.message


@pytest.mark.parametrize(
    "name", ["resource_id", "user_id", "user_email", "user_agent", "request_id"]
)
@pytest.mark.parametrize("value", [42, b"bytes", ["a"], 1.5, True])
def test_optional_text_must_be_a_string_or_none(name: str, value: Any) -> None:
    assert rejected(**{name: value}).field == name
    assert accepted(**{name: None})[name] is None


def test_limits_are_configurable() -> None:
    limits = Limits(
        max_chars=10,
        max_email_chars=12,
        max_user_agent_chars=14,
        max_details_bytes=30,
        max_details_depth=2,
    )
    for name, limit in [("action", 10), ("user_id", 10), ("user_email", 12), ("user_agent", 14)]:
        assert accepted(limits, **{name: "a" * limit})[name] == "a" * limit
        assert rejected(limits, **{name: "a" * (limit + 1)}).field == name

    fits = {"k": "v" * 22}  # {"k":"vvv..."} is 8 + 22 = 30 bytes
    assert accepted(limits, details=fits)["details"] == fits
    assert rejected(limits, details={"k": "v" * 23}).field == "details"

    assert accepted(limits, details={"a": {"b": 1}})["details"] == {"a": {"b": 1}}
    assert rejected(limits, details={"a": {"b": {"c": 1}}}).field == "details.a.b.c"


@pytest.mark.parametrize(
    "options",
    [
        {"max_chars": 0},
        {"max_email_chars": -1},
        {"max_details_bytes": 0},
        {"max_details_depth": 0},
        {"max_details_depth": 10_000},
        {"max_chars": 2.5},
        {"max_chars": True},
    ],
)
def test_nonsensical_limits_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Limits"):
        Limits(**options)


async def test_the_store_enforces_its_limits_and_stores_nothing_rejected(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "a.db", limits=Limits(max_chars=8)) as store:
        with pytest.raises(ValidationError) as caught:
            await store.append(event(action="too.long.action"))
        assert caught.value.field == "action"
        with pytest.raises(ValidationError):
            await store.append(event(details={"when": datetime.now(UTC)}))
        assert await store.count() == 0

        stored = await store.append(event(action="a" * 8))
        assert stored.seq == 1  # rejected events took no seq
        assert stored.prev_hash == GENESIS_HASH


# --- details -------------------------------------------------------------------------------


@pytest.mark.parametrize("details", [[], ["a", 1], "text", 3, 1.5, (("a", 1),), {"a"}])
def test_details_must_be_an_object(details: Any) -> None:
    error = rejected(details=details)
    assert error.field == "details"
    assert "object" in error.message


def test_details_may_be_none_or_an_empty_object() -> None:
    assert accepted(details=None)["details"] is None
    assert accepted(details={})["details"] == {}
    assert b'"details":null' in sealed(details=None)
    assert b'"details":{}' in sealed(details={})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(bad: float) -> None:
    error = rejected(details={"metrics": {"ratio": [1.0, bad]}})
    assert error.field == "details.metrics.ratio[1]"
    assert "not a JSON number" in error.message


@pytest.mark.parametrize("key", [1, None, 1.5, ("a", "b"), True, b"k"])
def test_keys_must_be_strings(key: Any) -> None:
    error = rejected(details={"outer": {key: "value"}})
    assert error.field == "details.outer"
    assert "not a string" in error.message
    assert repr(key) in error.message


@pytest.mark.parametrize("number", [2**53, -(2**53), 10**30, -(10**30)])
def test_integers_outside_the_safe_range_are_rejected(number: int) -> None:
    error = rejected(details={"amount": number})
    assert error.field == "details.amount"
    assert str(number) in error.message


@pytest.mark.parametrize("number", [MAX_SAFE, -MAX_SAFE, 0])
def test_integers_at_the_edge_of_the_safe_range_are_kept(number: int) -> None:
    assert accepted(details={"amount": number})["details"] == {"amount": number}
    assert b'"amount":%d' % number in sealed(details={"amount": number})


def test_booleans_stay_booleans() -> None:
    # bool is an int subclass in Python; it must be written as true/false, not 1/0.
    assert accepted(details={"flag": True})["details"] == {"flag": True}
    assert b'"details":{"flag":true,"off":false}' in sealed(details={"flag": True, "off": False})


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), "datetime"),
        (Decimal("1.10"), "Decimal"),
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (b"raw", "bytes"),
        (bytearray(b"raw"), "bytearray"),
        (1j, "complex"),
        (Opaque(), "Opaque"),
        (uuid.uuid4(), "UUID"),
    ],
)
def test_unsupported_types_are_rejected_with_their_path(value: Any, type_name: str) -> None:
    error = rejected(details={"a": {"b": [0, "x", value]}})
    assert error.field == "details.a.b[2]"
    assert type_name in error.message
    assert str(error).startswith("details.a.b[2]: ")


@pytest.mark.parametrize(
    ("fields", "field_prefix"),
    [
        ({"action": "log\ud800in"}, "action"),
        ({"resource": "\udfff"}, "resource"),
        ({"user_agent": "agent \udc00"}, "user_agent"),
        ({"details": {"note": "half \ud83d of an emoji"}}, "details.note"),
        ({"details": {"nested": {"key \ud800": 1}}}, "details.nested"),
    ],
)
def test_lone_surrogates_are_rejected(fields: dict[str, Any], field_prefix: str) -> None:
    error = rejected(**fields)
    assert error.field.startswith(field_prefix)
    assert "surrogate" in error.message


def nested(depth: int) -> dict[str, Any]:
    """details whose deepest value sits ``depth`` keys below details."""
    value: Any = 1
    for _ in range(depth - 1):
        value = {"k": value}
    return {"k": value}


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    limit = Limits().max_details_depth
    assert accepted(details=nested(limit))["details"] == nested(limit)
    error = rejected(details=nested(limit + 1))
    assert error.field == "details" + ".k" * (limit + 1)
    assert str(limit) in error.message
    # Lists count as levels too.
    deep_list: Any = 1
    for _ in range(limit + 1):
        deep_list = [deep_list]
    assert rejected(details={"k": deep_list}).field.startswith("details.k[0]")


def test_cyclic_details_are_rejected_not_a_recursion_error() -> None:
    details: dict[str, Any] = {"list": []}
    details["list"].append(details)
    error = rejected(details=details)
    assert error.field.startswith("details.list[0].list[0]")
    assert "nested deeper" in error.message


def test_details_are_limited_by_their_encoded_size() -> None:
    limit = Limits().max_details_bytes
    assert limit == 64 * 1024
    exactly = {"k": "v" * (limit - 8)}  # {"k":"..."} adds 8 bytes
    assert accepted(details=exactly)["details"] == exactly
    error = rejected(details={"k": "v" * (limit - 7)})
    assert error.field == "details"
    assert str(limit) in error.message
    # The limit counts UTF-8 bytes of the canonical encoding, escapes included, not chars.
    assert rejected(details={"k": "\u00e9" * (limit // 2)}).field == "details"
    assert rejected(details={"k": "\n" * (limit // 2)}).field == "details"


def test_details_are_stored_as_given() -> None:
    details = {"b": [1, "two", None, True], "a": {"nested": "\u00e9\n"}, "": 0.5}
    assert accepted(details=details)["details"] == details


# --- outcome -----------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_each_outcome_is_accepted(outcome: str) -> None:
    assert accepted(outcome=outcome)["outcome"] == outcome


def test_outcome_defaults_to_success() -> None:
    assert accepted()["outcome"] == "success"


@pytest.mark.parametrize("outcome", ["ok", "SUCCESS", "Success", " success", "", None, 1])
def test_bad_outcome_is_rejected(outcome: Any) -> None:
    error = rejected(outcome=outcome)
    assert error.field == "outcome"
    assert "success" in error.message


# --- ip_address --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "256.1.1.1",
        "1.2.3",
        "01.2.3.4",
        "example.com",
        "",
        " 1.2.3.4",
        "1.2.3.4 ",
        "10.0.0.0/8",
        "2001:db8::1::2",
        "1.2.3.4, 5.6.7.8",
        "x" * 200,
        167772161,
    ],
)
def test_bad_ip_address_is_rejected(ip: Any) -> None:
    assert rejected(ip_address=ip).field == "ip_address"


@pytest.mark.parametrize(
    "ip",
    ["192.0.2.1", "2001:DB8::1", "2001:db8:0:0:0:0:0:1", "::ffff:192.0.2.1", "fe80::1%eth0", "::1"],
)
def test_ip_address_is_stored_exactly_as_given(ip: str) -> None:
    assert accepted(ip_address=ip)["ip_address"] == ip  # validated, not normalized
    # Format 2: the entry commits to it; its opening holds it exactly.
    assert b'"ip_address":null' in sealed(ip_address=ip)
    openings = json.loads(prepare(event(ip_address=ip), Limits()).personal or "{}")
    assert json.loads(openings["/ip_address"][1]) == ip


# --- nothing is coerced or truncated, end to end -------------------------------------------------


async def test_a_stored_event_reads_back_exactly_as_submitted(store: SQLiteStore) -> None:
    submitted = NewEvent(
        action="  order.refund ",
        resource="order",
        resource_id="0042",
        outcome="denied",
        details={"amount": 12.5, "items": ["a", "b"], "note": "caf\u00e9 \U0001f600", "n": None},
        user_id="u-1",
        user_email="Alice@Example.COM",
        ip_address="2001:DB8::0:1",
        user_agent="curl/8.0",
        request_id="req-1",
        log="payments",
    )
    returned = await store.append(submitted)
    read_back = await store.get(returned.id)
    assert read_back == returned
    for name in (
        "action",
        "resource",
        "resource_id",
        "outcome",
        "details",
        "user_id",
        "user_email",
        "ip_address",
        "user_agent",
        "request_id",
        "log",
    ):
        assert getattr(read_back, name) == getattr(submitted, name), name


# --- ids and timestamps ------------------------------------------------------------------------


def test_ids_are_uuid_version_7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after  # unix_ts_ms, the top 48 bits


def test_ids_are_monotonic_in_a_tight_loop() -> None:
    ids = [uuid7() for _ in range(20_000)]
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    as_text = [str(value) for value in ids]
    assert as_text == sorted(as_text)  # the stored text sorts in creation order too
    assert len(set(as_text)) == len(as_text)


def test_ids_stay_monotonic_when_the_clock_stands_still_or_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])  # the clock uuid7 reads
    ids = [uuid7() for _ in range(10_000)]  # more than a 12-bit counter holds in one ms
    now[0] -= 5_000_000_000  # the clock steps back five seconds
    ids += [uuid7() for _ in range(100)]
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert all(value.version == 7 for value in ids)


def test_prepared_events_get_canonical_uuid7_text() -> None:
    columns = accepted()
    parsed = uuid.UUID(columns["id"])
    assert parsed.version == 7
    assert columns["id"] == str(parsed)  # lowercase, hyphenated


def test_timestamps_are_rfc3339_utc_with_microseconds() -> None:
    before = datetime.now(UTC)
    stamp = accepted()["timestamp"]
    after = datetime.now(UTC)
    assert TIMESTAMP.match(stamp), stamp
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(microseconds=1) <= parsed <= after + timedelta(microseconds=1)


def test_timestamp_formatting() -> None:
    moment = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)
    assert utc_timestamp(moment) == "2024-03-05T07:08:09.000000Z"  # microseconds always shown
    paris = datetime(2024, 3, 5, 8, 8, 9, 120, tzinfo=timezone(timedelta(hours=1)))
    assert utc_timestamp(paris) == "2024-03-05T07:08:09.000120Z"  # converted to UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        utc_timestamp(datetime(2024, 3, 5, 7, 8, 9))


# --- what a store writes and returns for a sealed event --------------------------------------


def test_the_stored_row_and_the_event_agree_with_the_sealed_entry() -> None:
    prepared = prepare(
        event(details={"n": 1.5}, user_id="u", ip_address="2001:DB8::1", log="billing"), Limits()
    )
    entry, hash_ = prepared.seal(7, "ab" * 32)
    row = dict(zip(ROW_FIELDS, prepared.row(7, "ab" * 32, hash_, entry), strict=True))
    assert ROW_FIELDS == sqlite_store.ROW_COLUMNS  # the SQLite insert uses this order
    assert row.pop("entry") == entry
    assert row.pop("hash") == hash_
    assert row.pop("personal") == prepared.personal
    # Format 2: the entry holds null where the IP address was; the row and the event the
    # opened value.
    assert json.loads(entry)["ip_address"] is None
    stored = Event.from_entry(entry, hash_, prepared.personal).to_dict()
    assert stored["ip_address"] == "2001:DB8::1"
    assert row == {name: stored[name] for name in row}

    committed = prepared.event(7, "ab" * 32, hash_)
    assert committed.to_dict() == stored
