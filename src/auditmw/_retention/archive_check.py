"""Verifying an archive alone, offline (``auditmw verify --jsonl FILE``; docs/retention.md).

The entries go through the export verifier (``auditmw._stores.jsonl``) with the whole of
each log required; beside it, each log's Merkle frontier is rebuilt from the entries'
hashes. Then the header is checked against what the entries proved: each log one
complete run from ``first_seq`` to ``last_seq``, its last hash the header's ``head``, the
rebuilt frontier the header's, every timestamp before the cut and, when the header
carries a checkpoint, the checkpoint's root reached from the cut's root through the
consistency proof (its signature too, given verifier keys). Nothing the header says is
trusted before it matched the entries.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from auditmw._retention.archive_format import ArchiveHeader, LinkedCheckpoint, LogCut, parse_header
from auditmw._stores.jsonl import JsonlReport, verify_jsonl
from auditmw._stores.report import Report, ReportedFinding
from auditmw._stores.verify import INDEX_COLUMNS, ChainRow
from auditmw._stores.verify_report import LogSummary
from auditmw._transparency.merkle import Frontier, verify_consistency
from auditmw._transparency.notes import (
    Checkpoint,
    CheckpointError,
    VerifierKey,
    log_of_origin,
    open_checkpoint,
    parse_note,
)

_TIMESTAMP = INDEX_COLUMNS.index("timestamp")
_PREV_HASH = INDEX_COLUMNS.index("prev_hash")
MAX_PROBLEMS = 100


@dataclass(slots=True)
class ArchiveReport(Report):
    """What ``verify_archive`` found: the entries' report (``entries``), and ``problems``
    where the header and the entries disagree or a checkpoint does not link."""

    header: ArchiveHeader
    entries: JsonlReport
    problems: list[str] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)  # log -> what was checked
    warnings: list[str] = field(default_factory=list)

    @property
    def findings(self) -> Sequence[ReportedFinding]:  # type: ignore[override]
        return self.entries.findings

    @property
    def logs(self) -> dict[str, LogSummary]:  # type: ignore[override]
        return self.entries.logs

    @property
    def ok(self) -> bool:
        """Every entry intact, each log complete, and the header true to them."""
        return self.entries.ok and not self.problems

    def summary(self) -> str:
        if self.entries.damaged:
            return self.entries.summary()
        if self.entries.incomplete:
            first = self.entries.missing_ranges[0]
            return f"DAMAGED: entries missing from the archive; first: {first}"
        if self.problems:
            return f"DAMAGED: {len(self.problems)} problem(s); first: {self.problems[0]}"
        runs = "; ".join(
            f"log {name!r}: seqs {cut.first_seq}..{cut.last_seq}, head {cut.head}"
            for name, cut in sorted(self.header.logs.items())
        )
        return (
            f"OK: archive of {self.header.entries} entries before {self.header.before}, "
            f"every log complete from seq 1 ({runs or 'no entries'})"
        )

    def details(self) -> list[str]:
        lines = self.entries.details()
        lines.extend(f"  {problem}" for problem in self.problems)
        lines.extend(f"  log {log!r}: {text}" for log, text in sorted(self.checkpoints.items()))
        return lines

    def to_json(self) -> dict[str, Any]:
        document = self.entries.to_dict()
        document["ok"] = self.ok
        document["archive"] = self.header.to_dict()
        document["archive_problems"] = self.problems
        document["checkpoints"] = self.checkpoints
        return document


def verify_archive(
    header: ArchiveHeader,
    lines: Iterable[bytes],
    *,
    keys: Sequence[VerifierKey] = (),
    reserialized: bool = False,
    max_findings: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ArchiveReport:
    """Verify the entry lines of an archive (the lines after ``header``, its first)."""
    frontiers: dict[str, Frontier] = {}
    late: list[str] = []
    # A log pruned before starts after its cut: its tree from the cut's frontier, its
    # first entry linked to the cut's head.
    after = {log: cut.after for log, cut in header.logs.items() if cut.after is not None}

    def read(row: ChainRow) -> None:
        if row.log not in frontiers:
            start = after.get(row.log)
            frontiers[row.log] = Frontier() if start is None else start[1].copy()
            if start is not None and row.columns[_PREV_HASH] != start[0]:
                late.append(
                    f"log {row.log!r} seq {row.seq}: prev_hash is not the head of the cut "
                    "the header says the archive goes on from"
                )
        with suppress(ValueError):  # not a hash: the entry verifier reports it as modified
            frontiers[row.log].append(bytes.fromhex(row.hash))
        timestamp = row.columns[_TIMESTAMP]
        if not isinstance(timestamp, str) or timestamp >= header.before:
            late.append(
                f"log {row.log!r} seq {row.seq}: timestamp {timestamp!r} is not before the cut"
            )

    entries = verify_jsonl(
        lines,
        reserialized=reserialized,
        complete=True,
        max_findings=max_findings,
        progress=progress,
        first_line=2,
        on_row=read,
        starts={log: cut.first_seq for log, cut in header.logs.items()},
    )
    report = ArchiveReport(header, entries)
    report.problems.extend(late)
    for log in sorted(set(entries.logs) - set(header.logs)):
        report.problems.append(f"log {log!r}: entries in the file, but not in the header")
    for log, cut in sorted(header.logs.items()):
        _check_log(report, log, cut, entries.logs.get(log), frontiers.get(log, Frontier()), keys)
    del report.problems[MAX_PROBLEMS:]
    return report


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """An archive file read and verified alone: its header (None when line 1 is not a
    valid header: ``problem`` says why), the report, and the file's SHA-256 (hex)."""

    path: Path
    header: ArchiveHeader | None
    report: ArchiveReport | None
    sha256: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok


