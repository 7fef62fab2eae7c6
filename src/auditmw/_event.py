"""The event model: what callers submit (``NewEvent``), what the log holds (``Event``).

The entry of an event is every field but ``hash``, written as RFC 8785 canonical
JSON; ``hash = SHA-256(0x00 || entry)``. See docs/format.md, which is a public contract.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson

from ._canonical import canonical_json, canonical_string, check_json
from ._errors import ValidationError
from ._ids import uuid7

Outcome = Literal["success", "failure", "denied"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
GENESIS_HASH = "0" * 64
DEFAULT_LOG = "default"

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


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits enforced on every event; an event over a limit is rejected, never cut.

    ``max_chars`` applies to action, resource, resource_id, user_id, request_id and log.
    """

    max_chars: int = 256
    max_email_chars: int = 320
    max_user_agent_chars: int = 1024
    max_details_bytes: int = 64 * 1024
    max_details_depth: int = 32


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

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in EVENT_FIELDS}

    @classmethod
    def from_entry(cls, entry: bytes, hash: str) -> Event:
        """Parse stored canonical entry bytes (trusted: written by this library)."""
        data = orjson.loads(entry)
        return cls(**{name: data[name] for name in ENTRY_FIELDS}, hash=hash)


def entry_hash(entry: bytes) -> str:
    """The RFC 6962 leaf hash of an entry, lowercase hex."""
    return hashlib.sha256(b"\x00" + entry).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A validated event, serialized except for ``prev_hash`` and ``seq``.

    The entry's keys are sorted, so its canonical bytes are
    ``head + prev_hash + middle + str(seq) + tail``: everything but the chain link is
    written before the store takes its write lock.
    """

    log: str
    id: str
    timestamp: str
    head: bytes
    middle: bytes
    tail: bytes
    columns: dict[str, Any] = field(repr=False)

    def seal(self, seq: int, prev_hash: str) -> tuple[bytes, str]:
        """The entry bytes and hash of this event at position ``seq`` after ``prev_hash``."""
        entry = b"".join((self.head, prev_hash.encode(), self.middle, b"%d" % seq, self.tail))
        return entry, entry_hash(entry)


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339, UTC, always with microseconds and ``Z``."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def prepare(event: NewEvent, limits: Limits) -> PreparedEvent:
    """Validate ``event`` and serialize all of it but the chain link."""
    action = _required_text("action", event.action, limits.max_chars)
    resource = _required_text("resource", event.resource, limits.max_chars)
    log = _required_text("log", event.log, limits.max_chars)
    if event.outcome not in OUTCOMES:
        raise ValidationError("outcome", f"must be one of {', '.join(OUTCOMES)}")
    values: dict[str, Any] = {
        "action": action,
        "resource": resource,
        "log": log,
        "outcome": event.outcome,
        "resource_id": _optional_text("resource_id", event.resource_id, limits.max_chars),
        "user_id": _optional_text("user_id", event.user_id, limits.max_chars),
        "user_email": _optional_text("user_email", event.user_email, limits.max_email_chars),
        "user_agent": _optional_text("user_agent", event.user_agent, limits.max_user_agent_chars),
        "request_id": _optional_text("request_id", event.request_id, limits.max_chars),
        "ip_address": _ip_address(event.ip_address),
        "id": str(uuid7()),
        "timestamp": utc_timestamp(),
    }
    details_json = _details(event.details, limits)

    def part(*names: str) -> bytes:
        return b",".join(
            b'"%s":%s' % (name.encode(), details_json if name == "details" else _json(values[name]))
            for name in names
        )

    head = b"{" + part("action", "details", "id", "ip_address", "log", "outcome")
    head += b',"prev_hash":"'
    middle = b'",' + part("request_id", "resource", "resource_id") + b',"seq":'
    tail = b"," + part("timestamp", "user_agent", "user_email", "user_id") + b"}"
    values["details"] = None if event.details is None else orjson.loads(details_json)
    return PreparedEvent(log, values["id"], values["timestamp"], head, middle, tail, values)


def _json(value: str | None) -> bytes:
    return b"null" if value is None else canonical_string(value)


def _required_text(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "is required and must be a non-empty string")
    return _checked_text(name, value, max_chars)


def _optional_text(name: str, value: object, max_chars: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string or None, not {type(value).__name__}")
    return _checked_text(name, value, max_chars)


def _checked_text(name: str, value: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise ValidationError(name, f"is {len(value)} characters long; the limit is {max_chars}")
    check_json(value, name, 0)
    return value


def _ip_address(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError("ip_address", "must be an IPv4 or IPv6 address")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError("ip_address", f"{value[:64]!r} is not an IP address") from None
    return value  # as given: validated, never rewritten


def _details(details: object, limits: Limits) -> bytes:
    if details is None:
        return b"null"
    if not isinstance(details, dict):
        kind = type(details).__name__
        raise ValidationError("details", f"must be a JSON object (dict), not {kind}")
    fast = check_json(details, "details", limits.max_details_depth)
    encoded = canonical_json(details, fast=fast)
    if len(encoded) > limits.max_details_bytes:
        raise ValidationError(
            "details",
            f"encodes to {len(encoded)} bytes; the limit is {limits.max_details_bytes}",
        )
    return encoded
