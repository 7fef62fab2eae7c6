"""The canonical JSON auditmw hashes is RFC 8785 (JCS), byte for byte.

auditmw writes most values through orjson (sorted keys) and falls back to the ``rfc8785``
reference implementation only where ``check_json`` says orjson would differ. These tests
prove the two paths agree with the reference on arbitrary JSON — unicode, escapes, floats,
keys beyond the BMP — and that a sealed entry is exactly JCS of the event's fields.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import struct
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from auditmw import GENESIS_HASH, OUTCOMES, Event, Limits, NewEvent, entry_hash
from auditmw._canonical import MAX_SAFE_INTEGER, canonical_json, check_json
from auditmw._event import EVENT_FIELDS, ROW_FIELDS, TEXT_COLUMNS, prepare

MAX_DEPTH = Limits().max_details_depth

# Characters where JSON encoders tend to disagree: escapes, controls, DEL, line/paragraph
# separators, BOM, the edges of the surrogate range, private use, astral characters, NFC
# and NFD forms of the same letter.
TRICKY_CHARS = [
    '"',
    "\\",
    "/",
    "\b",
    "\f",
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x01",
    "\x1f",
    " ",
    "\x7f",
    "\x80",
    "\u2028",
    "\u2029",
    "\ud7ff",
    "\ue000",
    "\uf8ff",
    "\ufb33",
    "\ufeff",
    "\uffff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
    "\u00e9",
    "\u0301",
    "\u20ac",
]
characters = st.one_of(st.sampled_from(TRICKY_CHARS), st.characters(codec="utf-8"))
texts = st.text(characters, max_size=12)
# Keys drawn mostly from both sides of the UTF-16 / code point ordering difference: an
# astral character (surrogates D800-DFFF in UTF-16) sorts before U+E000-U+FFFF in JCS but
# after it by code point.
key_chars = st.one_of(
    st.sampled_from(["a", "b", "\ue000", "\uffff", "\ufb33", "\U00010000", "\U0001f600", "\x00"]),
    characters,
)
keys = st.text(key_chars, max_size=4)

SPECIAL_FLOATS = [
    1.0,
    -1.0,
    1e30,
    -0.0,
    0.0,
    5e-324,
    -5e-324,
    1e21,
    1e20,
    1e-7,
    1e-6,
    0.1,
    1.5,
    1e16,
    2.0**53,
    2.0**53 + 2,
    1.7976931348623157e308,
    2.2250738585072014e-308,
    333333333.33333329,
    123456789012345680000.0,
]
floats = st.one_of(
    st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=False, allow_infinity=False)
)
safe_ints = st.one_of(
    st.sampled_from([0, 1, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 2**31, 2**32, -(2**63)]).filter(
        lambda n: abs(n) <= MAX_SAFE_INTEGER
    ),
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
)


def json_values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(keys, children, max_size=5),
        ),
        max_leaves=20,
    )


float_free_scalars = st.one_of(st.none(), st.booleans(), safe_ints, texts)
any_json = json_values(st.one_of(float_free_scalars, floats))
float_free_json = json_values(float_free_scalars)


def fast_path(value: Any) -> bool:
    return check_json(value, "value", MAX_DEPTH)


# --- canonical_json against the reference ------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(any_json)
@example({"\U0001f600": 1, "\ue000": 2, "a": 3})
@example([1.0, 1e30, -0.0, 5e-324, 1e21, 1e-7])
@example({"s": '"\\/\b\f\n\r\t\x00\x1f\x7f\u2028\U0001f600'})
def test_canonical_json_is_rfc8785(value: Any) -> None:
    assert canonical_json(value, fast=fast_path(value)) == rfc8785.dumps(value)


@settings(max_examples=600, deadline=None)
@given(float_free_json)
@example({"\U0001f600": 1, "\uffff": 2})
@example({"a": {"\U00010000": [], "\ue000": None}})
def test_orjson_is_rfc8785_whenever_the_fast_path_is_allowed(value: Any) -> None:
    # Without floats, only a key beyond the BMP may leave the fast path: were check_json to
    # refuse everything, the comparison below would never run.
    assert fast_path(value) == (not has_astral_key(value))
    if fast_path(value):
        assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)


def has_astral_key(value: Any) -> bool:
    """Whether an object in ``value`` has a key with a character beyond U+FFFF."""
    if isinstance(value, dict):
        return any(
            any(ord(ch) > 0xFFFF for ch in key) or has_astral_key(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(has_astral_key(item) for item in value)
    return False


@settings(max_examples=500, deadline=None)
@given(floats)
def test_every_finite_float_is_written_as_jcs(number: float) -> None:
    assert canonical_json([number], fast=fast_path([number])) == rfc8785.dumps([number])


@settings(max_examples=500, deadline=None)
@given(texts)
def test_strings_are_escaped_as_jcs_by_the_fast_path(text: str) -> None:
    assert fast_path(text)
    assert canonical_json(text, fast=True) == rfc8785.dumps(text)


@pytest.mark.parametrize(
    ("value", "jcs"),
    [
        (1.0, b"1"),
        (-0.0, b"0"),
        (1e20, b"100000000000000000000"),
        (1e-6, b"0.000001"),
        ({"\U0001f600": 1, "\ue000": 2}, '{"\U0001f600":1,"\ue000":2}'.encode()),
    ],
)
def test_the_guard_catches_where_orjson_differs(value: Any, jcs: bytes) -> None:
    # The pitfalls the fast-path guard exists for: orjson really writes these differently.
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) != jcs
    assert not fast_path(value)
    assert canonical_json(value, fast=False) == jcs


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    "value",
    [
        {Colour.RED: Colour.RED},
        {"level": Level.HIGH},
        {"point": Point(1, 2)},
        {"tuple": (1, "a")},
        collections.OrderedDict([("b", 1), ("a", 2)]),
    ],
)
def test_str_int_dict_and_tuple_subclasses_are_written_as_jcs(value: Any) -> None:
    # orjson refuses str-subclass keys and namedtuples; the guard must send them to the
    # reference implementation instead of failing or writing something else.
    assert canonical_json(value, fast=fast_path(value)) == rfc8785.dumps(value)


# --- documented test vectors of RFC 8785 itself --------------------------------------------


def test_rfc8785_section_3_2_3_sorting_example() -> None:
    # RFC 8785 §3.2.3: property names sorted by UTF-16 code units.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    canonical = canonical_json(value, fast=fast_path(value))
    order = list(json.loads(canonical))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_rfc8785_section_3_2_2_example() -> None:
    # RFC 8785 §3.2.2 (and Appendix-style input with escapes, numbers, literals).
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    value = json.loads(source)
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(value, fast=fast_path(value)) == expected


# RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS number text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, text: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json([number], fast=fast_path([number])) == f"[{text}]".encode()


# --- the entry: every field but hash, as JCS, hashed as an RFC 6962 leaf --------------------

required_texts = st.text(characters, min_size=1, max_size=30).filter(str.strip)
optional_texts = st.none() | texts
ip_addresses = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.sampled_from(["2001:DB8::1", "::ffff:192.0.2.1", "fe80::1%eth0", "2001:db8:0:0:0:0:0:1"]),
)
new_events = st.builds(
    NewEvent,
    action=required_texts,
    resource=required_texts,
    resource_id=optional_texts,
    outcome=st.sampled_from(OUTCOMES),
    details=st.none() | st.dictionaries(keys, any_json, max_size=5),
    user_id=optional_texts,
    user_email=optional_texts,
    ip_address=ip_addresses,
    user_agent=optional_texts,
    request_id=optional_texts,
    log=required_texts.filter(lambda text: "\x00" not in text),  # the one field refusing NUL
)
prev_hashes = st.just(GENESIS_HASH) | st.binary(min_size=32, max_size=32).map(bytes.hex)
seqs = st.integers(1, MAX_SAFE_INTEGER)


@settings(max_examples=300, deadline=None)
@given(new_events, seqs, prev_hashes)
@example(
    NewEvent(action="a", resource="r", details={"\U0001f600": 1.0, "\ue000": [1e30, -0.0]}),
    1,
    GENESIS_HASH,
)
@example(  # prepare() cuts the entry at these members: look-alikes must not confuse it
    NewEvent(
        action=',"prev_hash":""',
        resource=',"seq":0',
        details={"a": 1, "prev_hash": "", "seq": 0, "z": {"a": 1, "prev_hash": "", "seq": 0}},
        user_agent=',"seq":0}',
        request_id=',"prev_hash":""',
        user_id='"prev_hash":"","seq":0',
    ),
    7,
    GENESIS_HASH,
)
@example(  # personal details at several depths, in a list, under keys to escape
    NewEvent(
        action="a",
        resource="user",
        details={"Email": "a@b", "x/y~": {"name": "Bob", "tags": [{"phone": 1.5}]}, "ip": None},
        user_email="a@b",
        ip_address="192.0.2.1",
    ),
    3,
    GENESIS_HASH,
)
def test_sealed_entry_is_jcs_of_the_event_fields(event: NewEvent, seq: int, prev: str) -> None:
    prepared = prepare(event, Limits())
    entry, hash_ = prepared.seal(seq, prev)

    # Format 2: each personal value is null in the entry and committed to, its salt and
    # canonical JSON (the opening) kept beside the entry.
    commitments = json.loads(entry)["commitments"]
    openings = json.loads(prepared.personal) if prepared.personal else {}
    expected_details, personal = _redacted(event.details, "/details")
    for name in ("ip_address", "user_agent", "user_email"):
        if getattr(event, name) is not None:
            personal["/" + name] = getattr(event, name)
    assert set(openings) == set(commitments) == set(personal)
    for pointer, (salt, text) in openings.items():
        assert len(bytes.fromhex(salt)) == 16
        assert text.encode() == rfc8785.dumps(personal[pointer])
        digest = hashlib.sha256(bytes.fromhex(salt) + text.encode()).hexdigest()
        assert digest == commitments[pointer]
    entry_dict: dict[str, Any] = {
        "id": prepared.id,
        "log": event.log,
        "seq": seq,
        "timestamp": prepared.timestamp,
        "user_id": event.user_id,
        "user_email": None,
        "action": event.action,
        "resource": event.resource,
        "resource_id": event.resource_id,
        "outcome": event.outcome,
        "details": expected_details,
        "ip_address": None,
        "user_agent": None,
        "request_id": event.request_id,
        "prev_hash": prev,
        "format": 2,
        "commitments": commitments,
    }
    assert set(entry_dict) == set(EVENT_FIELDS) - {"hash"} | {"format", "commitments"}
    assert entry == rfc8785.dumps(entry_dict)
    assert hash_ == hashlib.sha256(b"\x00" + entry).hexdigest() == entry_hash(entry)

    # What the store hands back is the event as submitted (its openings put back).
    read_back = Event.from_entry(entry, hash_, prepared.personal)
    assert read_back.erased == ()
    # What the store writes and returns: the row in ROW_FIELDS order, and the Event.
    assert prepared.event(seq, prev, hash_, entry) == read_back
    row = dict(zip(ROW_FIELDS, prepared.row(seq, prev, hash_, entry), strict=True))
    columns = {name: getattr(read_back, name) for name in ROW_FIELDS[:-2]}
    for name in TEXT_COLUMNS:  # their column form: each U+0000 as U+FFFD (docs/format.md)
        if columns[name] is not None:
            columns[name] = columns[name].replace("\x00", "\ufffd")
    assert row == {**columns, "entry": entry, "personal": prepared.personal}

    stored = read_back.to_dict()
    assert stored.pop("hash") == hash_
    for name in ("user_email", "ip_address", "user_agent", "details"):
        assert stored[name] == getattr(event, name) or (
            name == "details" and stored[name] == json.loads(rfc8785.dumps(event.details))
        )
    assert rfc8785.dumps(json.loads(json.dumps(stored))) == rfc8785.dumps(stored)

    # Without its openings (erased), each personal value reads as None and is named.
    erased = Event.from_entry(entry, hash_, None)
    assert erased.erased == tuple(sorted(personal))
    assert erased.to_dict().get("erased", []) == sorted(personal)


def _redacted(value: Any, pointer: str) -> tuple[Any, dict[str, Any]]:
    """A reference for the entry's details: personal members (Limits' default keys,
    compared lowercased) null, and those members by JSON Pointer."""
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            at = pointer + "/" + key.replace("~", "~0").replace("/", "~1")
            if item is not None and key.lower() in Limits().personal_keys:
                found[at] = item
                result[key] = None
            else:
                result[key], inner = _redacted(item, at)
                found.update(inner)
        return result, found
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            redacted, inner = _redacted(item, f"{pointer}/{index}")
            items.append(redacted)
            found.update(inner)
        return items, found
    return value, found


def test_event_details_read_back_can_be_canonicalized_again() -> None:
    # JCS writes the floats 1e19 and 1e20 as 10000000000000000000 and
    # 100000000000000000000; reading them back must not give integers beyond 2**53, which
    # no RFC 8785 implementation accepts.
    details = {"big": 1e19, "bigger": 1e20}
    prepared = prepare(NewEvent(action="a", resource="r", details=details), Limits())
    entry, hash_ = prepared.seal(1, GENESIS_HASH)
    assert b'"big":10000000000000000000,"bigger":100000000000000000000' in entry
    for read_back in (prepared.columns["details"], Event.from_entry(entry, hash_).details):
        assert read_back == details
        assert all(isinstance(value, float) for value in read_back.values())
        assert rfc8785.dumps(read_back) == rfc8785.dumps(details)
