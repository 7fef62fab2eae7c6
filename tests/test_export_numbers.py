"""Exports whose details hold numbers that JSON readers disagree about verify everywhere.

Events whose details hold the doubles 1e20, -0.0, 5e-324, 1e21, 1e-7, 2**53, ±2**60, the
largest double, 0.1 and 1e30, nested in objects and arrays next to non-ASCII and astral
keys and strings, are appended to real stores (SQLite and PostgreSQL), exported by the
real CLI (``python -m auditmw export``) and by the admin app over real HTTP (uvicorn on
127.0.0.1), and verified by the three verifiers: ``auditmw verify --jsonl``, ``python
docs/verify_jsonl.py`` and ``node docs/verify_jsonl.mjs``. Tampered copies must fail under
each of them, naming the line; what ``--reserialized`` accepts instead is pinned down too.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from starlette.requests import Request

from auditmw import Actor, AdminApp, EventFilter, NewEvent, open_store
from auditmw._cli import main
from auditmw._personal import place

from ._node import require_node
from ._paths import ROOT
from ._servers import serving_in_loop

VERIFY_PY = ROOT / "docs" / "verify_jsonl.py"

NUMBERS = {
    "1e20": 1e20,
    "-0.0": -0.0,
    "5e-324": 5e-324,
    "1e21": 1e21,
    "1e-7": 1e-7,
    "2**53": float(2**53),
    "2**60": float(2**60),
    "-2**60": -float(2**60),
    "max": 1.7976931348623157e308,
    "0.1": 0.1,
    "1e30": 1e30,
}
# How RFC 8785 writes each of them: what an export holds, byte for byte.
SPELLED = {
    "1e20": "100000000000000000000",
    "-0.0": "0",
    "5e-324": "5e-324",
    "1e21": "1e+21",
    "1e-7": "1e-7",
    "2**53": "9007199254740992",
    "2**60": "1152921504606847000",
    "-2**60": "-1152921504606847000",
    "max": "1.7976931348623157e+308",
    "0.1": "0.1",
    "1e30": "1e+30",
}
EVENTS = 9  # 6 in log "default", 3 in "billing"


def details(index: int) -> dict[str, Any]:
    values = list(NUMBERS.values())
    return {
        "numbers": NUMBERS,
        "list": [*values, {"again": values}],
        "nested": {"deeper": {"deepest": [[NUMBERS["1e20"], NUMBERS["2**60"]]]}},
        "\U0001f600": "astral key: sorts before \uff21 by UTF-16 code units",
        "\uff21": "\U0001d11e, caf\u00e9 and cafe\u0301, \u2028, \x01",
        "index": index,
    }


async def fill(url: str) -> None:
    async with open_store(url) as store:
        for index in range(EVENTS):
            await store.append(
                NewEvent(
                    "item.update",
                    "item",
                    f"item-{index}",
                    details=details(index),
                    user_id="\u00e9milie",
                    log="billing" if index % 3 == 2 else "default",
                )
            )


def authorize(request: Request) -> Actor:
    return Actor(user_id="auditor")


async def from_the_admin_app(url: str, *paths: str) -> list[bytes]:
    """GET each path from the admin app over ``url``'s store, through a real server."""
    async with open_store(url) as store:
        app = AdminApp(store, authorize=authorize)
        async with serving_in_loop(app) as base, httpx.AsyncClient(base_url=base) as client:
            bodies = []
            for path in paths:
                response = await client.get(path)
                assert response.status_code == 200, response.text
                bodies.append(response.content)
            return bodies


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*map(str, command)], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


@pytest.fixture
def filled_url(store_url_factory: Callable[[], str]) -> str:
    url = store_url_factory()
    asyncio.run(fill(url))
    return url


