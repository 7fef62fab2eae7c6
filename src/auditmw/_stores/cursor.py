"""Cursors: where a page of a query ends, as an opaque string for the next request.

Pages are addressed by keyset, never by offset: a cursor holds the position of the last
event of a page (its timestamp and a store-specific tie-breaker), so the next page starts
with an index seek wherever it is. Cursors are opaque (base64url JSON), versioned and
bound to their filter: a cursor made for one filter is rejected for another
(``QueryError`` with param ``cursor``). They are not signed: a client who edits one only
moves its own position within results it may read.
"""

from __future__ import annotations

import base64
import binascii
import re

import orjson

from auditmw._stores.filters import CURSOR_VERSION, TIMESTAMP, EventFilter, QueryError

MAX_CURSOR_CHARS = 512
_CURSOR_CHARS = re.compile(r"\A[A-Za-z0-9_-]+\Z")

Position = tuple[str | int, ...]
# Where a page ends: (timestamp, tie-breaker), the tie-breaker the store's (its tiebreak).
Keyset = tuple[str, int | str]


def encode_cursor(filter: EventFilter, position: Position) -> str:
    """An opaque cursor for ``position`` (chosen by the store) within ``filter``'s results."""
    payload = orjson.dumps([CURSOR_VERSION, filter.fingerprint(), *position])
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
        or payload[0] != CURSOR_VERSION
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
