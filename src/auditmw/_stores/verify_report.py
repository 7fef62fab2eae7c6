"""What verifying a store's chain found: ``VerifyReport``, its ``Finding``s and a
``LogSummary`` per log (the outcome of ``auditmw._stores.verify``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditmw._event import GENESIS_HASH
from auditmw._retention.cuts import PruneRecord
from auditmw._stores.report import Report, finding_lines, printable


@dataclass(frozen=True, slots=True)
class Finding:
    """Damage found. ``log`` and ``seq`` are None for the store as a whole
    (``storage_damaged``, and ``checkpoints_removed`` that no entry locates)."""

    log: str | None
    seq: int | None
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": None if self.log is None else printable(self.log),
            "seq": self.seq,
            "kind": self.kind,
            "message": printable(self.message),
        }

    def line(self) -> str:
        """``log 'x' seq 3: kind: message``, or ``kind: message`` for the whole store."""
        where = "" if self.log is None else f"log {self.log!r} seq {self.seq}: "
        return f"{where}{self.kind}: {self.message}"


@dataclass(slots=True)
class LogSummary:
    entries: int = 0
    last_seq: int = 0
    head_hash: str = GENESIS_HASH

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "last_seq": self.last_seq,
            "head_hash": printable(self.head_hash),
        }


@dataclass(slots=True)
class VerifyReport(Report):
    """The outcome of verifying a store's chain. ``ok`` is True when no finding was made."""

    logs: dict[str, LogSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    total_findings: int = 0
    warnings: list[str] = field(default_factory=list)
    pruned: PruneRecord | None = None  # the newest prune, as its audit.pruned entry says

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
            "logs": {printable(name): summary.to_dict() for name, summary in self.logs.items()},
            "findings": [finding.to_dict() for finding in self.findings],
            "total_findings": self.total_findings,
            "warnings": self.warnings,
            "pruned": None if self.pruned is None else self.pruned.to_dict(),
        }

    def summary(self) -> str:
        """One line for people: what was proven, or the first damage found."""
        if self.ok:
            heads = "; ".join(
                f"log {name!r}: last seq {s.last_seq}, head {s.head_hash}"
                for name, s in self.logs.items()
            )
            pruned = "" if self.pruned is None else f"; {self.pruned.line()}"
            return f"OK: {self.entries} entries intact" + (f" ({heads})" if heads else "") + pruned
        if not self.findings:
            return f"DAMAGED: {self.total_findings} finding(s)"
        first = self.findings[0]
        return f"DAMAGED: {self.total_findings} finding(s); first: {first.line()}"

    def details(self) -> list[str]:
        return finding_lines(self.findings, self.total_findings, "")

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()
