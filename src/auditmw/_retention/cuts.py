"""Cuts: where each log starts after a prune (docs/retention.md, docs/format.md).

A prune deletes each log's prefix up to its **cut** (``last_seq``) and keeps what every
later check needs in place of the deleted entries: the hash of entry ``last_seq`` (the
chain ``head`` the next kept entry links to) and the RFC 6962 frontier of the deleted
leaves (every inclusion and consistency proof for kept entries is computable from it).
Each prune records this twice: rows of the append-only table ``auditmw_cuts`` (one per
log with a cut, restated from earlier prunes), and the ``details.cuts`` of the
``audit.pruned`` event it appends, which is hashed into the chain. The verifier checks
that the two agree (``PruneChecker``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from auditmw._transparency.merkle import Frontier

PRUNED_ACTION = "audit.pruned"
PRUNE_RESOURCE = "audit_log"
# The verifier's finding kinds for a prune record that does not hold.
FORGED_PRUNE = "forged_prune"
PRUNED_BEYOND_CUT = "gap"  # rows missing after a cut are a gap like any other


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a log's kept entries start: entries 1..``last_seq`` were pruned; ``head`` is
    the hash of entry ``last_seq``, ``frontier`` the Merkle frontier of its leaves."""

    last_seq: int
    head: str
    frontier: Frontier

    def to_dict(self) -> dict[str, Any]:
        return {"last_seq": self.last_seq, "head": self.head, "frontier": self.frontier.to_dict()}

    def frontier_json(self) -> str:
        """The frontier as stored in ``auditmw_cuts.frontier``: ``{"size", "nodes"}``."""
        return orjson.dumps(self.frontier.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: object) -> Cut:
        """A cut of ``audit.pruned``'s ``details.cuts``; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a cut is not an object")
        last_seq, head = data.get("last_seq"), data.get("head")
        if type(last_seq) is not int or last_seq < 1 or not isinstance(head, str):
            raise ValueError("a cut needs a last_seq and a head")
        frontier = Frontier.from_dict(data.get("frontier") or {})
        if frontier.size != last_seq:
            raise ValueError("a cut's frontier is not of size last_seq")
        return cls(last_seq, head, frontier)


@dataclass(frozen=True, slots=True)
class CutRecord:
    """One row of ``auditmw_cuts``: a log's cut, recorded by the prune that appended the
    ``audit.pruned`` event ``event_id``."""

    log: str
    cut: Cut
    event_id: str
    created_at: str

    @classmethod
    def from_row(cls, row: Iterable[Any]) -> CutRecord:
        """From ``(log, last_seq, head, frontier json, event_id, created_at)``;
        ``ValueError`` when a value is not of its kind (an edited row)."""
        log, last_seq, head, frontier, event_id, created_at = row
        try:
            parsed = Frontier.from_dict(orjson.loads(frontier))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError("the frontier is not JSON") from exc
        if type(last_seq) is not int or parsed.size != last_seq:
            raise ValueError("the frontier is not of size last_seq")
        return cls(str(log), Cut(last_seq, str(head), parsed), str(event_id), str(created_at))

    def values(self) -> tuple[Any, ...]:
        """The row's values, in ``CUT_COLUMNS`` order."""
        c = self.cut
        return (self.log, c.last_seq, c.head, c.frontier_json(), self.event_id, self.created_at)


CUT_COLUMNS = ("log", "last_seq", "head", "frontier", "event_id", "created_at")


def latest_cuts(records: Iterable[CutRecord]) -> dict[str, Cut]:
    """Each log's cut: the one of its records with the largest ``last_seq``."""
    cuts: dict[str, Cut] = {}
    for record in records:
        known = cuts.get(record.log)
        if known is None or record.cut.last_seq > known.last_seq:
            cuts[record.log] = record.cut
    return cuts


def cuts_of_details(details: object) -> dict[str, Cut]:
    """The cuts an ``audit.pruned`` event's details state; ``ValueError`` if malformed."""
    if not isinstance(details, dict) or not isinstance(details.get("cuts"), dict):
        raise ValueError("the details have no 'cuts' object")
    return {str(log): Cut.from_dict(cut) for log, cut in details["cuts"].items()}


