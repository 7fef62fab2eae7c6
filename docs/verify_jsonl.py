"""Verify an auditmw JSONL export without auditmw: python verify_jsonl.py [--reserialized] FILE

auditmw writes each line as the event's entry exactly as it was hashed (RFC 8785 canonical
JSON) with "hash" added, and for an entry of format 2 then "openings" (its personal values
still present). So the entry is cut out of the line as text and its bytes are hashed as
they are: the verdict never depends on how numbers are parsed. Each opening [salt, value]
must match its commitment: SHA-256(salt || value's text) (docs/format.md, format 2).
--reserialized is for a file that another tool rewrote (members reordered, re-escaped): each
line is parsed and its entry written anew with RFC 8785, reading numbers as IEEE 754 doubles.

Needs only an RFC 8785 library (pip install rfc8785). Exit 0: every chain intact;
1: names the first bad line; 2: usage error or unreadable file.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from typing import Any

import rfc8785

GENESIS = "0" * 64
# The members of an entry, sorted: every field of an event but "hash".
ENTRY_FIELDS = (  # noqa: SIM905 (shorter than a list of 15 lines)
    "action details id ip_address log outcome prev_hash request_id resource resource_id seq "
    "timestamp user_agent user_email user_id"
).split()
# Format 2 adds these two members to the entry.
FORMAT_2_FIELDS = sorted([*ENTRY_FIELDS, "commitments", "format"])
# The members after the entry in every line auditmw writes, from the last ',"hash":"' on
# (an opening's value is a JSON string: no unescaped '"hash":"' can follow it).
HASH_MEMBER = re.compile(r',"hash":"([0-9a-f]{64})"(?:,"openings":(\{.*\}))?\}', re.DOTALL)
# A JSON string, or a JSON number: in valid JSON, the only tokens that contain digits.
TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?')


def number(text: str) -> int | float:
    # JSON numbers are IEEE 754 doubles (RFC 8785), also when written without a fraction:
    # 100000000000000000000 is the double 1e20, which RFC 8785 libraries take as a float only.
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8785 takes I-JSON (RFC 7493): a name given twice could show a reader one value
    # while the hash covers another.
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError("duplicate member name")
    return dict(pairs)


def parse(text: str) -> Any:
    return json.loads(
        text,
        parse_int=number,
        parse_float=number,
        parse_constant=constant,
        object_pairs_hook=unique,
    )


def read(line: str, reserialized: bool) -> tuple[str, str, Any, Any]:
    """The entry's text, the hash the line claims for it, the entry's members, and the
    openings (an empty object when the line has none)."""
    if reserialized:  # the entry is every member but "hash" and "openings", written anew
        event = parse(line)
        claimed = event.pop("hash", None) if isinstance(event, dict) else None
        if not isinstance(claimed, str):
            raise ValueError('no "hash" member')
        openings = event.pop("openings", {})
        return rfc8785.dumps(event).decode(), claimed, event, openings
    at = line.rfind(',"hash":"')
    found = HASH_MEMBER.fullmatch(line, at) if at >= 0 else None
    if found is None:
        raise ValueError(
            'the line does not end with its "hash" member as auditmw writes it '
            "(if another tool rewrote the file, see --reserialized)"
        )
    entry = line[:at] + "}"
    return entry, found[1], parse(entry), parse(found[2] or "{}")


def chain_fields(event: Any) -> tuple[str, int, str]:
    """log, seq and prev_hash: strings and a small integer, read alike everywhere."""
    if not isinstance(event, dict) or (
        sorted(event) != ENTRY_FIELDS
        and not (sorted(event) == FORMAT_2_FIELDS and event["format"] == 2)
    ):
        raise ValueError("not an event: the entry must have exactly the 15 entry members")
    log, seq, prev_hash = event["log"], event["seq"], event["prev_hash"]
    if not (isinstance(log, str) and type(seq) is int and isinstance(prev_hash, str)):
        raise ValueError("log and prev_hash must be strings and seq an integer")
    return log, seq, prev_hash


def opened(event: dict[str, Any], openings: Any) -> str | None:
    """What is wrong with the openings of a format-2 entry, or None. Each is the salt (hex)
    and the canonical JSON text of a value the entry commits to at a JSON Pointer; an
    erased value's opening is simply gone."""
    commitments = event.get("commitments", {})
    if not isinstance(openings, dict) or not isinstance(commitments, dict):
        return "the openings or the commitments are not JSON objects"
    for pointer, opening in openings.items():
        if not (isinstance(opening, list) and len(opening) == 2):
            return f"the opening of {pointer} is not [salt, value]"
        salt, value = opening
        digest = hashlib.sha256(bytes.fromhex(salt) + value.encode()).hexdigest()
        if commitments.get(pointer) != digest:
            return f"personal value modified: the opening of {pointer} does not match"
    return None