def test_both_exports_verify_with_all_three_verifiers(
    filled_url: str, tmp_path: Path, verify_mjs: Path
) -> None:
    cli_export = tmp_path / "cli.jsonl"
    exported = run(sys.executable, "-m", "auditmw", "export", filled_url, "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    cli_export.write_text(exported.stdout, encoding="utf-8")
    [admin_body] = asyncio.run(from_the_admin_app(filled_url, "/export.jsonl"))
    admin_export = tmp_path / "admin.jsonl"
    admin_export.write_bytes(admin_body)

    cli_lines = cli_export.read_bytes().split(b"\n")[:-1]
    admin_lines = admin_body.split(b"\n")[:-1]
    assert len(cli_lines) == EVENTS
    # The admin export records itself first (one more event): otherwise the same bytes.
    assert [line for line in admin_lines if b'"export.requested"' not in line] == cli_lines
    for line in cli_lines:
        if b'"item.update"' in line:
            for name, text in SPELLED.items():
                assert f'"{name}":{text},'.encode() in line or f'"{name}":{text}}}'.encode() in line

    for path, entries in ((cli_export, EVENTS), (admin_export, EVENTS + 1)):
        python = run(sys.executable, VERIFY_PY, path)
        node = run(require_node(), verify_mjs, path)
        auditmw = run(sys.executable, "-m", "auditmw", "verify", "--jsonl", path, "--complete")
        for result in (python, node, auditmw):
            assert result.returncode == 0, result.stdout + result.stderr
        assert python.stdout.startswith(f"OK: {entries} entries intact\n")
        assert node.stdout == python.stdout  # the two implementations agree to the byte
        assert auditmw.stdout.startswith(f"OK: {entries} entries intact, the whole log")
        heads = re.findall(r"head hash ([0-9a-f]{64})", python.stdout)
        assert len(heads) == 2 and all(head in auditmw.stdout for head in heads)


def test_every_reader_gives_back_the_doubles_that_were_hashed(
    filled_url: str, tmp_path: Path
) -> None:
    async def read() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        async with open_store(filled_url) as store:
            events = [event async for event in store.iter_events(EventFilter())]
            rows = [row async for row in store.iter_chain_rows()]
            got = [await store.get(event.id) for event in events]
            queried = (await store.query(EventFilter(action="item.update"), limit=100)).events
            return events, rows, got, queried

    events, rows, got, queried = asyncio.run(read())
    assert len(events) == len(rows) == EVENTS
    assert got == events and {event.id: event for event in queried} == {e.id: e for e in events}
    entries = [row.entry for row in rows]
    by_hash = {event.hash: event for event in events}
    for event, entry in zip(sorted(events, key=lambda e: (e.log, e.seq)), entries, strict=True):
        assert event.details is not None
        assert event.details["numbers"] == NUMBERS
        # Read back as doubles (-0.0 was hashed as 0), never as integers beyond 2**53 that
        # no RFC 8785 implementation takes: written again, they give the hashed bytes.
        assert all(type(v) is float for k, v in event.details["numbers"].items() if k != "-0.0")
        fields = {name: value for name, value in event.to_dict().items() if name != "hash"}
        hashed = json.loads(entry)
        if "format" in hashed:  # format 2: null where the entry commits to a personal value
            fields |= {"format": hashed["format"], "commitments": hashed["commitments"]}
            for pointer in hashed["commitments"]:
                place(fields, pointer, None)
        assert rfc8785.dumps(fields) == entry
        assert rfc8785.dumps(json.loads(json.dumps(fields))) == entry

    events_body, csv_body = asyncio.run(
        from_the_admin_app(filled_url, "/events?limit=100&action=item.update", "/export.csv")
    )
    api_events = json.loads(events_body)["events"]
    assert {event["hash"]: event["details"] for event in api_events} == {
        hash_: event.details for hash_, event in by_hash.items()
    }
    table = csv.DictReader(io.StringIO(csv_body.decode("utf-8")))
    cells = {cell["Hash"]: cell["Details"] for cell in table if cell["Action"] == "item.update"}
    assert {hash_: json.loads(cell) for hash_, cell in cells.items()} == {
        hash_: event.details for hash_, event in by_hash.items()
    }

    # The dashboard reads the API with JavaScript: it must see the doubles of the export.
    files = {"events": events_body, "cells": json.dumps(cells).encode()}
    for name, body in files.items():
        (tmp_path / f"{name}.json").write_bytes(body)
    (tmp_path / "export.jsonl").write_bytes(  # the stored entries, as an export holds them
        b"".join(row.entry[:-1] + b',"hash":"%s"}\n' % row.hash.encode() for row in rows)
    )
    compared = run(
        require_node(),
        "--input-type=module",
        "-e",
        COMPARE_IN_NODE,
        tmp_path / "events.json",
        tmp_path / "cells.json",
        tmp_path / "export.jsonl",
    )
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout) == {"compared": 2 * EVENTS, "different": []}


COMPARE_IN_NODE = """
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
const [events, cells, jsonl] = process.argv.slice(1).map((path) => readFileSync(path, "utf8"));
const exported = new Map(
  jsonl.split("\\n").filter(Boolean).map((line) => JSON.parse(line)).map((e) => [e.hash, e.details])
);
const pairs = [
  ...JSON.parse(events).events.map((e) => [e.hash, e.details]),
  ...Object.entries(JSON.parse(cells)).map(([hash, cell]) => [hash, JSON.parse(cell)]),
];
const different = pairs
  .filter(([hash, details]) => !isDeepStrictEqual(details, exported.get(hash)))
  .map(([hash]) => hash);
console.log(JSON.stringify({ compared: pairs.length, different }));
"""


# --- tampering ------------------------------------------------------------------------------
# On one export (a property of the file, whatever store wrote it). Lines 1-3 are log
# "billing", lines 4-9 log "default"; line 6 is default's seq 3, line 9 its last entry.

