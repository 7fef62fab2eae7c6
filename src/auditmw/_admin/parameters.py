"""The query parameters of the admin API, each described once, and their parsers.

Each ``Parameter`` names one query parameter with its schema (type and limits), help text
and example. The HTTP parsers below, the OpenAPI document (``Parameter.openapi``) and the
command line (``add_filter_arguments`` / ``filter_from_arguments``: ``auditmw export``'s
``--user-id``, ``--from``...) all read this table, so a parameter cannot say one thing in
one place and another elsewhere.

Every parser raises ``QueryError`` for bad input, naming the HTTP parameter (``from``,
``limit``...); the admin app answers it with a 400, the command line with a one-line
message naming the option (``Parameter.flag``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auditmw._event import OUTCOMES
from auditmw._stores.cursor import MAX_CURSOR_CHARS
from auditmw._stores.filters import (
    FILTER_PARAMS,
    MAX_PARAM_CHARS,
    EventFilter,
    QueryError,
    parse_time,
)
from auditmw._stores.histogram import DEFAULT_BUCKETS, MAX_BUCKETS

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_PAGE = 100_000
# The oldest verification result /verify?max_age= may return instead of a new one (a day).
MAX_VERIFY_AGE = 86_400
_DIGITS = re.compile(r"\A[0-9]{1,9}\Z")
# Every text filter refuses control characters (EventFilter): the schema says so, so that
# generated "valid" values are valid.
_TEXT = {"type": "string", "maxLength": MAX_PARAM_CHARS, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
_DATE_OR_TIME = {
    "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]
}


@dataclass(frozen=True, slots=True)
class Parameter:
    """One query parameter: its HTTP ``name``, JSON ``schema``, ``help`` (Markdown) and
    ``example``. An integer's schema has ``minimum`` and ``maximum`` (and ``default``
    when it has one); ``noun`` is how an error names its values."""

    name: str
    schema: Mapping[str, Any]
    help: str
    example: str | None = None
    noun: str = "an integer"

    @property
    def flag(self) -> str:
        """The command-line option: ``--user-id`` for ``user_id``."""
        return flag(self.name)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI Parameter Object. An empty value means "not set" (as an HTML form
        sends unfilled fields)."""
        parameter = {
            "name": self.name,
            "in": "query",
            "schema": dict(self.schema),
            "allowEmptyValue": True,
            "description": self.help,
        }
        return parameter if self.example is None else {**parameter, "example": self.example}

    def integer(self, text: str | None) -> int | None:
        """An integer parameter's value, within its limits; its default when absent."""
        if text is None or text == "":
            default: int | None = self.schema.get("default")
            return default
        minimum: int = self.schema["minimum"]
        maximum: int = self.schema["maximum"]
        if not _DIGITS.match(text) or not minimum <= int(text) <= maximum:
            shown = repr(text if len(text) <= 40 else text[:40] + "…")
            raise QueryError(
                self.name, f"must be {self.noun} from {minimum} to {maximum}, not {shown}"
            )
        return int(text)


def _text(name: str, help: str, example: str | None = None) -> Parameter:
    return Parameter(name, _TEXT, help, example)


