"""docs/format.md is a public contract: its test vectors must be what auditmw writes, and
its verification scripts (Python, and JavaScript under node) must accept an intact export
and catch a damaged one, with the same verdicts."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785

import auditmw._event
from auditmw import GENESIS_HASH, Event, Limits, NewEvent, SQLiteStore, entry_hash
from auditmw._canonical import canonical_json, check_json
from auditmw._event import EVENT_FIELDS, ROW_FIELDS, TEXT_COLUMNS, as_doubles, prepare
from auditmw._stores.jsonl import jsonl_line

from ._node import VERIFY_MJS, require_node
from ._paths import DOCS

FORMAT_MD = DOCS / "format.md"
VERIFY_SCRIPT = DOCS / "verify_jsonl.py"

BLOCK = re.compile(r"^```(\w+) ([\w.-]+)\n(.*?)\n```$", re.DOTALL | re.MULTILINE)
ENTRY_LENGTH = re.compile(r"^Entry \((\d+) bytes\):\n\n```text vector-(\d+)-entry$", re.MULTILINE)


def doc_blocks() -> dict[str, str]:
    return {name: body for _, name, body in BLOCK.findall(FORMAT_MD.read_text(encoding="utf-8"))}


@dataclasses.dataclass
class Vector:
    number: int
    event: dict[str, Any]
    entry: bytes
    hash: str

    @property
    def fields(self) -> dict[str, Any]:
        return {name: value for name, value in self.event.items() if name != "hash"}


def vectors() -> list[Vector]:
    blocks = doc_blocks()
    found = []
    number = 1
    while f"vector-{number}-event" in blocks:
        found.append(
            Vector(
                number,
                json.loads(blocks[f"vector-{number}-event"]),
                blocks[f"vector-{number}-entry"].encode(),
                blocks[f"vector-{number}-hash"].strip(),
            )
        )
        number += 1
    return found


VECTORS = vectors()


def test_the_document_has_the_promised_vectors() -> None:
    assert len(VECTORS) >= 3
    minimal, rich, linked = VECTORS[0], VECTORS[1], VECTORS[2]
    assert all(minimal.event[name] is None for name in ("details", "user_id", "ip_address"))
    assert isinstance(rich.event["details"], dict) and len(rich.event["details"]) > 3
    assert (linked.event["log"], linked.event["seq"]) == (minimal.event["log"], 2)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"vector-{v.number}")
def test_vector_entry_is_the_jcs_of_the_event_without_its_hash(vector: Vector) -> None:
    assert set(vector.event) == set(EVENT_FIELDS)
    fields = vector.fields
    assert canonical_json(fields, fast=check_json(fields, "entry", 64)) == vector.entry


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"vector-{v.number}")
def test_vector_hash_is_the_leaf_hash_of_its_entry(vector: Vector) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", vector.hash)
    assert entry_hash(vector.entry) == vector.hash == vector.event["hash"]


def test_vector_entry_lengths_are_stated_correctly() -> None:
    stated = {int(n): int(length) for length, n in ENTRY_LENGTH.findall(FORMAT_MD.read_text())}
    assert stated == {vector.number: len(vector.entry) for vector in VECTORS}


def test_vectors_chain_per_log() -> None:
    heads: dict[str, tuple[int, str]] = {}
    for vector in VECTORS:
        seq, prev = heads.get(vector.event["log"], (0, GENESIS_HASH))
        assert vector.event["seq"] == seq + 1
        assert vector.event["prev_hash"] == prev
        heads[vector.event["log"]] = (vector.event["seq"], vector.hash)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"vector-{v.number}")
def test_the_store_writes_the_vector_bytes(vector: Vector, monkeypatch: pytest.MonkeyPatch) -> None:
    # Through auditmw's own write path (validation, pre-serialization, sealing), with the
    # id and the clock pinned to the vector's. The vectors are of format 1: the store now
    # writes format 2, the same members with the personal values committed to, so the
    # format-1 entry is the format-2 one without "commitments" and "format" and with the
    # personal values in place. A format-1 entry reads back as it always did.
    monkeypatch.setattr(auditmw._event, "uuid7_str", lambda: str(uuid.UUID(vector.event["id"])))
    monkeypatch.setattr(auditmw._event, "_current_timestamp", lambda: vector.event["timestamp"])
    submitted = NewEvent(
        **{field.name: vector.event[field.name] for field in dataclasses.fields(NewEvent)}
    )
    prepared = prepare(submitted, Limits())
    entry, hash_ = prepared.seal(vector.event["seq"], vector.event["prev_hash"])
    written = Event.from_entry(entry, hash_, prepared.personal).to_dict()
    assert {**written, "hash": vector.hash} == vector.event
    format_1 = rfc8785.dumps({k: v for k, v in vector.event.items() if k != "hash"})
    assert format_1 == vector.entry
    assert entry_hash(vector.entry) == vector.hash
    assert Event.from_entry(vector.entry, vector.hash).to_dict() == vector.event


# --- the verification scripts ------------------------------------------------------------------
# docs/verify_jsonl.py and docs/verify_jsonl.mjs (under node) get the same tests and must
# give the same verdicts, exit codes and messages.

Verifier = Callable[..., "subprocess.CompletedProcess[str]"]


def test_the_documented_script_is_docs_verify_jsonl() -> None:
    assert doc_blocks()["verify_jsonl.py"] + "\n" == VERIFY_SCRIPT.read_text(encoding="utf-8")


def test_the_documented_node_script_is_docs_verify_jsonl_mjs() -> None:
    assert doc_blocks()["verify_jsonl.mjs"] + "\n" == VERIFY_MJS.read_text(encoding="utf-8")


def test_the_script_needs_nothing_but_the_standard_library_and_rfc8785() -> None:
    tree = ast.parse(VERIFY_SCRIPT.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"__future__", "hashlib", "json", "re", "sys", "typing", "rfc8785"}


def test_the_node_script_needs_nothing_but_node_and_canonicalize() -> None:
    source = VERIFY_MJS.read_text(encoding="utf-8")
    imported = re.findall(r'^import .* from "([^"]+)";$', source, re.MULTILINE)
    assert imported == ["node:crypto", "node:fs", "canonicalize"]
    assert source.count("import ") == len(imported) and "require(" not in source


@pytest.fixture(params=["python", "node"])
def verifier(request: pytest.FixtureRequest) -> Verifier:
    """Runs one of the two documented scripts: ``verifier(*args)``."""
    if request.param == "python":
        command = [sys.executable, str(VERIFY_SCRIPT)]
    else:
        command = [require_node(), str(request.getfixturevalue("verify_mjs"))]

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
        )

    return run


def export_line(event: dict[str, Any]) -> str:
    """The line auditmw writes for ``event``: its canonical entry, ``hash`` added, then the
    ``openings`` of an entry of format 2 that has any."""
    fields = {name: value for name, value in event.items() if name not in ("hash", "openings")}
    entry = canonical_json(fields, fast=check_json(fields, "entry", 64)).decode()
    openings = ""
    if "openings" in event:
        openings = ',"openings":' + json.dumps(event["openings"], separators=(",", ":"))
    return entry[:-1] + f',"hash":"{event["hash"]}"{openings}}}'


def write_jsonl(path: Path, objects: list[dict[str, Any]]) -> Path:
    path.write_text("".join(export_line(obj) + "\n" for obj in objects), encoding="utf-8")
    return path


def test_the_scripts_accept_the_vectors_as_an_export(tmp_path: Path, verifier: Verifier) -> None:
    result = verifier(write_jsonl(tmp_path / "v.jsonl", [v.event for v in VECTORS]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: {len(VECTORS)} entries intact" in result.stdout
    assert VECTORS[2].hash in result.stdout  # head of log "default"


def test_the_vector_objects_as_printed_verify_as_reserialized(
    tmp_path: Path, verifier: Verifier
) -> None:
    # The event objects as the document prints them (ASCII escapes, another member order)
    # are equivalent JSON, not the bytes auditmw writes: only --reserialized accepts them.
    path = tmp_path / "printed.jsonl"
    path.write_text("".join(json.dumps(v.event) + "\n" for v in VECTORS), encoding="utf-8")
    result = verifier("--reserialized", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: {len(VECTORS)} entries intact" in result.stdout
    result = verifier(path)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 1 (unreadable): not a valid entry: the line does")
    assert "--reserialized" in result.stdout


async def export_store(path: Path) -> list[dict[str, Any]]:
    """Events appended to a real store, as JSON objects in (log, seq) order."""
    details = [
        None,
        {"amount": 12.5, "currency": "EUR"},
        {"big": 1e20, "tiny": 5e-324, "whole": 1.0, "neg_zero": -0.0},
        {"text": 'caf\u00e9 "q" \\ / \n\t\x01 \u2028 \U0001f600', "\U0001f600": 1, "\uff21": 2},
        {"nested": {"list": [1, [2, [3, {"k": None}]]], "flag": True}},
    ]
    async with SQLiteStore(path) as store:
        events = await asyncio.gather(
            *(
                store.append(
                    NewEvent(
                        action=f"item.update.{i}",
                        resource="item",
                        resource_id=str(i),
                        details=details[i % len(details)],
                        user_id=f"user-{i % 3}",
                        ip_address=("192.0.2.7", "2001:DB8::7", None)[i % 3],
                        log=("default", "billing")[i % 4 == 3],
                    )
                )
                for i in range(40)
            )
        )
        read_back = [await store.get(event.id) for event in events]
    assert read_back == events
    # The lines an export writes (entries of format 2, with their openings), as objects.
    lines = [json.loads(jsonl_line(e)) for e in sorted(events, key=lambda e: (e.log, e.seq))]
    for line in lines:  # numbers as doubles (JSON's, RFC 8785's): 1e20 is no integer
        line["details"] = as_doubles(line["details"])
    return lines


@pytest.fixture
def exported(tmp_path: Path) -> list[dict[str, Any]]:
    return asyncio.run(export_store(tmp_path / "audit.db"))


def test_the_scripts_accept_an_intact_store_export(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier
) -> None:
    result = verifier(write_jsonl(tmp_path / "export.jsonl", exported))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: {len(exported)} entries intact" in result.stdout
    for log in ("default", "billing"):
        head = [event for event in exported if event["log"] == log][-1]
        assert f"log {log!r}: last seq {head['seq']}, head hash {head['hash']}" in result.stdout


def test_the_scripts_accept_logs_interleaved_and_crlf_line_ends(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier
) -> None:
    billing = [event for event in exported if event["log"] == "billing"]
    default = [event for event in exported if event["log"] == "default"]
    assert len(default) > len(billing) > 1
    interleaved = [event for pair in zip(default, billing, strict=False) for event in pair]
    interleaved += default[len(billing) :]
    path = write_jsonl(tmp_path / "mixed.jsonl", interleaved)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n  \r\n")
    result = verifier(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scripts_accept_lines_written_from_the_stored_canonical_bytes(
    tmp_path: Path, store_path: Path, verifier: Verifier
) -> None:
    # The line is the stored entry with the hash added: JCS wrote the double 1e20 as
    # 100000000000000000000, which the hash covers as it is.
    async def rows() -> list[bytes]:
        async with SQLiteStore(store_path) as store:
            for value in (1e20, 1e300, 12.0):
                await store.append(NewEvent(action="a", resource="r", details={"n": value}))
            return [
                row.entry[:-1] + b',"hash":"' + row.hash.encode() + b'"}'
                async for row in store.iter_chain_rows()
            ]

    lines = asyncio.run(rows())
    assert b'"n":100000000000000000000' in lines[0]
    path = tmp_path / "raw.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = verifier(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", "item.delete"),
        ("details", {"amount": 13.5, "currency": "EUR"}),
        ("timestamp", "2020-01-01T00:00:00.000000Z"),
        ("ip_address", "192.0.2.8"),
        ("user_id", None),
        ("outcome", "denied"),
        ("seq", 4),
        ("prev_hash", GENESIS_HASH),
        ("hash", "0" * 64),
        ("id", str(uuid.UUID(int=7))),
    ],
)
def test_the_scripts_name_the_line_with_a_changed_field(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier, field: str, value: Any
) -> None:
    damaged = [dict(event) for event in exported]
    assert damaged[2][field] != value
    damaged[2][field] = value
    result = verifier(write_jsonl(tmp_path / "damaged.jsonl", damaged))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 3 (log 'billing' seq ")
    assert "modified" in result.stdout


def test_the_scripts_catch_a_changed_entry_whose_hash_was_recomputed(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier
) -> None:
    damaged = [dict(event) for event in exported]
    damaged[2]["action"] = "item.delete"
    fields = {name: value for name, value in damaged[2].items() if name != "hash"}
    damaged[2]["hash"] = entry_hash(canonical_json(fields, fast=check_json(fields, "e", 64)))
    result = verifier(write_jsonl(tmp_path / "rehashed.jsonl", damaged))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 4 (log 'billing' seq 4): broken link")


@pytest.mark.parametrize(("index", "expected_seq"), [(0, 1), (5, 6)])
def test_the_scripts_catch_a_removed_line(
    tmp_path: Path,
    exported: list[dict[str, Any]],
    verifier: Verifier,
    index: int,
    expected_seq: int,
) -> None:
    damaged = exported[:index] + exported[index + 1 :]
    result = verifier(write_jsonl(tmp_path / "removed.jsonl", damaged))
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAIL line {index + 1} (log 'billing' seq {expected_seq + 1})")
    assert f"expected seq {expected_seq}" in result.stdout


def test_the_scripts_catch_swapped_and_repeated_lines(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier
) -> None:
    swapped = list(exported)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    result = verifier(write_jsonl(tmp_path / "swapped.jsonl", swapped))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 4 (log 'billing' seq 5): expected seq 4")

    repeated = exported[:4] + exported[3:]
    result = verifier(write_jsonl(tmp_path / "repeated.jsonl", repeated))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 5 (log 'billing' seq 4): expected seq 5")


def test_a_truncated_tail_passes_but_shows_a_different_head(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier
) -> None:
    # The documented limit of a hash chain: only a head kept elsewhere reveals truncation.
    result = verifier(write_jsonl(tmp_path / "short.jsonl", exported[:-1]))
    assert result.returncode == 0
    assert exported[-1]["hash"] not in result.stdout
    assert exported[-2]["hash"] in result.stdout


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        '{"log": "default"}',
        '{"a": NaN, "hash": "00"}',
        '{"log":"default","hash":"' + "0" * 64 + '"}',  # not an event
        "[" + ',"hash":"' + "0" * 64 + '"}',  # the hash member after an array
        '{"log":"default","seq":1,"hash":"' + "0" * 64 + '"}\x00',
    ],
)
def test_the_scripts_report_an_unreadable_line(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier, line: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", exported[:2])
    path.write_text(path.read_text() + line + "\n")
    for args in ([path], ["--reserialized", path]):
        result = verifier(*args)
        assert result.returncode == 1
        assert result.stdout.startswith("FAIL line 3 (unreadable): not a valid entry: ")


def test_the_scripts_report_a_line_that_is_not_utf8(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier
) -> None:
    path = write_jsonl(tmp_path / "latin1.jsonl", exported[:3])
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"billing"' in lines[1]
    lines[1] = lines[1].replace(b'"billing"', b'"b\xe9lling"')
    path.write_bytes(b"".join(lines))
    result = verifier(path)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 2 (unreadable): not a valid entry: ")


@pytest.mark.parametrize("reserialized", [False, True])
def test_the_scripts_reject_a_member_given_twice(
    tmp_path: Path, exported: list[dict[str, Any]], verifier: Verifier, reserialized: bool
) -> None:
    # A reader that keeps the first "action" would see the forged one, while the hash
    # covers the last. The line must be refused, not verified, whatever the hash says.
    path = write_jsonl(tmp_path / "twice.jsonl", exported)
    lines = path.read_text().split("\n")  # (not splitlines: a string holds U+2028)
    assert lines[2].startswith('{"action":')
    lines[2] = '{"action":"forged",' + lines[2][1:]
    path.write_text("\n".join(lines))
    result = verifier(*(["--reserialized"] if reserialized else []), path)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL line 3 (unreadable)")
    assert "duplicate member name" in result.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["--reserialized"], ["a.jsonl", "b.jsonl"], ["--reserialized", "a.jsonl", "b.jsonl"]],
)
def test_the_scripts_exit_2_on_bad_usage(verifier: Verifier, args: list[str]) -> None:
    result = verifier(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ") and result.stdout == ""


def test_the_scripts_exit_2_without_a_readable_file(tmp_path: Path, verifier: Verifier) -> None:
    for args in ([tmp_path / "missing.jsonl"], ["--reserialized", tmp_path / "missing.jsonl"]):
        result = verifier(*args)
        assert result.returncode == 2
        assert result.stderr.startswith(f"cannot read {tmp_path / 'missing.jsonl'}: ")
    result = verifier(tmp_path)  # a directory
    assert result.returncode == 2


def test_the_stored_columns_section_states_the_column_rule_the_stores_follow() -> None:
    text = FORMAT_MD.read_text(encoding="utf-8")
    section = text.split("\n## Stored columns\n", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"the text columns (.*?) hold", section, re.DOTALL)
    assert listed is not None
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(TEXT_COLUMNS)
    assert "**each U+0000 replaced by U+FFFD**" in section
    prepared = prepare(NewEvent(action="a\x00", resource="r", user_agent="\x00\x00"), Limits())
    row = dict(zip(ROW_FIELDS, prepared.row(1, GENESIS_HASH, "h", b"{}"), strict=True))
    assert (row["action"], row["user_agent"]) == ("a\ufffd", "\ufffd\ufffd")
