"""The event model: what callers submit (``NewEvent``), what the log holds (``Event``).

The entry of an event is every field but ``hash``, written as RFC 8785 canonical
JSON; ``hash = SHA-256(0x00 || entry)``. See docs/format.md, which is a public contract.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, get_args

import orjson

from auditmw._canonical import (
    MAX_SAFE_INTEGER,
    canonical_json,
    canonical_string,
    check_details,
    check_text,
)
from auditmw._errors import StoreError, ValidationError
from auditmw._ids import uuid7_str
from auditmw._personal import (
    DEFAULT_PERSONAL_KEYS,
    FORMAT,
    commit,
    open_entry,
    parse_openings,
    personal_keys,
    redact_details,
)
from auditmw._text import NUL, column_text

Outcome = Literal["success", "failure", "denied"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
GENESIS_HASH = "0" * 64
DEFAULT_LOG = "default"
MAX_DETAILS_DEPTH = 128

# Every field of an event, in JSON (and JCS key) order. The entry is all but "hash".
EVENT_FIELDS = (
    "action",
    "details",
    "id",
    "ip_address",
    "log",
    "outcome",
    "prev_hash",
    "request_id",
    "resource",
    "resource_id",
    "seq",
    "timestamp",
    "user_agent",
    "user_email",
    "user_id",
    "hash",
)
ENTRY_FIELDS = EVENT_FIELDS[:-1]
# The members an entry of format 2 adds (docs/format.md): the format, and the salted
# commitments to the personal values it holds as null (auditmw._personal).
FORMAT_2_FIELDS = ("commitments", "format")
# Columns of a stored row (every store's events table), in ``PreparedEvent.row`` order.
ROW_FIELDS = (
    "log",
    "seq",
    "id",
    "timestamp",
    "user_id",
    "user_email",
    "action",
    "resource",
    "resource_id",
    "outcome",
    "ip_address",
    "user_agent",
    "request_id",
    "prev_hash",
    "hash",
    "entry",
    "personal",
)
# Row columns that hold free text: stored in their column form (``_text.column_text``).
TEXT_COLUMNS = (
    "user_id",
    "user_email",
    "action",
    "resource",
    "resource_id",
    "user_agent",
    "request_id",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits enforced on every event; an event over a limit is rejected, never cut.

    ``max_chars`` applies to action, resource, resource_id, user_id, request_id and log.
    Lengths count Unicode code points; ``max_details_bytes`` counts the UTF-8 bytes of
    the canonical (RFC 8785) encoding of ``details``; ``max_details_depth`` is how many
    keys/indices deep a value may sit below ``details`` (at most ``MAX_DETAILS_DEPTH``).

    ``personal_keys`` (not a limit, but checked with them): the keys of ``details``
    members, at any depth and compared lowercased, whose values are personal data and
    are committed to rather than written into the entry (docs/privacy.md), so that
    ``erase`` can remove them.
    """

    max_chars: int = 256
    max_email_chars: int = 320
    max_user_agent_chars: int = 1024
    max_details_bytes: int = 64 * 1024
    max_details_depth: int = 32
    personal_keys: frozenset[str] = DEFAULT_PERSONAL_KEYS

    def __post_init__(self) -> None:
        for name in (
            "max_chars",
            "max_email_chars",
            "max_user_agent_chars",
            "max_details_bytes",
            "max_details_depth",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_details_depth > MAX_DETAILS_DEPTH:
            # orjson and the recursive checks cannot go much deeper than this.
            raise ValueError(f"Limits.max_details_depth must be at most {MAX_DETAILS_DEPTH}")
        if isinstance(self.personal_keys, str):
            raise ValueError("Limits.personal_keys must be a collection of keys, not a string")
        # frozen: normalized through object.__setattr__, once
        object.__setattr__(self, "personal_keys", personal_keys(self.personal_keys))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as submitted, before the store gives it an id, time, seq and hash."""

    action: str
    resource: str
    resource_id: str | None = None
    outcome: Outcome = "success"
    details: dict[str, Any] | None = None
    user_id: str | None = None
    user_email: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    log: str = DEFAULT_LOG


@dataclass(frozen=True, slots=True)
class Event:
    """One committed event of the log. ``to_dict()`` gives its JSON form."""

    id: str
    log: str
    seq: int
    timestamp: str
    action: str
    resource: str
    resource_id: str | None
    outcome: str
    details: dict[str, Any] | None
    user_id: str | None
    user_email: str | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    prev_hash: str
    hash: str
    # JSON Pointers (``/user_email``, ``/details/email``) of the personal values erased
    # from this event (``AuditStore.erase``): each reads as None. Empty when none is.
    erased: tuple[str, ...] = ()
    # The entry as hashed and its openings as stored, for exports (not compared).
    stored: StoredEntry | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the 16 fields, and ``erased`` (the pointers) when any value was
        erased."""
        data = {name: getattr(self, name) for name in EVENT_FIELDS}
        if self.erased:
            data["erased"] = list(self.erased)
        return data

    @classmethod
    def from_entry(cls, entry: bytes, hash: str, personal: str | bytes | None = None) -> Event:
        """Parse stored canonical entry bytes (trusted: written by this library) and, for
        format 2, put back the personal values its openings (``personal``) still hold."""
        data = orjson.loads(entry)
        erased: tuple[str, ...] = ()
        commitments = data.pop("commitments", None)
        if commitments is not None:
            del data["format"]
            erased = open_entry(data, commitments, parse_openings(personal))
        data["details"] = as_doubles(data["details"])
        text = personal.decode() if isinstance(personal, bytes) else personal
        return cls(
            **{name: data[name] for name in ENTRY_FIELDS},
            hash=hash,
            erased=erased,
            stored=StoredEntry(entry, text, 1 if commitments is None else FORMAT),
        )


class StoredEntry(NamedTuple):
    """An event's entry bytes as hashed, its openings (JSON text) as stored, its format."""

    entry: bytes
    personal: str | None
    format: int


def stored_event(
    entry: bytes, hash: str, log: object, seq: object, personal: str | bytes | None = None
) -> Event:
    """``Event.from_entry`` for a row read back from a store: an entry that cannot be
    parsed (changed behind the library's back) is a ``StoreError`` naming log and seq."""
    try:
        return Event.from_entry(entry, hash, personal)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(
            f"the stored entry of log {log!r} seq {seq} cannot be read ({exc}); "
            "run `auditmw verify`"
        ) from exc


def entry_hash(entry: bytes) -> str:
    """The RFC 6962 leaf hash of an entry, lowercase hex."""
    return hashlib.sha256(b"\x00" + entry).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A validated event, serialized except for ``prev_hash`` and ``seq``.

    The entry's keys are sorted, so its canonical bytes are
    ``head + prev_hash + middle + str(seq) + tail``: everything but the chain link is
    written before the store takes its write lock. ``columns`` holds the exact values;
    ``column_forms`` the column form of each text field that differs from its value
    (one holding U+0000), which its row stores instead.
    """

    log: str
    id: str
    timestamp: str
    head: bytes
    middle: bytes
    tail: bytes
    columns: dict[str, Any] = field(repr=False)
    column_forms: dict[str, str] = field(default_factory=dict, repr=False)
    personal: str | None = field(default=None, repr=False)  # the openings, JSON

    def seal(self, seq: int, prev_hash: str) -> tuple[bytes, str]:
        """The entry bytes and hash of this event at position ``seq`` after ``prev_hash``."""
        entry = b"".join((self.head, prev_hash.encode(), self.middle, b"%d" % seq, self.tail))
        return entry, entry_hash(entry)

    # row() and event() spell their fields out (tests/test_canonical.py holds them to
    # ROW_FIELDS and Event): they run under the store's write lock, once per event.

    def row(self, seq: int, prev_hash: str, hash: str, entry: bytes) -> tuple[Any, ...]:
        """The stored row of the sealed event, in ``ROW_FIELDS`` order."""
        c = self.columns
        if self.column_forms:  # rare: a text field holds U+0000
            c = {**c, **self.column_forms}
        return (
            self.log,
            seq,
            self.id,
            self.timestamp,
            c["user_id"],
            c["user_email"],
            c["action"],
            c["resource"],
            c["resource_id"],
            c["outcome"],
            c["ip_address"],
            c["user_agent"],
            c["request_id"],
            prev_hash,
            hash,
            entry,
            self.personal,
        )

    def event(self, seq: int, prev_hash: str, hash: str, entry: bytes = b"") -> Event:
        """The committed ``Event`` of the sealed event."""
        c = self.columns
        return Event(
            self.id,
            self.log,
            seq,
            self.timestamp,
            c["action"],
            c["resource"],
            c["resource_id"],
            c["outcome"],
            c["details"],
            c["user_id"],
            c["user_email"],
            c["ip_address"],
            c["user_agent"],
            c["request_id"],
            prev_hash,
            hash,
            (),
            StoredEntry(entry, self.personal, FORMAT) if entry else None,
        )


def chain(
    batch: list[PreparedEvent], heads: dict[str, tuple[int, str]]
) -> tuple[list[tuple[Any, ...]], list[Event]]:
    """Seal each event of ``batch`` after the head (last seq, last hash) of its log.

    ``heads`` must hold every log of the batch, read under the store's write lock; it is
    advanced in place. Returns the rows to insert (``ROW_FIELDS`` order) and the events.
    """
    rows: list[tuple[Any, ...]] = []
    events: list[Event] = []
    for prepared in batch:
        last_seq, prev_hash = heads[prepared.log]
        seq = last_seq + 1
        entry, hash_ = prepared.seal(seq, prev_hash)
        heads[prepared.log] = (seq, hash_)
        rows.append(prepared.row(seq, prev_hash, hash_, entry))
        events.append(prepared.event(seq, prev_hash, hash_, entry))
    return rows, events


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339, UTC, always with microseconds and ``Z``; ``now`` must be timezone-aware."""
    if now is None:
        return _current_timestamp()
    if now.utcoffset() is None:
        raise ValueError("utc_timestamp needs a timezone-aware datetime")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_second_formatted: tuple[int, str] = (-1, "")


def _current_timestamp() -> str:
    """The current time as ``utc_timestamp`` writes it; formats each second only once."""
    global _second_formatted
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached_second, prefix = _second_formatted
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_formatted = (second, prefix)
    return f"{prefix}.{micro:06d}Z"


def prepare(event: NewEvent, limits: Limits, *, at: datetime | None = None) -> PreparedEvent:
    """Validate ``event`` and serialize all of it but the chain link, as an entry of
    format 2 (its personal values committed to, see ``auditmw._personal``). Its timestamp
    is now, or ``at`` (timezone-aware: a backdated event, see ``auditmw.testing.append_at``)."""
    if event.outcome not in OUTCOMES:
        raise ValidationError("outcome", f"must be one of {', '.join(OUTCOMES)}")
    max_chars = limits.max_chars
    details_json, fast, personal_details = _details(event.details, limits)
    log = _log_name(event.log, max_chars)
    ip_address = _ip_address(event.ip_address)
    user_agent = text_field("user_agent", event.user_agent, limits.max_user_agent_chars)
    user_email = text_field("user_email", event.user_email, limits.max_email_chars)
    # The personal values, as (pointer, canonical JSON), committed to in the entry.
    personal: list[tuple[str, bytes]] = []
    entry_details = details_json
    if personal_details:
        assert event.details is not None  # found in them
        redacted, found = redact_details(event.details, limits.personal_keys)
        entry_details = canonical_json(redacted, fast=fast)
        personal.extend((pointer, canonical_json(value, fast=fast)) for pointer, value in found)
    if ip_address is not None:
        personal.append(("/ip_address", canonical_string(ip_address)))
    if user_agent is not None:
        personal.append(("/user_agent", canonical_string(user_agent)))
    if user_email is not None:
        personal.append(("/user_email", canonical_string(user_email)))
    commitments, openings = commit(personal) if personal else (b"{}", None)
    # Every entry field, in JCS key order, with placeholders for the chain link.
    values: dict[str, Any] = {
        "action": text_field("action", event.action, max_chars, required=True),
        "commitments": orjson.Fragment(commitments),
        "details": orjson.Fragment(entry_details),  # already canonical: written as it is
        "format": FORMAT,
        "id": uuid7_str(),
        "ip_address": None,
        "log": log,
        "outcome": event.outcome,
        "prev_hash": "",
        "request_id": text_field("request_id", event.request_id, max_chars),
        "resource": text_field("resource", event.resource, max_chars, required=True),
        "resource_id": text_field("resource_id", event.resource_id, max_chars),
        "seq": 0,
        "timestamp": _current_timestamp() if at is None else utc_timestamp(at),
        "user_agent": None,
        "user_email": None,
        "user_id": text_field("user_id", event.user_id, max_chars),
    }
    # orjson keeps insertion order and escapes strings exactly as JCS does. The entry is
    # cut at the two placeholders, searched from the end: only string values follow
    # them, inside which a quote is always escaped, so the last match is the member.
    entry = orjson.dumps(values)
    link = entry.rindex(_PREV_HASH_PLACEHOLDER)
    seq_at = entry.rindex(_SEQ_PLACEHOLDER)
    head = entry[: link + len(_PREV_HASH_PLACEHOLDER) - 1]
    middle = entry[link + len(_PREV_HASH_PLACEHOLDER) - 1 : seq_at + len(_SEQ_PLACEHOLDER) - 1]
    tail = entry[seq_at + len(_SEQ_PLACEHOLDER) :]
    # The columns and the returned event hold the values themselves.
    values["ip_address"] = ip_address
    values["user_agent"] = user_agent
    values["user_email"] = user_email
    if event.details is None:
        values["details"] = None
    else:
        details = orjson.loads(details_json)
        # Integers beyond 2**53 can only come back from floats, which take the slow path.
        values["details"] = details if fast else as_doubles(details)
    column_forms = {  # the columns of the rare text holding U+0000 (a cheap test when none)
        name: column_text(value)
        for name in TEXT_COLUMNS
        if (value := values[name]) is not None and NUL in value
    }
    return PreparedEvent(
        log,
        values["id"],
        values["timestamp"],
        head,
        middle,
        tail,
        values,
        column_forms,
        None if openings is None else openings.decode(),
    )


_PREV_HASH_PLACEHOLDER = b',"prev_hash":""'
_SEQ_PLACEHOLDER = b',"seq":0'


def text_field(
    name: str, value: object, max_chars: int | None, *, required: bool = False
) -> str | None:
    """``value`` if it may be the text field ``name``, else ``ValidationError``: a string
    (not blank when ``required``), at most ``max_chars`` characters (None: not known
    yet, as before the store is), valid Unicode."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        if required:
            raise ValidationError(name, "is required and must be a non-empty string")
        raise ValidationError(name, f"must be a string or None, not {type(value).__name__}")
    if required and not value.strip():
        raise ValidationError(name, "is required and must be a non-empty string")
    if max_chars is not None and len(value) > max_chars:
        raise ValidationError(name, f"is {len(value)} characters long; the limit is {max_chars}")
    if not value.isascii():
        check_text(value, name)  # rejects lone surrogates
    return value


def _log_name(value: object, max_chars: int) -> str:
    log = text_field("log", value, max_chars, required=True)
    assert log is not None  # required
    if NUL in log:  # the name of a chain: its column form could name another chain
        raise ValidationError("log", "must not contain U+0000 (NUL)")
    return log


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Dotted-quad IPv4 without leading zeros: what ``ipaddress`` accepts, checked cheaply.
_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)


def _ip_address(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError("ip_address", "must be an IPv4 or IPv6 address")
    if _IPV4.fullmatch(value):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError("ip_address", f"{value[:64]!r} is not an IP address") from None
    if _CONTROL.search(value):  # Python takes any IPv6 zone id, fe80::1%\x00 included
        raise ValidationError("ip_address", f"{value[:64]!r} has a control character")
    return value  # as given: validated, never rewritten


def as_doubles(value: Any) -> Any:
    """``value`` with integers beyond ±(2**53-1) as floats, in place.

    Such integers only come from floats (JCS writes ``1e20`` as ``100000000000000000000``);
    keeping them floats lets ``Event.details`` be written to JSON and canonicalized again
    by any RFC 8785 implementation (which rejects integers outside the safe range).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list | int) and not isinstance(item, bool):
                value[key] = as_doubles(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list | int) and not isinstance(item, bool):
                value[index] = as_doubles(item)
    elif isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return float(value)
    return value


def _details(details: object, limits: Limits) -> tuple[bytes, bool, bool]:
    """The canonical JSON of ``details``, whether the orjson fast path wrote it, and
    whether it holds personal members (``Limits.personal_keys``)."""
    if details is None:
        return b"null", True, False
    if not isinstance(details, dict):
        kind = type(details).__name__
        raise ValidationError("details", f"must be a JSON object (dict), not {kind}")
    fast, personal = check_details(
        details, "details", limits.max_details_depth, limits.personal_keys
    )
    encoded = canonical_json(details, fast=fast)
    if len(encoded) > limits.max_details_bytes:
        raise ValidationError(
            "details",
            f"encodes to {len(encoded)} bytes; the limit is {limits.max_details_bytes}",
        )
    return encoded, fast, personal
