"""Archives and a pruned store as one history (``auditmw verify STORE --archive FILE``).

Each archive is first verified alone (``archive_check``). Then each of its logs must end
at a cut the store recorded when it pruned: the same ``last_seq``, chain head and Merkle
frontier as a row of ``auditmw_cuts``; it must start at seq 1 or right after another
recorded cut; and the ``audit.pruned`` entry that recorded that cut, while the store
still holds it, must name this file's SHA-256. The store's own verification proves that
the kept entries go on from the newest cut, so the archives and the store are one chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditmw._retention.archive_check import ArchiveFile
from auditmw._retention.cuts import CutRecord
from auditmw._stores.jsonl import chain_row
from auditmw._stores.report import Report, ReportedFinding


@dataclass(slots=True)
class LinkedArchivesReport(Report):
    """The store's report, plus each archive's and where they do not link (``problems``).
    ``ok`` when all of it is."""

    store: Report
    archives: list[ArchiveFile]
    problems: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)

    @property
    def findings(self) -> Sequence[ReportedFinding]:  # type: ignore[override]
        return self.store.findings

    @property
    def logs(self) -> Mapping[str, Any]:  # type: ignore[override]
        return self.store.logs

    @property
    def warnings(self) -> Sequence[str]:  # type: ignore[override]
        return self.store.warnings

    @property
    def ok(self) -> bool:
        return self.store.ok and all(a.ok for a in self.archives) and not self.problems

    def summary(self) -> str:
        if not self.store.ok:
            return self.store.summary()
        for archive in self.archives:
            if not archive.ok:
                what = archive.problem if archive.report is None else archive.report.summary()
                return f"DAMAGED: archive {archive.path}: {what}"
        if self.problems:
            return f"DAMAGED: {len(self.problems)} problem(s); first: {self.problems[0]}"
        return f"{self.store.summary()}; {len(self.archives)} archive(s) linked to its cuts"

    def details(self) -> list[str]:
        lines = self.store.details()
        for archive in self.archives:
            if archive.report is not None:
                lines.extend(archive.report.details())
        lines.extend(f"  {problem}" for problem in self.problems)
        lines.extend(f"  {line}" for line in self.linked)
        return lines

    def to_json(self) -> dict[str, Any]:
        document = self.store.to_json()
        document["ok"] = self.ok
        document["archives"] = [
            {
                "path": str(archive.path),
                "sha256": archive.sha256,
                "ok": archive.ok,
                "report": None if archive.report is None else archive.report.to_json(),
                "problem": archive.problem,
            }
            for archive in self.archives
        ]
        document["archive_problems"] = self.problems
        return document


def link_archives(
    store: Report,
    archives: list[ArchiveFile],
    cuts: Sequence[CutRecord],
    recorded_sha256: Mapping[str, str | None],
) -> LinkedArchivesReport:
    """Link each archive to the store's ``cuts``; ``recorded_sha256``: for each
    ``audit.pruned`` entry the store still holds (by id), the archive it names."""
    report = LinkedArchivesReport(store, archives)
    for archive in archives:
        if archive.header is None or not archive.ok:
            continue  # damaged alone: reported as such, not linked
        for log, cut in sorted(archive.header.logs.items()):
            where = f"archive {archive.path}, log {log!r}"
            ends = [
                record
                for record in cuts
                if record.log == log
                and record.cut.last_seq == cut.last_seq
                and record.cut.head == cut.head
                and record.cut.frontier == cut.frontier
            ]
            if not ends:
                report.problems.append(
                    f"{where}: it ends at seq {cut.last_seq}, head {cut.head}, which is not a "
                    "cut the store recorded (another store, or the cut records were edited)"
                )
                continue
            starts = cut.first_seq == 1 or any(
                r.log == log
                and r.cut.last_seq == cut.first_seq - 1
                and cut.after is not None
                and r.cut.head == cut.after[0]
                for r in cuts
            )
            if not starts:
                report.problems.append(
                    f"{where}: it starts at seq {cut.first_seq}, after no recorded cut"
                )
                continue
            names = {recorded_sha256[r.event_id] for r in ends if r.event_id in recorded_sha256}
            if names and archive.sha256 not in names:
                report.problems.append(
                    f"{where}: the prune that recorded its cut names archive sha256 "
                    f"{', '.join(sorted(str(n) for n in names))}, this file is {archive.sha256}"
                )
                continue
            how = "named by its audit.pruned entry" if names else "its prune entry since pruned"
            report.linked.append(
                f"{where}: seqs {cut.first_seq}..{cut.last_seq} linked to the store's cut "
                f"(sha256 {archive.sha256}, {how})"
            )
    return report


def pruned_leaves(archives: Sequence[ArchiveFile]) -> dict[str, list[bytes]]:
    """Per log, the leaves (entry hashes) of the intact archives that together hold it
    from seq 1 without a hole, in seq order (to check checkpoints below a cut)."""
    runs: dict[str, list[tuple[int, ArchiveFile]]] = {}
    for archive in archives:
        if archive.ok and archive.header is not None:
            for log, cut in archive.header.logs.items():
                runs.setdefault(log, []).append((cut.first_seq, archive))
    leaves: dict[str, list[bytes]] = {}
    for log, found in runs.items():
        found.sort(key=lambda run: run[0])
        hashes: list[bytes] = []
        for first, archive in found:
            if first != len(hashes) + 1:
                break  # a hole: these archives do not hold the whole pruned prefix
            hashes.extend(_hashes(archive, log))
        else:
            leaves[log] = hashes
    return leaves


def _hashes(archive: ArchiveFile, log: str) -> list[bytes]:
    with archive.path.open("rb") as file:
        next(file)  # the header
        rows = (chain_row(line) for line in file if line.strip())
        return [bytes.fromhex(row.hash) for row in rows if row.log == log]
