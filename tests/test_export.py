"""CSV and JSON Lines exports (_admin.export) and offline verification (_stores.jsonl)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import tracemalloc
from datetime import date
from pathlib import Path

import orjson
import pytest

from auditmw import EventFilter, NewEvent, SQLiteStore
from auditmw._admin.export import (
    CHUNK_BYTES,
    CSV_COLUMNS,
    csv_row,
    export_chunks,
    export_filename,
    jsonl_line,
    neutralize,
)
from auditmw._stores.jsonl import verify_jsonl

from ._paths import ROOT
from .test_query import ts, write_events

HOSTILE = [
    '=HYPERLINK("http://evil","click")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tleading tab",
    "\rleading CR",
    'quote " inside',
    "comma, inside",
    "new\nline",
    "crlf\r\nline",
    "'already quoted",
    "ünïcödé ✓ 𝄞",
    "",
]


async def collect(store: SQLiteStore, format: str, f: EventFilter | None = None) -> bytes:
    chunks = export_chunks(store.iter_events(f or EventFilter()), format)  # type: ignore[arg-type]
    return b"".join([chunk async for chunk in chunks])


# --- CSV -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", HOSTILE)
def test_neutralize_prefixes_only_formula_starters(cell: str) -> None:
    expected = "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell
    assert neutralize(cell) == expected


async def test_csv_survives_a_round_trip_through_the_csv_module(store: SQLiteStore) -> None:
    for index, text in enumerate(HOSTILE):
        await store.append(
            NewEvent(
                action=f"test.{index}",
                resource=text or "r",
                resource_id=text or None,
                user_email=text or None,
                user_agent=text or None,
                details={"text": text, "n": index},
            )
        )
    data = await collect(store, "csv")
    data.decode("utf-8")  # UTF-8 throughout
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert data.startswith(b"Timestamp,User,Action,Resource,Resource ID,IP Address,Outcome,")
    assert b"\r\n" in data  # RFC 4180 line ends
    assert len(rows) == len(HOSTILE) + 1
    events = [event async for event in store.iter_events(EventFilter())]
    for row, event, text in zip(rows[1:], events, HOSTILE, strict=True):
        assert row == csv_row(event)
        assert row[3] == neutralize(text or "r") and row[4] == neutralize(text)
        assert row[1] == neutralize(text)  # User: the email here
        assert row[10] == str(event.seq) and row[11] == event.hash
        assert orjson.loads(row[9]) == {"text": text, "n": event.details["n"]}  # type: ignore[index]
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_csv_user_is_email_then_id_then_empty() -> None:
    from auditmw._event import Event

    base = dict(
        id="1", log="default", seq=1, timestamp=ts(1), action="a", resource="r",
        resource_id=None, outcome="success", details=None, ip_address=None, user_agent=None,
        request_id=None, prev_hash="0" * 64, hash="f" * 64,
    )  # fmt: skip
    assert csv_row(Event(**base, user_id="u", user_email="e@x"))[1] == "e@x"  # type: ignore[arg-type]
    assert csv_row(Event(**base, user_id="u", user_email=None))[1] == "u"  # type: ignore[arg-type]
    assert csv_row(Event(**base, user_id=None, user_email=None))[1] == ""  # type: ignore[arg-type]
    assert csv_row(Event(**base, user_id=None, user_email=None))[9] == ""  # type: ignore[arg-type]


def test_export_filename() -> None:
    assert export_filename("csv", date(2024, 5, 1)) == "audit-logs-2024-05-01.csv"
    assert export_filename("jsonl", date(2024, 5, 1)) == "audit-logs-2024-05-01.jsonl"


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50,000 events (about 13 MB of CSV), built once for this module."""
    path = tmp_path_factory.mktemp("big") / "audit.db"
    events = [
        (
            NewEvent("bulk.write", "item", f"item-{i}", details={"i": i, "pad": "x" * 100}),
            ts(1, i % 60),
        )
        for i in range(50_000)
    ]
    asyncio.run(write_events(path, events))
    return path


