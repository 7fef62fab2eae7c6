"""Reading a log from HTTP or the CLI: parsing query parameters into a filter and a page.

The filter model is ``auditmw._stores.filters`` (``EventFilter``, ``Page``,
``QueryError``), the cursor codec ``auditmw._stores.cursor``; both are re-exported here.
Every function here raises ``QueryError`` for bad input, naming the HTTP parameter
(``from``, ``limit``, ``cursor``...); the admin app answers it with a 400, the CLI with a
one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

from auditmw._stores.cursor import (
    MAX_CURSOR_CHARS,
    Keyset,
    Position,
    decode_cursor,
    encode_cursor,
    keyset_position,
)
from auditmw._stores.filters import (
    FILTER_PARAMS,
    MAX_PARAM_CHARS,
    MIN_SEARCH_INDEX_CHARS,
    TIMESTAMP,
    EventFilter,
    Page,
    QueryError,
    format_timestamp,
    shown,
)
from auditmw._stores.histogram import DEFAULT_BUCKETS, MAX_BUCKETS

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_LIMIT",
    "FILTER_PARAMS",
    "MAX_BUCKETS",
    "MAX_CURSOR_CHARS",
    "MAX_LIMIT",
    "MAX_PAGE",
    "MAX_PARAM_CHARS",
    "MAX_VERIFY_AGE",
    "MIN_SEARCH_INDEX_CHARS",
    "PAGE_PARAMS",
    "TIMESTAMP",
    "EventFilter",
    "Keyset",
    "Page",
    "Position",
    "QueryError",
    "check_params",
    "decode_cursor",
    "encode_cursor",
    "keyset_position",
    "parse_buckets",
    "parse_filter",
    "parse_limit",
    "parse_max_age",
    "parse_page",
    "parse_time",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_PAGE = 100_000
# The oldest verification result /verify?max_age= may return instead of a new one (a day).
MAX_VERIFY_AGE = 86_400
PAGE_PARAMS = ("limit", "cursor", "page")

_MAX_TIMESTAMP = "9999-12-31T23:59:59.999999Z"
_DIGITS = re.compile(r"\A[0-9]{1,9}\Z")
# The parsing functions' spelling of the filter model's helpers.
_format = format_timestamp
_shown = shown


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