Lines = list[bytes]


@pytest.fixture(scope="module")
def export_lines(tmp_path_factory: pytest.TempPathFactory) -> Lines:
    directory = tmp_path_factory.mktemp("export")
    asyncio.run(fill(str(directory / "audit.db")))
    output = directory / "all.jsonl"
    assert (
        main(["export", str(directory / "audit.db"), "--format", "jsonl", "-o", str(output)]) == 0
    )
    lines = output.read_bytes().split(b"\n")[:-1]
    assert [json.loads(line)["log"] for line in lines] == ["billing"] * 3 + ["default"] * 6
    return [line + b"\n" for line in lines]


def at(index: int, change: Callable[[bytes], bytes]) -> Callable[[Lines], Lines]:
    """A tampering that changes line ``index`` (counted from 0) with ``change``."""

    def tamper(lines: Lines) -> Lines:
        changed = change(lines[index])
        assert changed != lines[index]
        return [*lines[:index], changed, *lines[index + 1 :]]

    return tamper


def replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    return lambda line: line.replace(old, new, 1)


def reorder(line: bytes) -> bytes:
    """The line with its first member ("action") moved to just before "user_id"."""
    action = re.match(rb'\{("action":"[^"]*"),', line)
    assert action is not None
    rest = b"{" + line[action.end() :]
    return rest.replace(b',"user_id":', b"," + action[1] + b',"user_id":', 1)


TAMPERED: dict[str, Callable[[Lines], Lines]] = {
    "one digit changed": at(5, replace(b'"0.1":0.1', b'"0.1":0.2')),
    "a digit beyond 2**53 changed": at(
        5, replace(b'"1e20":100000000000000000000', b'"1e20":100000000000000000001')
    ),
    "number respelled": at(5, replace(b'"1e30":1e+30', b'"1e30":1E+30')),
    "members reordered": at(5, reorder),
    "member name given twice": at(5, replace(b'{"action":', b'{"action":"forged","action":')),
    "lines swapped": lambda lines: [*lines[:5], lines[6], lines[5], *lines[7:]],
    "line dropped": lambda lines: [*lines[:5], *lines[6:]],
}
# What each verifier prints first about it: the scripts name the line, log and seq;
# auditmw names the line, or the log and seq of a modified entry.
SCRIPT_SAYS = {
    "one digit changed": "FAIL line 6 (log 'default' seq 3): entry modified",
    "a digit beyond 2**53 changed": "FAIL line 6 (log 'default' seq 3): not a valid entry: "
    "the number 100000000000000000001 is not written as RFC 8785 writes it",
    "number respelled": "FAIL line 6 (log 'default' seq 3): not a valid entry: "
    "the number 1E+30 is not written as RFC 8785 writes it",
    "members reordered": "FAIL line 6 (log 'default' seq 3): not a valid entry: "
    "not RFC 8785 canonical JSON",
    "member name given twice": "FAIL line 6 (unreadable): not a valid entry: duplicate member name",
    "lines swapped": "FAIL line 6 (log 'default' seq 4): expected seq 3",
    "line dropped": "FAIL line 6 (log 'default' seq 4): expected seq 3",
}
AUDITMW_SAYS = {
    "one digit changed": "log 'default' seq 3: modified",
    "a digit beyond 2**53 changed": "line 6: log 'default' seq 3: not RFC 8785 canonical JSON",
    "number respelled": "line 6: log 'default' seq 3: not RFC 8785 canonical JSON",
    "members reordered": "line 6: log 'default' seq 3: not RFC 8785 canonical JSON",
    "member name given twice": "line 6: log 'default' seq 3: not RFC 8785 canonical JSON",
    "lines swapped": "line 7: log 'default' seq 3 comes after seq 4",
    "line dropped": "line 6: log 'default' seq 3 not in the file",
}
# --reserialized compares values, not bytes: a change that keeps every value (a double
# spelled another way, members in another order) passes there. That is its documented
# caveat; the default path catches all of them.
SAME_VALUES = {"a digit beyond 2**53 changed", "number respelled", "members reordered"}


def verify_with_auditmw(
    capsys: pytest.CaptureFixture[str], path: Path, *flags: str
) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", "--jsonl", str(path), "--complete", *flags])
    return code, capsys.readouterr().out


def scripts(verify_mjs: Path) -> list[list[str]]:
    return [[sys.executable, str(VERIFY_PY)], [require_node(), str(verify_mjs)]]


