"""Verify an auditmw JSONL export without auditmw: python verify_jsonl.py FILE

One event object per line, each log's events in seq order. Needs only an RFC 8785
library (pip install rfc8785). Exit 0: every chain intact; 1: names the first bad line;
2: usage error or unreadable file.
"""

from __future__ import annotations

import hashlib
import json
import sys

import rfc8785


def number(text: str) -> int | float:
    # JSON numbers are IEEE 754 doubles (RFC 8785): an integral double written as
    # 100000000000000000000 (1e20) must be read back as a float, not as a big int.
    value = int(text)
    return value if abs(value) <= 2**53 - 1 else float(text)


def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # RFC 8785 takes I-JSON (RFC 7493): a name given twice could show a reader one value
    # while the hash covers another.
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError("duplicate member name")
    return dict(pairs)


def verify(path: str) -> int:
    heads: dict[str, tuple[int, str]] = {}  # log -> (seq, hash) of its last entry
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line, parse_int=number, object_pairs_hook=unique)
                claimed = event.pop("hash")  # the entry is every field but hash
                digest = hashlib.sha256(b"\x00" + rfc8785.dumps(event)).hexdigest()
                seq, prev = heads.get(event["log"], (0, "0" * 64))
                where = f"log {event['log']!r} seq {event['seq']}"
                if digest != claimed:
                    problem = "entry modified: its hash does not match its content"
                elif event["seq"] != seq + 1:
                    problem = f"expected seq {seq + 1}: entries missing, reordered or repeated"
                elif event["prev_hash"] != prev:
                    problem = "broken link: prev_hash is not the hash of the entry before"
                else:
                    heads[event["log"]] = (event["seq"], digest)
                    continue
            except Exception as exc:  # not JSON, a field missing, not representable...
                where, problem = "unreadable", f"not a valid entry: {exc!r}"
            print(f"FAIL line {line_no} ({where}): {problem}")
            return 1
    print(f"OK: {sum(seq for seq, _ in heads.values())} entries intact")
    for log, (seq, digest) in heads.items():
        print(f"  log {log!r}: last seq {seq}, head hash {digest}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python verify_jsonl.py FILE", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(verify(sys.argv[1]))
    except OSError as exc:  # missing or unreadable file: not a verdict on the log
        print(f"cannot read {sys.argv[1]}: {exc}", file=sys.stderr)
        sys.exit(2)
