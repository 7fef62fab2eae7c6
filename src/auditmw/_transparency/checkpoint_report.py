"""What checking a log against signed checkpoints found (``auditmw._transparency.external``).

Vocabulary (docs/checkpoints.md): a log's entries are *anchored* up to the size of the
newest checkpoint whose root the log reproduces; the entries after it are *not yet
anchored* (only the chain vouches for them: information, not damage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditmw._stores.report import Report, printable
from auditmw._stores.verify_report import VerifyReport


@dataclass(frozen=True, slots=True)
class CheckpointFinding:
    """A checkpoint that could not be trusted, or that the log does not match."""

    kind: str
    source: str
    message: str
    log: str | None = None
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": printable(self.source),
            "log": None if self.log is None else printable(self.log),
            "size": self.size,
            "message": printable(self.message),
        }

    def line(self) -> str:
        where = "" if self.log is None else f"log {printable(self.log)!r} "
        where += "" if self.size is None else f"size {self.size} "
        return f"{self.kind}: {where}({printable(self.source)}): {printable(self.message)}"


@dataclass(frozen=True, slots=True)
class CheckedCheckpoint:
    """A validly signed checkpoint of a log, and what the log said to it.

    ``status`` is ``anchors`` (the log reproduces its root), ``FORK`` or ``TRUNCATED``.
    """

    size: int
    root: str
    sources: tuple[str, ...]
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root,
            "sources": [printable(source) for source in self.sources],
            "status": self.status,
        }


@dataclass(slots=True)
class LogCheckpoints:
    """One log: its size and root as stored now, and how much of it is anchored."""

    entries: int
    root: str
    anchored: int = 0  # size of the newest checkpoint whose root the log reproduces
    anchored_by: tuple[str, ...] = ()
    checkpoints: list[CheckedCheckpoint] = field(default_factory=list)

    @property
    def not_yet_anchored(self) -> int:
        """Entries after the newest matching checkpoint: only the chain vouches for them."""
        return max(self.entries - self.anchored, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "root": self.root,
            "anchored": self.anchored,
            "anchored_by": [printable(source) for source in self.anchored_by],
            "not_yet_anchored": self.not_yet_anchored,
            "checkpoints": [checkpoint.to_dict() for checkpoint in self.checkpoints],
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 consistency proof from an auditor's checkpoint to the log as it is now;
    ``verified`` when it recomputes both the checkpoint's (signed) root and the log's."""

    log: str
    source: str
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: tuple[str, ...]
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": printable(self.log),
            "source": printable(self.source),
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root,
            "new_root": self.new_root,
            "proof": list(self.proof),
            "verified": self.verified,
        }


@dataclass(slots=True)
class CheckpointReport(Report):
    """The chain report plus what the signed checkpoints say. ``ok`` when neither found
    damage. ``findings`` are the checkpoints' (the chain's are ``chain.findings``)."""

    chain: VerifyReport
    findings: list[CheckpointFinding] = field(default_factory=list)
    logs: dict[str, LogCheckpoints] = field(default_factory=dict)
    proofs: list[ConsistencyProof] = field(default_factory=list)
    checked: int = 0  # checkpoint notes checked with the keys
    unchecked: int = 0  # stored checkpoints not checked: no verifier key was given
    keys: int = 0

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.findings

    @property
    def warnings(self) -> list[str]:  # type: ignore[override]
        return self.chain.warnings

    def summary(self) -> str:
        """One line: chain damage first, then checkpoint findings, else the chain's OK."""
        if not self.chain.ok or not self.findings:
            return self.chain.summary()
        first = self.findings[0]
        where = "" if first.log is None else f" log {printable(first.log)!r}"
        where += "" if first.size is None else f" size {first.size}"
        return (
            f"DAMAGED: the chain is intact ({self.chain.entries} entries) but "
            f"{len(self.findings)} checkpoint finding(s); first: {first.kind}{where} "
            f"({printable(first.source)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "unchecked": self.unchecked,
            "keys": self.keys,
            "findings": [finding.to_dict() for finding in self.findings],
            "logs": {printable(name): log.to_dict() for name, log in self.logs.items()},
            "consistency_proofs": [proof.to_dict() for proof in self.proofs],
        }

    def details(self) -> list[str]:
        """The chain's findings, the checkpoints' findings, then what was checked."""
        lines = self.chain.details()
        lines.extend(f"  {finding.line()}" for finding in self.findings)
        if self.unchecked:
            lines.append(
                f"checkpoints: {self.unchecked} signed checkpoint(s) in the store, "
                "not checked (give --public-key)"
            )
        if not self.keys:
            return lines
        lines.append(f"checkpoints: {self.checked} checked with {self.keys} key(s)")
        for name, log in self.logs.items():
            line = f"  log {name!r}: {log.entries} entries, {log.anchored} anchored"
            if log.anchored_by:
                line += f" (by the checkpoint of size {log.anchored}: {', '.join(log.anchored_by)})"
            lines.append(f"{line}, {log.not_yet_anchored} not yet anchored")
        for proof in self.proofs:
            verdict = "extends" if proof.verified else "does NOT extend"
            result = "verified" if proof.verified else "FAILS"
            lines.append(
                f"  log {proof.log!r} {verdict} {proof.source} (size {proof.old_size}): "
                f"consistency proof to size {proof.new_size} ({len(proof.proof)} hashes) {result}"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        """The chain's report with ``ok`` for both, ``chain_ok``, and ``checkpoints``."""
        return {
            **self.chain.to_dict(),
            "ok": self.ok,
            "chain_ok": self.chain.ok,
            "checkpoints": self.to_dict(),
        }