@pytest.mark.parametrize("format", ["csv", "jsonl"])
async def test_exports_stream_in_chunks_with_flat_memory(big_store: Path, format: str) -> None:
    async with SQLiteStore(big_store) as store:
        tracemalloc.start()
        try:
            sizes = []
            async for chunk in export_chunks(store.iter_events(EventFilter()), format):  # type: ignore[arg-type]
                sizes.append(len(chunk))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    total = sum(sizes)
    assert total > 10_000_000 and len(sizes) > 100, (total, len(sizes))
    assert max(sizes) < CHUNK_BYTES + 1024  # each chunk is about 64 KiB, never the file
    assert peak < total / 4, (peak, total)  # memory does not grow with the number of rows


# --- JSON Lines ----------------------------------------------------------------------------

TRICKY_DETAILS = [
    None,
    {},
    {"float": 1.0, "big": 1e30, "tiny": 5e-324, "neg_zero": -0.0, "pi": 3.141592653589793},
    {"int_like_double": 1e20, "safe": 2**53 - 1, "neg": -(2**53 - 1)},
    {"𝄞 key beyond the BMP": 1, "\ue000 private": 2, "a": [1, {"b": None}]},
    {"escapes": 'quote " backslash \\ tab \t nul \x00 line\u2028sep', "<script>": "</script>"},
]


@pytest.mark.parametrize("details", TRICKY_DETAILS)
async def test_jsonl_lines_are_the_hashed_entries(
    store: SQLiteStore, details: dict[str, object] | None
) -> None:
    appended = await store.append(NewEvent("a.b", "r", details=details))
    [event] = [event async for event in store.iter_events(EventFilter())]
    assert event == appended
    line = jsonl_line(event)
    assert line.endswith(b'"}\n') and line.count(b"\n") == 1
    conn_entry = None
    async for row in store.iter_chain_rows():
        conn_entry = row.entry
    assert line == conn_entry[:-1] + b',"hash":"' + event.hash.encode() + b'"}\n'  # type: ignore[index]
    # Format 2: the entry as hashed, so with its commitments (none here: no personal data).
    assert orjson.loads(line) == {**event.to_dict(), "format": 2, "commitments": {}}
    assert verify_jsonl([line]).ok


async def make_store(store: SQLiteStore) -> None:
    for index in range(30):
        log = "billing" if index % 3 == 0 else "default"
        await store.append(
            NewEvent(
                f"item.{'create' if index % 2 else 'update'}",
                "item",
                str(index),
                user_id=f"u{index % 4}",
                details={"n": index, "x": 1.5},
                log=log,
            )
        )


async def test_a_whole_export_verifies(store: SQLiteStore) -> None:
    await make_store(store)
    lines = (await collect(store, "jsonl")).splitlines(keepends=True)
    report = verify_jsonl(lines)
    assert report.ok and not report.subset and report.entries == 30
    assert report.summary().startswith("OK: 30 entries intact, the whole log from seq 1")
    store_report = await store.verify()
    assert {name: s.to_dict() for name, s in report.logs.items()} == {
        name: s.to_dict() for name, s in store_report.logs.items()
    }


