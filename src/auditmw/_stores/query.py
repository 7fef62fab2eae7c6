"""What to read from a log: filters, pages, cursors, and parsing them from HTTP or the CLI.

``EventFilter`` says which events; ``AuditStore.query`` returns one ``Page`` of them,
newest first, and ``AuditStore.iter_events`` streams all of them for an export.

Pages are addressed by keyset, never by offset: a cursor holds the position of the last
event of a page (its timestamp and a store-specific tie-breaker), so the next page starts
with an index seek wherever it is. Cursors are opaque (base64url JSON), versioned and
bound to their filter: a cursor made for one filter is rejected for another. They are not
signed: a client who edits one only moves its own position within results it may read.

Every function here raises ``QueryError`` for bad input, naming the HTTP parameter
(``from``, ``limit``, ``cursor``...); the admin app answers it with a 400, the CLI with a
one-line message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, timedelta

import orjson

from auditmw._errors import AuditError
from auditmw._event import OUTCOMES, Event
from auditmw._text import is_unicode

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_PAGE = 100_000
# The oldest verification result /verify?max_age= may return instead of a new one (a day).
MAX_VERIFY_AGE = 86_400
MAX_PARAM_CHARS = 1024  # any single parameter value; event fields are at most 1024 chars
MAX_CURSOR_CHARS = 512
MIN_SEARCH_INDEX_CHARS = 3  # a trigram index cannot look up shorter terms
DEFAULT_BUCKETS = 60  # histogram intervals wanted (auditmw._stores.histogram), when not given
MAX_BUCKETS = 500

# HTTP name of each filter parameter -> EventFilter field (the CLI spells them --user-id...).
FILTER_PARAMS = {
    "user_id": "user_id",
    "user_email": "user_email",
    "action": "action",
    "resource": "resource",
    "resource_id": "resource_id",
    "outcome": "outcome",
    "from": "since",
    "to": "until",
    "search": "search",
}
PAGE_PARAMS = ("limit", "cursor", "page")

# The one timestamp format of the log (see auditmw._event.utc_timestamp); it sorts as text.
TIMESTAMP = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_MAX_TIMESTAMP = "9999-12-31T23:59:59.999999Z"
_DIGITS = re.compile(r"\A[0-9]{1,9}\Z")
_CURSOR_CHARS = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CURSOR_VERSION = 1


class QueryError(AuditError, ValueError):
    """A query parameter is invalid; ``param`` is its HTTP name, ``code`` a stable slug."""

    def __init__(self, param: str, message: str, code: str = "invalid_parameter") -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; every field that is set must match (None: any).

    - ``user_id``, ``user_email``, ``resource``, ``resource_id``, ``outcome``: exact.
    - ``action``: exact, or a prefix when it ends with ``*`` (``project.*``); only a
      trailing ``*`` is special.
    - ``since`` (inclusive) and ``until`` (exclusive): timestamps in the log's own format,
      RFC 3339 UTC with microseconds and ``Z`` (``parse_time`` makes them from ISO 8601).
    - ``search``: case-insensitive substring of action, resource, resource_id, user_email
      or user_id. Every character is literal (``%``, ``_``, ``*``, quotes). Case folding
      is ASCII-only (``A``-``Z``), as in SQL's LIKE.

    No value may hold a control character (U+0000-U+001F, U+007F) or a lone surrogate: a
    pasted newline would silently match nothing, and U+0000 cannot be sent to PostgreSQL.
    (The stored columns hold U+FFFD for an event's U+0000, docs/format.md "Stored
    columns": filter by U+FFFD to find such events.)
    """

    user_id: str | None = None
    user_email: str | None = None
    action: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        for param, name in FILTER_PARAMS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise QueryError(param, f"must be a string, not {type(value).__name__}")
            if len(value) > MAX_PARAM_CHARS:
                raise QueryError(param, f"is longer than {MAX_PARAM_CHARS} characters")
            if _CONTROL.search(value):
                raise QueryError(param, "must not contain control characters")
            if not is_unicode(value):
                raise QueryError(param, "is not valid Unicode (it holds a lone surrogate)")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise QueryError("outcome", f"{_shown(self.outcome)} is not one of {_OUTCOME_LIST}")
        for param, value in (("from", self.since), ("to", self.until)):
            if value is not None and not TIMESTAMP.match(value):
                raise QueryError(
                    param, f"{_shown(value)} is not a normalized timestamp; use parse_time()"
                )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise QueryError("to", "must be later than from")

    @property
    def action_prefix(self) -> str | None:
        """The prefix when ``action`` ends with ``*``, else None."""
        if self.action is not None and self.action.endswith("*"):
            return self.action[:-1]
        return None

    def to_params(self) -> dict[str, str]:
        """The filter as HTTP parameters (only those set), e.g. for a link or a record."""
        return {
            param: value
            for param, name in FILTER_PARAMS.items()
            if (value := getattr(self, name)) is not None
        }

    def fingerprint(self) -> str:
        """A short digest of the filter, which binds cursors to it."""
        digest = hashlib.sha256(orjson.dumps([_CURSOR_VERSION, *astuple(self)])).digest()
        return base64.urlsafe_b64encode(digest[:9]).decode()


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query: ``events`` newest first; ``next_cursor`` None on the last page."""

    events: list[Event]
    next_cursor: str | None


# --- cursors -------------------------------------------------------------------------------

Position = tuple[str | int, ...]
# Where a page ends: (timestamp, tie-breaker), the tie-breaker the store's (its tiebreak).
Keyset = tuple[str, int | str]


def encode_cursor(filter: EventFilter, position: Position) -> str:
    """An opaque cursor for ``position`` (chosen by the store) within ``filter``'s results."""
    payload = orjson.dumps([_CURSOR_VERSION, filter.fingerprint(), *position])
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode_cursor(filter: EventFilter, cursor: str) -> Position:
    """The position held by ``cursor``; ``QueryError`` unless it was made for ``filter``."""
    if len(cursor) > MAX_CURSOR_CHARS or not _CURSOR_CHARS.match(cursor):
        raise QueryError("cursor", "is not a cursor returned by this API", "invalid_cursor")
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise QueryError(
            "cursor", "is not a cursor returned by this API", "invalid_cursor"
        ) from None
    if (
        not isinstance(payload, list)
        or len(payload) < 2
        or payload[0] != _CURSOR_VERSION
        or not isinstance(payload[1], str)
        or not all(type(item) in (str, int) for item in payload[2:])
    ):
        raise QueryError("cursor", "is not a cursor returned by this API", "invalid_cursor")
    if payload[1] != filter.fingerprint():
        raise QueryError(
            "cursor",
            "was made for different filters; start again from the first page",
            "foreign_cursor",
        )
    return tuple(payload[2:])