@pytest.mark.parametrize("case", TAMPERED)
def test_tampering_fails_every_verifier_naming_the_line(
    export_lines: Lines,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verify_mjs: Path,
    case: str,
) -> None:
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"".join(export_lines))
    assert verify_with_auditmw(capsys, path)[0] == 0  # intact before

    path.write_bytes(b"".join(TAMPERED[case](export_lines)))
    for script in scripts(verify_mjs):
        result = run(*script, path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.startswith(SCRIPT_SAYS[case]), result.stdout
    code, out = verify_with_auditmw(capsys, path)
    assert code == 1
    assert AUDITMW_SAYS[case] in out, out


@pytest.mark.parametrize("case", TAMPERED)
def test_what_reserialized_accepts(
    export_lines: Lines,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verify_mjs: Path,
    case: str,
) -> None:
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"".join(TAMPERED[case](export_lines)))
    expected = 0 if case in SAME_VALUES else 1
    outputs = []
    for script in scripts(verify_mjs):
        result = run(*script, "--reserialized", path)
        assert result.returncode == expected, result.stdout + result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    if expected:
        assert outputs[0].startswith("FAIL line 6 ")
    code, out = verify_with_auditmw(capsys, path, "--reserialized")
    assert code == expected, out


def test_a_file_rewritten_by_another_tool_verifies_only_as_reserialized(
    export_lines: Lines, tmp_path: Path, capsys: pytest.CaptureFixture[str], verify_mjs: Path
) -> None:
    # As a tool that parses and writes JSON again would: members in another order, ASCII
    # escapes and spaces, Python's own number spellings (1e-07, 1e+21; 1e20 read as an
    # exact integer and written back as one), and seq written as 3.0.
    rewritten = []
    for line in export_lines:
        data = json.loads(line)
        data["seq"] = float(data["seq"])
        rewritten.append(json.dumps(dict(reversed(data.items()))) + "\n")
    assert "1e-07" in rewritten[0] and '"seq": 1.0' in rewritten[0]
    path = tmp_path / "rewritten.jsonl"
    path.write_text("".join(rewritten), encoding="utf-8")

    outputs = []
    for script in scripts(verify_mjs):
        result = run(*script, "--reserialized", path)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
        result = run(*script, path)
        assert result.returncode == 1
        assert result.stdout.startswith("FAIL line 1 (unreadable): not a valid entry: the line")
    assert outputs[0] == outputs[1] and outputs[0].startswith(f"OK: {EVENTS} entries intact")
    assert verify_with_auditmw(capsys, path, "--reserialized")[0] == 0
    code, out = verify_with_auditmw(capsys, path)
    assert code == 1 and 'line 1: does not end with its "hash" member' in out


# A line rewritten in another spelling of the same values, its hash recomputed over the new
# bytes (as someone rewriting the log would): the hash and the chain are consistent, and
# only the canonical-form check can tell. The line is the last of log "default", so no
# later prev_hash points at it.
RESPELLED: dict[str, Callable[[bytes], bytes]] = {
    "members reordered": reorder,
    "a space added": replace(b'"action":"', b'"action": "'),
    "a character escaped": replace("\u00e9".encode(), b"\\u00e9"),
    "a slash escaped": replace(b"UTF-16", b"UTF\\/16"),
    "1e+30 as 1E+30": replace(b":1e+30,", b":1E+30,"),
    "0.1 as 0.10": replace(b":0.1,", b":0.10,"),
    "1e20 as 1e+20": replace(b":100000000000000000000,", b":1e+20,"),
    "1e20 as 100000000000000000001": replace(
        b":100000000000000000000,", b":100000000000000000001,"
    ),
    "0 as -0": replace(b'"-0.0":0,', b'"-0.0":-0,'),
    "a member given twice": replace(b'{"action":', b'{"action":"forged","action":'),
}


def rehash(line: bytes) -> bytes:
    found = re.search(rb',"hash":"[0-9a-f]{64}"\}\n\Z', line)
    assert found is not None
    entry = line[: found.start()] + b"}"
    return entry[:-1] + b',"hash":"%s"}\n' % hashlib.sha256(b"\x00" + entry).hexdigest().encode()


@pytest.mark.parametrize("case", RESPELLED)
def test_a_rewritten_line_with_a_recomputed_hash_is_not_canonical(
    export_lines: Lines,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verify_mjs: Path,
    case: str,
) -> None:
    respelled = RESPELLED[case](export_lines[8])
    assert respelled != export_lines[8]
    path = tmp_path / "respelled.jsonl"
    path.write_bytes(b"".join([*export_lines[:8], rehash(respelled)]))
    for script in scripts(verify_mjs):
        result = run(*script, path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.startswith("FAIL line 9 "), result.stdout
        assert (
            ("canonical" in result.stdout)
            or ("RFC 8785 writes" in result.stdout)
            or ("duplicate member name" in result.stdout)
        ), result.stdout
    code, out = verify_with_auditmw(capsys, path)
    assert code == 1
    assert "line 9: log 'default' seq 6: not RFC 8785 canonical JSON" in out, out