async def test_a_whole_export_passes_the_documented_procedure(
    store: SQLiteStore, tmp_path: Path
) -> None:
    script = ROOT / "docs" / "verify_jsonl.py"
    if not script.exists():
        pytest.skip("docs/verify_jsonl.py is not there")
    await make_store(store)
    export = tmp_path / "export.jsonl"
    export.write_bytes(await collect(store, "jsonl"))
    done = subprocess.run(  # noqa: ASYNC221 (a short child process, in a test)
        [sys.executable, str(script), str(export)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_filtered_export_is_a_subset(store: SQLiteStore) -> None:
    await make_store(store)
    for f in (
        EventFilter(user_id="u1"),
        EventFilter(action="item.create"),
        EventFilter(search="2"),
    ):
        lines = (await collect(store, "jsonl", f)).splitlines(keepends=True)
        report = verify_jsonl(lines)
        assert report.ok and report.subset, report.summary()
        assert report.entries == len(lines) and 0 < report.missing <= 30 - len(lines)
        assert report.summary().startswith("SUBSET:")
        assert "filtered export" in report.summary()


async def test_logs_may_be_interleaved(store: SQLiteStore) -> None:
    await make_store(store)
    lines = (await collect(store, "jsonl")).splitlines(keepends=True)
    interleaved = sorted(lines, key=lambda line: orjson.loads(line)["timestamp"])
    assert interleaved != lines
    assert verify_jsonl(interleaved).ok and not verify_jsonl(interleaved).subset


async def test_equivalent_json_is_accepted_only_as_reserialized(store: SQLiteStore) -> None:
    await make_store(store)
    lines = (await collect(store, "jsonl")).splitlines()
    rewritten = [
        json.dumps(dict(reversed(list(json.loads(line).items()))), indent=1, ensure_ascii=True)
        .replace("\n", " ")
        .encode()
        for line in lines
    ]
    assert rewritten != lines
    assert verify_jsonl(rewritten, reserialized=True).ok
    # By default a line must be what auditmw wrote: the bytes that were hashed.
    report = verify_jsonl(rewritten)
    assert report.damaged and report.total_problems == len(lines)
    assert report.problems[0].startswith('line 1: does not end with its "hash" member')
    assert "--reserialized" in report.problems[0]


def _edit(line: bytes, **changes: object) -> bytes:
    data = orjson.loads(line)
    data.update(changes)
    return orjson.dumps(data)


async def test_damage_is_reported(store: SQLiteStore) -> None:
    await make_store(store)
    lines = (await collect(store, "jsonl")).splitlines()
    data = orjson.loads(lines[5])
    cases = {
        "changed action": [*lines[:5], _edit(lines[5], action="evil"), *lines[6:]],
        "changed hash": [*lines[:5], _edit(lines[5], hash="0" * 64), *lines[6:]],
        "swapped lines": [*lines[:4], lines[5], lines[4], *lines[6:]],
        "repeated line": [*lines[:6], lines[5], *lines[6:]],
        "not JSON": [*lines[:5], b"{not json", *lines[6:]],
        "missing field": [
            *lines[:5],
            orjson.dumps({k: v for k, v in data.items() if k != "ip_address"}),
            *lines[6:],
        ],
        "extra field": [*lines[:5], _edit(lines[5], extra=1), *lines[6:]],
        "duplicate name": [*lines[:5], lines[5][:-1] + b',"action":"other"}', *lines[6:]],
        "array": [*lines[:5], b"[1,2]", *lines[6:]],
        "seq as string": [*lines[:5], _edit(lines[5], seq=str(data["seq"])), *lines[6:]],
        "huge number": [
            *lines[:5],
            lines[5].replace(b'"x":1.5', b'"x":1' + b"0" * 400),
            *lines[6:],
        ],
        "NaN": [*lines[:5], lines[5].replace(b'"x":1.5', b'"x":NaN'), *lines[6:]],
        "invalid UTF-8": [*lines[:5], lines[5].replace(b'"item"', b'"\xff"'), *lines[6:]],
    }
    for name, edited in cases.items():
        report = verify_jsonl(edited)
        assert report.damaged and not report.ok and not report.subset, name
        assert report.summary().startswith("DAMAGED"), name


async def test_deleted_lines_look_like_a_subset(store: SQLiteStore) -> None:
    # Documented limit: without a checkpoint, removed lines cannot be told from a filter.
    await make_store(store)
    lines = (await collect(store, "jsonl")).splitlines()
    report = verify_jsonl(lines[1:10] + lines[12:])
    assert report.ok and report.subset and report.missing == 3


def test_empty_and_blank_files() -> None:
    for lines in ([], [b"\n", b"   \n"]):
        report = verify_jsonl(lines)
        assert report.ok and report.entries == 0 and not report.subset