@dataclass(frozen=True, slots=True)
class PruneRecord:
    """What the newest ``audit.pruned`` entry says (for reports): when, before which time,
    by which archive (its SHA-256, None for a deliberate discard), how many entries, and
    each log's cut."""

    event_id: str
    seq: int
    timestamp: str
    before: str
    archive_sha256: str | None
    entries: int
    cuts: Mapping[str, Cut]

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> PruneRecord:
        details = entry.get("details")
        cuts = cuts_of_details(details)
        assert isinstance(details, dict)
        archive = details.get("archive_sha256")
        entries = details.get("entries")
        before = details.get("before")
        if not isinstance(before, str) or type(entries) is not int:
            raise ValueError("the details have no 'before' or 'entries'")
        if archive is not None and not isinstance(archive, str):
            raise ValueError("'archive_sha256' is not a string")
        return cls(
            str(entry["id"]),
            int(entry["seq"]),
            str(entry["timestamp"]),
            before,
            archive,
            entries,
            cuts,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "at": self.timestamp,
            "before": self.before,
            "archive_sha256": self.archive_sha256,
            "discarded": self.archive_sha256 is None,
            "entries": self.entries,
            "cuts": {log: cut.last_seq for log, cut in sorted(self.cuts.items())},
        }

    def line(self) -> str:
        """``pruned ... before X at T by archive sha256 ...`` for the summary."""
        logs = ", ".join(
            f"{log!r} seqs 1..{cut.last_seq}" for log, cut in sorted(self.cuts.items())
        )
        by = (
            "discarded without an archive"
            if self.archive_sha256 is None
            else f"archive sha256 {self.archive_sha256}"
        )
        return f"pruned before {self.before} at {self.timestamp} ({logs}; {by})"


class PruneChecker:
    """Checks a verification pass against the store's cuts (``StoreEvidence.cuts``).

    For each log with a cut at ``c``: the rows may start anywhere from seq 1 to ``c + 1``
    (rows at or below ``c`` are those of a prune not finished yet: a warning, and the row
    at ``c`` must hash to the recorded head); the first kept entry links to the cut's head
    (``seed``). The newest intact ``audit.pruned`` entry read in the pass must state
    exactly the cuts of the table; a cut without one, or one that disagrees, is a
    ``forged_prune`` finding."""

    def __init__(self, records: Iterable[CutRecord], unreadable: Iterable[str] = ()) -> None:
        self.records = list(records)
        self.cuts = latest_cuts(self.records)
        self.problems: list[str] = list(unreadable)
        self.remaining: dict[str, int] = {}  # rows at or below the cut, per log
        self.newest: PruneRecord | None = None
        self.entries_seen: set[str] = set()

    def cut_of(self, log: str) -> Cut | None:
        return self.cuts.get(log)

    def below_cut(self, log: str, seq: int, computed: str) -> str | None:
        """A row at or below the cut (an unfinished prune): count it; the problem if it is
        the row at the cut and does not hash to the recorded head."""
        cut = self.cuts[log]
        self.remaining[log] = self.remaining.get(log, 0) + 1
        if seq == cut.last_seq and computed != cut.head:
            return (
                f"the entry at the cut hashes to {computed}, the cut records head {cut.head}: "
                "the cut record or the entry was forged"
            )
        return None

    def entry(self, entry: Mapping[str, Any], log: str) -> None:
        """An intact entry read in the pass; ``audit.pruned`` entries are remembered."""
        if entry.get("action") != PRUNED_ACTION or entry.get("resource") != PRUNE_RESOURCE:
            return
        try:
            record = PruneRecord.from_entry(entry)
        except (ValueError, KeyError, TypeError) as exc:
            self.problems.append(f"log {log!r} seq {entry.get('seq')}: unreadable prune: {exc}")
            return
        self.entries_seen.add(record.event_id)
        if self.newest is None or record.seq >= self.newest.seq:
            self.newest = record

    def findings(self) -> list[str]:
        """Where the table and the newest ``audit.pruned`` entry disagree."""
        problems = list(self.problems)
        newest = self.newest
        if newest is None:
            if self.cuts:
                problems.append(
                    f"auditmw_cuts records cuts of {', '.join(map(repr, sorted(self.cuts)))} "
                    "but no intact audit.pruned entry states them: the cut records or the "
                    "prune entry were forged or removed"
                )
            return problems
        stated = {log: cut.to_dict() for log, cut in newest.cuts.items()}
        recorded = {log: cut.to_dict() for log, cut in self.cuts.items()}
        if stated != recorded:
            problems.append(
                f"the newest audit.pruned entry (seq {newest.seq}) states cuts "
                f"{_short(newest.cuts)}, auditmw_cuts records {_short(self.cuts)}: the cut "
                "records or the prune entry were forged or removed"
            )
        rows = {r.log: r.cut.to_dict() for r in self.records if r.event_id == newest.event_id}
        if stated != rows and stated == recorded:
            problems.append(
                f"auditmw_cuts holds no rows recorded by the newest audit.pruned entry "
                f"(seq {newest.seq}, id {newest.event_id}) that match it"
            )
        return problems

    def warnings(self) -> list[str]:
        return [
            f"prune incomplete: {count} entries at or below the cut of log {log!r} "
            f"(seq {self.cuts[log].last_seq}) remain; run prune again"
            for log, count in sorted(self.remaining.items())
        ]


def _short(cuts: Mapping[str, Cut]) -> str:
    return "{" + ", ".join(f"{log!r}: {c.last_seq}" for log, c in sorted(cuts.items())) + "}"
