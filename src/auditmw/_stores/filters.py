"""Which events to read: ``EventFilter``, the ``Page`` a query returns, and ``QueryError``.

``EventFilter`` says which events; ``AuditStore.query`` returns one ``Page`` of them,
newest first, and ``AuditStore.iter_events`` streams all of them for an export. A filter
validates itself: a bad value raises ``QueryError`` naming its HTTP parameter (``from``,
``to``, ``search``...), which the admin app answers with a 400 and the CLI with a
one-line message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, timedelta

import orjson

from auditmw._errors import AuditError
from auditmw._event import OUTCOMES, Event
from auditmw._text import is_unicode

MAX_PARAM_CHARS = 1024  # any single parameter value; event fields are at most 1024 chars
MIN_SEARCH_INDEX_CHARS = 3  # a trigram index cannot look up shorter terms
# The version of the cursor format, which a filter's fingerprint includes.
CURSOR_VERSION = 1

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

# The one timestamp format of the log (see auditmw._event.utc_timestamp); it sorts as text.
TIMESTAMP = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
MAX_TIMESTAMP = "9999-12-31T23:59:59.999999Z"  # later than any event's
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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
            raise QueryError("outcome", f"{shown(self.outcome)} is not one of {_OUTCOME_LIST}")
        for param, value in (("from", self.since), ("to", self.until)):
            if value is not None and not TIMESTAMP.match(value):
                raise QueryError(
                    param, f"{shown(value)} is not a normalized timestamp; use parse_time()"
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
        digest = hashlib.sha256(orjson.dumps([CURSOR_VERSION, *astuple(self)])).digest()
        return base64.urlsafe_b64encode(digest[:9]).decode()


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query: ``events`` newest first; ``next_cursor`` None on the last page."""

    events: list[Event]
    next_cursor: str | None


def ascii_lower(text: str) -> str:
    """``text`` with only ``A``-``Z`` lowercased: how search folds case (as SQL's LIKE)."""
    return text.translate(_ASCII_LOWER)


def format_timestamp(moment: datetime) -> str:
    """A UTC ``datetime`` as a log timestamp."""
    # isoformat() always writes a four-digit year (strftime's %Y does not, below 1000).
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def shown(value: str, limit: int = 40) -> str:
    """A value quoted for an error message, cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


_OUTCOME_LIST = ", ".join(OUTCOMES)


def parse_time(param: str, text: str, *, end: bool = False) -> str:
    """An ISO 8601 date or date-time as a log timestamp (UTC, microseconds, ``Z``).

    A date means the start of that day (UTC), or with ``end`` the start of the next day:
    an exclusive ``to`` of ``2024-05-01`` includes all of May 1st. A date-time without a
    time zone is taken as UTC.
    """
    invalid = QueryError(
        param,
        f"{shown(text, 40)} is not an ISO 8601 date (2024-05-01) "
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
            return format_timestamp(moment + timedelta(days=1) if end else moment)
        except OverflowError:
            return MAX_TIMESTAMP  # the day after 9999-12-31: later than any event
    try:
        moment = datetime.fromisoformat(text)
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=UTC)
        return format_timestamp(moment.astimezone(UTC))
    except (ValueError, OverflowError):
        raise invalid from None