# --- parsing -------------------------------------------------------------------------------


def check_params(items: Iterable[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    """Query parameters as a dict: ``QueryError`` for an unknown or repeated one.

    Empty values count as absent (an HTML form sends every field).
    """
    known = set(allowed)
    params: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in items:
        if name not in known:
            raise QueryError(
                name[:64],
                f"unknown parameter; expected one of {', '.join(sorted(known))}",
                "unknown_parameter",
            )
        if name in seen:
            raise QueryError(name, "is given more than once")
        seen.add(name)
        if len(value) > MAX_PARAM_CHARS:
            raise QueryError(name, f"is longer than {MAX_PARAM_CHARS} characters")
        if value:
            params[name] = value
    return params


def parse_filter(params: Mapping[str, str | None]) -> EventFilter:
    """An ``EventFilter`` from HTTP-named parameters; None or "" means not set.

    ``from``/``to`` accept an ISO 8601 date or date-time (see ``parse_time``).
    """
    values: dict[str, str] = {}
    for param, name in FILTER_PARAMS.items():
        value = params.get(param)
        if value is None or value == "":
            continue
        if len(value) > MAX_PARAM_CHARS:
            raise QueryError(param, f"is longer than {MAX_PARAM_CHARS} characters")
        if param in ("from", "to"):
            value = parse_time(param, value, end=param == "to")
        values[name] = value
    return EventFilter(**values)


def parse_time(param: str, text: str, *, end: bool = False) -> str:
    """An ISO 8601 date or date-time as a log timestamp (UTC, microseconds, ``Z``).

    A date means the start of that day (UTC), or with ``end`` the start of the next day:
    an exclusive ``to`` of ``2024-05-01`` includes all of May 1st. A date-time without a
    time zone is taken as UTC.
    """
    invalid = QueryError(
        param,
        f"{_shown(text, 40)} is not an ISO 8601 date (2024-05-01) "
        "or date-time (2024-05-01T12:00:00Z)",
    )
    if len(text) > 64 or not text.isascii():
        raise invalid
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        try:
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return _format(moment + timedelta(days=1) if end else moment)
        except OverflowError:
            return _MAX_TIMESTAMP  # the day after 9999-12-31: later than any event
    try:
        moment = datetime.fromisoformat(text)
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=UTC)
        return _format(moment.astimezone(UTC))
    except (ValueError, OverflowError):
        raise invalid from None


def parse_limit(text: str | None) -> int:
    """``limit``: an integer from 1 to ``MAX_LIMIT``; ``DEFAULT_LIMIT`` when absent."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not _DIGITS.match(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise QueryError("limit", f"must be an integer from 1 to {MAX_LIMIT}, not {_shown(text)}")
    return int(text)


def parse_page(text: str | None) -> int | None:
    """``page``: a page number from 1 to ``MAX_PAGE``, or None when absent."""
    if text is None or text == "":
        return None
    if not _DIGITS.match(text) or not 1 <= int(text) <= MAX_PAGE:
        raise QueryError("page", f"must be an integer from 1 to {MAX_PAGE}, not {_shown(text)}")
    return int(text)


def parse_buckets(text: str | None) -> int:
    """``buckets``: the most histogram intervals wanted, an integer from 1 to
    ``MAX_BUCKETS``; ``DEFAULT_BUCKETS`` when absent."""
    if text is None or text == "":
        return DEFAULT_BUCKETS
    if not _DIGITS.match(text) or not 1 <= int(text) <= MAX_BUCKETS:
        raise QueryError(
            "buckets", f"must be an integer from 1 to {MAX_BUCKETS}, not {_shown(text)}"
        )
    return int(text)


def parse_max_age(text: str | None) -> int | None:
    """``max_age``: seconds from 0 to ``MAX_VERIFY_AGE``, or None when absent."""
    if text is None or text == "":
        return None
    if not _DIGITS.match(text) or not 0 <= int(text) <= MAX_VERIFY_AGE:
        raise QueryError(
            "max_age", f"must be a number of seconds from 0 to {MAX_VERIFY_AGE}, not {_shown(text)}"
        )
    return int(text)


def _format(moment: datetime) -> str:
    # isoformat() always writes a four-digit year (strftime's %Y does not, below 1000).
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _shown(value: str, limit: int = 40) -> str:
    """A value quoted for an error message, cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


_OUTCOME_LIST = ", ".join(OUTCOMES)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """``text`` with only ``A``-``Z`` lowercased: how search folds case (as SQL's LIKE)."""
    return text.translate(_ASCII_LOWER)


def escape_like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself, for ``LIKE ... ESCAPE '\\'``: search
    terms are literal, ``%`` and ``_`` included."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where_clause(conditions: Iterable[str]) -> str:
    """`` WHERE a AND b`` for SQL conditions built from constant fragments; "" for none."""
    joined = " AND ".join(conditions)
    return f" WHERE {joined}" if joined else ""


def keyset_position(filter: EventFilter, cursor: str, tiebreak: type[int] | type[str]) -> Keyset:
    """The (timestamp, tie-breaker) position of a cursor ``query`` made for ``filter``.

    Each store breaks timestamp ties its own way (SQLite: a rowid, an ``int`` below 2**63;
    PostgreSQL: the event id, a ``str`` of at most 64 characters); anything else in the
    cursor is refused as a cursor this API did not return.
    """
    position = decode_cursor(filter, cursor)
    if len(position) == 2 and isinstance(position[0], str) and TIMESTAMP.match(position[0]):
        value = position[1]
        if tiebreak is int and type(value) is int and 0 <= value < 2**63:
            return position[0], value
        if tiebreak is str and isinstance(value, str) and len(value) <= 64:
            return position[0], value
    raise QueryError("cursor", "is not a cursor returned by this API", "invalid_cursor")