FILTERS = (
    _text("user_id", "Exact user id."),
    _text("user_email", "Exact user email.", "ann@example.com"),
    _text("action", "Exact action, or a prefix ending in `*` (`project.*`).", "project.*"),
    _text("resource", "Exact resource type.", "project"),
    _text("resource_id", "Exact resource id."),
    Parameter("outcome", {"type": "string", "enum": list(OUTCOMES)}, "Exact outcome."),
    Parameter(
        "from",
        _DATE_OR_TIME,
        "Events at or after this ISO 8601 date (UTC day) or date-time (UTC if no zone).",
        "2024-05-01",
    ),
    Parameter(
        "to",
        _DATE_OR_TIME,
        "Events before this date-time; a date includes that whole (UTC) day. "
        "Must be later than `from`.",
        "2024-05-31T12:00:00Z",
    ),
    _text(
        "search",
        "Case-insensitive (ASCII) substring of action, resource, resource_id, "
        "user_email or user_id; every character is literal.",
    ),
)
LIMIT = Parameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "Events per page.",
)
CURSOR = Parameter(
    "cursor",
    {"type": "string", "maxLength": MAX_CURSOR_CHARS},
    "`next_cursor` of the previous page (same filters); not with `page`.",
)
PAGE = Parameter(
    "page",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    "Page number, for simple clients (slower deep down than `cursor`); not with `cursor`.",
)
PAGING = (LIMIT, CURSOR, PAGE)
BUCKETS = Parameter(
    "buckets",
    {"type": "integer", "minimum": 1, "maximum": MAX_BUCKETS, "default": DEFAULT_BUCKETS},
    "The most intervals wanted. Their width is the narrowest of 1, 2, 5, 10, 20, 50, 100, "
    "200, 500 ms, 1, 2, 5, 10, 15, 30 s or min, 1, 2, 3, 6, 12 h, 1, 2, 5, 10, 20, 50... "
    "days that covers the range in as many; intervals start at whole multiples of it (UTC).",
)
MAX_AGE = Parameter(
    "max_age",
    {"type": "integer", "minimum": 0, "maximum": MAX_VERIFY_AGE},
    "Return the last result instead of verifying again if it finished at most this many "
    "seconds ago (the dashboard's page load uses 300). Without it, the chain is verified now.",
    noun="a number of seconds",
)
FILTER_NAMES = tuple(parameter.name for parameter in FILTERS)
PAGE_PARAMS = tuple(parameter.name for parameter in PAGING)


# --- HTTP ----------------------------------------------------------------------------------


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
    for parameter in FILTERS:
        param = parameter.name
        value = params.get(param)
        if value is None or value == "":
            continue
        if len(value) > MAX_PARAM_CHARS:
            raise QueryError(param, f"is longer than {MAX_PARAM_CHARS} characters")
        if param in ("from", "to"):
            value = parse_time(param, value, end=param == "to")
        values[FILTER_PARAMS[param]] = value
    return EventFilter(**values)


def parse_limit(text: str | None) -> int:
    """``limit``: an integer from 1 to ``MAX_LIMIT``; ``DEFAULT_LIMIT`` when absent."""
    return _with_default(LIMIT, text)


def parse_page(text: str | None) -> int | None:
    """``page``: a page number from 1 to ``MAX_PAGE``, or None when absent."""
    return PAGE.integer(text)


def parse_buckets(text: str | None) -> int:
    """``buckets``: the most histogram intervals wanted, an integer from 1 to
    ``MAX_BUCKETS``; ``DEFAULT_BUCKETS`` when absent."""
    return _with_default(BUCKETS, text)


def parse_max_age(text: str | None) -> int | None:
    """``max_age``: seconds from 0 to ``MAX_VERIFY_AGE``, or None when absent."""
    return MAX_AGE.integer(text)


def _with_default(parameter: Parameter, text: str | None) -> int:
    value = parameter.integer(text)
    assert value is not None  # the schema has a default
    return value


# --- the command line ------------------------------------------------------------------------


def add_filter_arguments(parser: argparse.ArgumentParser, *, skip: Collection[str] = ()) -> None:
    """Add each filter to ``parser`` as an option (``--user-id``, ``--from``...), with
    its help; ``filter_from_arguments`` reads them back. ``skip``: HTTP names of filters
    the command leaves out (its own option has that flag)."""
    for parameter in FILTERS:
        if parameter.name in skip:
            continue
        help = parameter.help.replace("`", "").replace("%", "%%")
        parser.add_argument(
            parameter.flag, dest=_dest(parameter), metavar="VALUE", default=None, help=help
        )


def filter_from_arguments(namespace: argparse.Namespace) -> EventFilter:
    """The ``EventFilter`` of the options ``add_filter_arguments`` added; ``QueryError``
    naming the HTTP parameter (``Parameter.flag`` spells it as an option) for bad input."""
    return parse_filter(
        {parameter.name: getattr(namespace, _dest(parameter), None) for parameter in FILTERS}
    )


def flag(param: str) -> str:
    """The command-line option of the HTTP parameter ``param`` (``from`` → ``--from``)."""
    return "--" + param.replace("_", "-")


def _dest(parameter: Parameter) -> str:
    return f"filter_{parameter.name}"
