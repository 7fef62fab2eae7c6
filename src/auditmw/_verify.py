"""Chain verification: prove a log intact, or name the first broken entry.

The verifier trusts nothing but the stored entry bytes. It reads every row of a log
in stored seq order (one row of look-ahead, so memory stays flat), hashes the bytes,
parses them, and checks:

- each row's hash and index columns against its own entry (``modified``,
  ``column_mismatch``, ``malformed``);
- positions: seq starts at 1 and counts up by one (``gap``, ``duplicate``,
  ``reordered``);
- links: each entry's ``prev_hash`` is the hash of the entry before it (``broken_link``).

Each finding names the log, the seq and the kind of damage. Truncating the newest
entries leaves a valid shorter chain; only checkpoints kept elsewhere can prove that.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ._event import ENTRY_FIELDS, GENESIS_HASH, entry_hash

# Columns kept beside the entry for indexing; each must equal the entry's own field.
INDEX_COLUMNS = (
    "id",
    "timestamp",
    "user_id",
    "user_email",
    "action",
    "resource",
    "resource_id",
    "outcome",
    "ip_address",
    "user_agent",
    "request_id",
    "prev_hash",
)

MODIFIED = "modified"
COLUMN_MISMATCH = "column_mismatch"
MALFORMED = "malformed"
GAP = "gap"
DUPLICATE = "duplicate"
REORDERED = "reordered"
BROKEN_LINK = "broken_link"


class ChainRow(NamedTuple):
    """One stored row, as the verifier reads it."""

    log: str
    seq: int
    hash: str
    entry: bytes
    columns: tuple[Any, ...]  # values of INDEX_COLUMNS, in that order


@dataclass(frozen=True, slots=True)
class Finding:
    log: str
    seq: int
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass(slots=True)
class LogSummary:
    entries: int = 0
    last_seq: int = 0
    head_hash: str = GENESIS_HASH

    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "last_seq": self.last_seq, "head_hash": self.head_hash}


@dataclass(slots=True)
class VerifyReport:
    """The outcome of a verification. ``ok`` is True when no finding was made."""

    logs: dict[str, LogSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    total_findings: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total_findings == 0

    @property
    def entries(self) -> int:
        return sum(summary.entries for summary in self.logs.values())

    @property
    def first_finding(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "logs": {name: summary.to_dict() for name, summary in self.logs.items()},
            "findings": [finding.to_dict() for finding in self.findings],
            "total_findings": self.total_findings,
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        """One line for people: what was proven, or the first damage found."""
        if self.ok:
            heads = "; ".join(
                f"log {name!r}: last seq {s.last_seq}, head {s.head_hash}"
                for name, s in self.logs.items()
            )
            return f"OK: {self.entries} entries intact" + (f" ({heads})" if heads else "")
        first = self.findings[0]
        return (
            f"DAMAGED: {self.total_findings} finding(s); first: log {first.log!r} "
            f"seq {first.seq}: {first.kind}: {first.message}"
        )


class _Seen(NamedTuple):
    """What the verifier remembers of a row already checked."""

    entry_seq: int
    linked_hash: str  # the hash the next entry should carry as prev_hash
    clean: bool


class ChainVerifier:
    """Feed rows in (log, seq) order, then call ``finish()``."""

    def __init__(self, max_findings: int = 1000) -> None:
        self.report = VerifyReport()
        self._max_findings = max_findings
        self._pending: ChainRow | None = None
        self._previous: _Seen | None = None
        self._last_clean: _Seen | None = None
        self._previous_column_seq = 0

    def feed(self, row: ChainRow) -> None:
        if self._pending is not None:
            self._check(self._pending, row if row.log == self._pending.log else None)
            if row.log != self._pending.log:
                self._previous = self._last_clean = None
                self._previous_column_seq = 0
        self._pending = row

    def finish(self) -> VerifyReport:
        if self._pending is not None:
            self._check(self._pending, None)
            self._pending = None
        return self.report

    def _add(self, log: str, seq: int, kind: str, message: str) -> None:
        self.report.total_findings += 1
        if len(self.report.findings) < self._max_findings:
            self.report.findings.append(Finding(log, seq, kind, message))

    def _check(self, row: ChainRow, successor: ChainRow | None) -> None:
        summary = self.report.logs.setdefault(row.log, LogSummary())
        summary.entries += 1
        summary.last_seq = row.seq
        summary.head_hash = row.hash
        before = self.report.total_findings
        computed = entry_hash(row.entry)
        entry = _parse(row.entry)
        linked_hash = computed

        if entry is None:
            self._add(row.log, row.seq, MALFORMED, "stored entry is not a valid auditmw entry")
            linked_hash = row.hash
        elif computed != row.hash:
            next_entry = _parse(successor.entry) if successor is not None else None
            if next_entry is not None and next_entry["prev_hash"] == computed:
                self._add(
                    row.log,
                    row.seq,
                    COLUMN_MISMATCH,
                    "stored hash column differs from the entry's hash; the entry is intact",
                )
            else:
                self._add(
                    row.log, row.seq, MODIFIED, "entry bytes do not match their recorded hash"
                )
                linked_hash = row.hash
        else:
            wrong = [
                name
                for name, value in zip(INDEX_COLUMNS, row.columns, strict=True)
                if entry[name] != value
            ]
            if entry["log"] != row.log:
                wrong.insert(0, "log")
            if wrong:
                self._add(
                    row.log,
                    row.seq,
                    COLUMN_MISMATCH,
                    f"index column(s) {', '.join(wrong)} differ from the entry",
                )

        self._check_position(row, entry)
        entry_seq = entry["seq"] if entry is not None else row.seq
        if entry is not None:
            self._check_link(row, entry)
        seen = _Seen(entry_seq, linked_hash, self.report.total_findings == before)
        self._previous = seen
        if seen.clean:
            self._last_clean = seen
        self._previous_column_seq = row.seq

    def _check_position(self, row: ChainRow, entry: dict[str, Any] | None) -> None:
        expected = self._previous_column_seq + 1
        if self._previous is not None and row.seq == self._previous_column_seq:
            self._add(row.log, row.seq, DUPLICATE, f"more than one row holds seq {row.seq}")
        elif row.seq > expected:
            missing = f"{expected}" if row.seq == expected + 1 else f"{expected}..{row.seq - 1}"
            self._add(row.log, expected, GAP, f"seq {missing} missing (entries deleted)")
        elif row.seq < expected:
            self._add(row.log, row.seq, REORDERED, f"seq {row.seq} stored after seq {expected - 1}")
        if entry is not None and entry["seq"] != row.seq:
            self._add(
                row.log,
                row.seq,
                REORDERED,
                f"the row at seq {row.seq} holds the entry of seq {entry['seq']}",
            )

    def _check_link(self, row: ChainRow, entry: dict[str, Any]) -> None:
        seq = entry["seq"]
        if seq == 1:
            candidates = [GENESIS_HASH]
        else:
            candidates = [
                seen.linked_hash
                for seen in (self._previous, self._last_clean)
                if seen is not None and seen.entry_seq == seq - 1
            ]
            if not candidates:
                return  # the predecessor is missing or displaced: already reported
        if entry["prev_hash"] not in candidates:
            self._add(
                row.log,
                seq,
                BROKEN_LINK,
                f"prev_hash does not match the hash of seq {seq - 1}: seq {seq - 1} was "
                f"rewritten (with its hash), or seq {seq} was forged",
            )


def _parse(entry: bytes) -> dict[str, Any] | None:
    """The entry as a dict when it has exactly the entry fields, else None."""
    try:
        data = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    if (
        not isinstance(data, dict)
        or len(data) != len(ENTRY_FIELDS)
        or not all(name in data for name in ENTRY_FIELDS)
        or type(data["seq"]) is not int
        or not isinstance(data["prev_hash"], str)
        or not isinstance(data["log"], str)
    ):
        return None
    return data


async def verify_rows(
    rows: AsyncIterable[ChainRow],
    progress: Callable[[int], None] | None = None,
    max_findings: int = 1000,
) -> VerifyReport:
    """Verify a stream of rows ordered by (log, seq); ``progress`` gets the row count."""
    verifier = ChainVerifier(max_findings)
    count = 0
    async for row in rows:
        verifier.feed(row)
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(count)
    if progress is not None:
        progress(count)
    return verifier.finish()