def verify_archive_file(
    path: str | os.PathLike[str], keys: Sequence[VerifierKey] = ()
) -> ArchiveFile:
    """Read the archive at ``path`` once: verify it (``verify_archive``) and hash it."""
    digest = hashlib.sha256()
    target = Path(path)
    with target.open("rb") as file:
        lines = _hashed_lines(file, digest.update)
        first = next(lines, b"")
        problem: str | None = None
        try:
            header = parse_header(first)
        except ValueError as exc:
            header, problem = None, f"line 1: {exc}"
        else:
            problem = None if header is not None else "not an archive (no header on line 1)"
        report = None if header is None else verify_archive(header, lines, keys=keys)
        for _ in lines:  # the rest, for the digest, had the verifier stopped early
            pass
    return ArchiveFile(target, header, report, digest.hexdigest(), problem)


def _hashed_lines(file: IO[bytes], update: Callable[[bytes], None]) -> Iterator[bytes]:
    for line in file:
        update(line)
        yield line


def _check_log(
    report: ArchiveReport,
    log: str,
    cut: LogCut,
    found: LogSummary | None,
    frontier: Frontier,
    keys: Sequence[VerifierKey],
) -> None:
    problems = report.problems
    where = f"log {log!r}"
    if found is None:
        problems.append(
            f"{where}: the header lists seqs {cut.first_seq}..{cut.last_seq}, the file holds none"
        )
        return
    if found.entries != cut.entries:
        problems.append(
            f"{where}: the header lists seqs {cut.first_seq}..{cut.last_seq}, the file holds "
            f"{found.entries} entries"
        )
    if found.last_seq != cut.last_seq:
        problems.append(
            f"{where}: the file ends at seq {found.last_seq}, the header says {cut.last_seq}"
        )
    if found.head_hash != cut.head:
        problems.append(
            f"{where}: the header's head {cut.head} is not the last entry's hash {found.head_hash}"
        )
    if frontier != cut.frontier:
        problems.append(f"{where}: the header's frontier is not the one of the entries' hashes")
        return
    if cut.checkpoint is None:
        if keys:
            problems.append(f"{where}: no checkpoint to check with --public-key")
        return
    problem = _check_checkpoint(report, log, frontier, cut.checkpoint, keys)
    if problem is not None:
        problems.append(f"{where}: {problem}")


def _check_checkpoint(
    report: ArchiveReport,
    log: str,
    frontier: Frontier,
    linked: LinkedCheckpoint,
    keys: Sequence[VerifierKey],
) -> str | None:
    """Whether the checkpoint's tree extends the archived one: None, or the problem."""
    signed_by = ""
    try:
        if keys:
            opened = open_checkpoint(linked.note, keys)
            checkpoint = opened.checkpoint
            signed_by = ", ".join(f"{key.name}+{key.key_id.hex()}" for key in opened.verified_by)
        else:
            checkpoint = Checkpoint.parse(parse_note(linked.note).text)
    except (CheckpointError, ValueError) as exc:
        return f"the checkpoint does not open: {exc}"
    if log_of_origin(checkpoint.origin) != log:
        return f"the checkpoint is of origin {checkpoint.origin!r}, not of this log"
    try:
        proof = [bytes.fromhex(node) for node in linked.consistency_proof]
    except ValueError:
        return "the consistency proof is not a list of hex hashes"
    if not verify_consistency(
        frontier.size, checkpoint.size, frontier.root(), checkpoint.root, proof
    ):
        return (
            f"the consistency proof does not lead from the archived tree (size "
            f"{frontier.size}) to the checkpoint's (size {checkpoint.size})"
        )
    what = f"linked to the checkpoint of size {checkpoint.size}"
    if signed_by:
        report.checkpoints[log] = f"{what}, signed by {signed_by}"
    else:
        report.checkpoints[log] = f"{what} (signature not checked: give --public-key)"
    return None
