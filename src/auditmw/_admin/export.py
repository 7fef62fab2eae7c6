"""Exports: CSV for people and spreadsheets, JSON Lines for machines and verification.

An erased value (docs/privacy.md) is ``[erased]`` in CSV; JSON Lines has no opening for
it. Both turn a stream of events into a stream of byte chunks (about ``CHUNK_BYTES`` each),
so an export of millions of events is never held in memory. The admin app's routes and
``auditmw export`` share them.

CSV (RFC 4180, written by Python's ``csv`` module, UTF-8, CRLF line ends) has the columns
``CSV_COLUMNS``. A spreadsheet executes a cell starting with ``=``, ``+``, ``-`` or ``@``
(and some treat a leading tab or carriage return the same way), so such a cell gets a
leading ``'``: ``=HYPERLINK(...)`` is exported as ``'=HYPERLINK(...)``. The CSV is for
reading; use JSON Lines for exact values.

JSON Lines: one event per line, every field. Each line is the event's entry exactly as it
was hashed (RFC 8785 canonical JSON) with ``"hash"`` added as the last member, so
``auditmw verify --jsonl`` (or the procedure in docs/format.md) checks it offline.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Literal, get_args

import orjson

from auditmw._event import Event
from auditmw._personal import ERASED_MARK, marked_details
from auditmw._stores.jsonl import jsonl_line

Format = Literal["csv", "jsonl"]
FORMATS: tuple[str, ...] = get_args(Format)
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
CSV_COLUMNS = (
    "Timestamp",
    "User",
    "Action",
    "Resource",
    "Resource ID",
    "IP Address",
    "Outcome",
    "User Agent",
    "Request ID",
    "Details",
    "Seq",
    "Hash",
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES = 64 * 1024
PROGRESS_EVERY = 10_000  # events between progress callbacks


def export_filename(format: Format, today: date | None = None) -> str:
    """``audit-logs-YYYY-MM-DD.csv`` (or ``.jsonl``), dated today in UTC."""
    day = today or datetime.now(UTC).date()
    return f"audit-logs-{day.isoformat()}.{format}"


def neutralize(cell: str) -> str:
    """``cell`` with a leading ``'`` when a spreadsheet would run it as a formula."""
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


def csv_row(event: Event) -> list[str]:
    """The CSV cells of an event, in ``CSV_COLUMNS`` order, neutralized; an erased value
    (``Event.erased``) reads ``[erased]``, never an empty cell."""
    erased = event.erased
    details = event.details
    if erased:
        details = marked_details(details, erased)
    details_cell = "" if details is None else orjson.dumps(details).decode()
    cells = (
        event.timestamp,
        event.user_email or event.user_id or _mark("/user_email", erased),
        event.action,
        event.resource,
        event.resource_id or "",
        event.ip_address or _mark("/ip_address", erased),
        event.outcome,
        event.user_agent or _mark("/user_agent", erased),
        event.request_id or "",
        details_cell,
        str(event.seq),
        event.hash,
    )
    return [neutralize(cell) for cell in cells]


def _mark(pointer: str, erased: tuple[str, ...]) -> str:
    return ERASED_MARK if pointer in erased else ""


async def export_chunks(
    events: AsyncIterable[Event],
    format: Format,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The export of ``events`` as byte chunks; ``progress`` gets the running count."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    writer = _CsvWriter() if format == "csv" else None
    chunk = bytearray(writer.header() if writer else b"")
    count = 0
    async for event in events:
        chunk += writer.row(event) if writer else jsonl_line(event)
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
        if len(chunk) >= CHUNK_BYTES:
            yield bytes(chunk)
            chunk.clear()
    if chunk:
        yield bytes(chunk)
    if progress is not None:
        progress(count)


class _CsvWriter:
    """``csv.writer`` over a reusable buffer: each call returns the bytes of one row."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def header(self) -> bytes:
        return self._write(list(CSV_COLUMNS))

    def row(self, event: Event) -> bytes:
        return self._write(csv_row(event))

    def _write(self, cells: list[str]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(cells)
        return self._buffer.getvalue().encode("utf-8")