def check_canonical(entry: str) -> None:
    """Raise unless the entry is RFC 8785 canonical JSON, as auditmw hashed it.

    The structure (member order, escapes, no spaces, no name twice) is compared with every
    number quoted as a string, so that no number is read. Then each number on its own must
    be what RFC 8785 writes for it as a double: the only check that parses numbers.
    """
    quoted = TOKEN.sub(lambda token: token[0] if token[0][0] == '"' else f'"{token[0]}"', entry)
    if rfc8785.dumps(json.loads(quoted)).decode() != quoted:
        raise ValueError(
            "not RFC 8785 canonical JSON: members reordered, repeated or re-escaped, or spaces "
            "added (if another tool rewrote the file, see --reserialized)"
        )
    for token in TOKEN.findall(entry):
        if token[0] != '"' and rfc8785.dumps(float(token)).decode() != token:
            raise ValueError(f"the number {token} is not written as RFC 8785 writes it")


def verify(path: str, reserialized: bool) -> int:
    heads: dict[str, tuple[int, str]] = {}  # log -> (seq, hash) of its last entry
    with open(path, "rb") as lines:  # bytes: the lines are split at \n only
        for line_no, raw in enumerate(lines, 1):
            where = "unreadable"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.strip(" \t\r\n"):
                    continue
                entry, claimed, event, openings = read(line, reserialized)
                log, seq, prev_hash = chain_fields(event)
                where = f"log {log!r} seq {seq}"
                if not reserialized:
                    check_canonical(entry)
                digest = hashlib.sha256(b"\x00" + entry.encode()).hexdigest()
                head_seq, head_hash = heads.get(log, (0, GENESIS))
                if digest != claimed:
                    problem = "entry modified: its hash does not match its content"
                elif seq != head_seq + 1:
                    problem = f"expected seq {head_seq + 1}: entries missing, reordered or repeated"
                elif prev_hash != head_hash:
                    problem = "broken link: prev_hash is not the hash of the entry before"
                elif (wrong := opened(event, openings)) is not None:
                    problem = wrong
                else:
                    heads[log] = (seq, digest)
                    continue
            except Exception as exc:  # not UTF-8 or JSON, not an event, not canonical...
                problem = f"not a valid entry: {exc}"
            print(f"FAIL line {line_no} ({where}): {problem}")
            return 1
    print(f"OK: {sum(seq for seq, _ in heads.values())} entries intact")
    for log, (seq, digest) in heads.items():
        print(f"  log {log!r}: last seq {seq}, head hash {digest}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    reserialized = args[:1] == ["--reserialized"]
    files = args[1:] if reserialized else args
    if len(files) != 1:
        print("usage: python verify_jsonl.py [--reserialized] FILE", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(verify(files[0], reserialized))
    except OSError as exc:  # missing or unreadable file: not a verdict on the log
        print(f"cannot read {files[0]}: {exc}", file=sys.stderr)
        sys.exit(2)
