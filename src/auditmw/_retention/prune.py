"""Pruning: delete each log's prefix older than a date, as one recorded operation
(docs/retention.md).

1. Finish an earlier prune left unfinished (rows at or below a recorded cut).
2. Plan: each log's cut is the longest prefix of its kept entries all older than
   ``before`` (as for an archive), its head the hash of the last, its frontier the
   previous cut's extended by the newly cut leaves.
3. With an archive: verify it completely (``archive_check``) and require it to hold
   exactly the planned prefix of every log; else refuse, deleting nothing.
4. The backend's transaction: the ``audit.pruned`` event and the cut rows; then the rows
   at or below the cuts are deleted in short transactions of the backend's
   ``prune_batch`` rows (SQLite, PostgreSQL), so appends never wait for the whole
   deletion.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from auditmw._errors import PruneRefusedError
from auditmw._event import Event, NewEvent, utc_timestamp
from auditmw._retention.archive import cut_time
from auditmw._retention.archive_check import verify_archive_file
from auditmw._retention.archive_format import ArchiveHeader
from auditmw._retention.cuts import (
    PRUNE_RESOURCE,
    PRUNED_ACTION,
    Cut,
    CutRecord,
    latest_cuts,
)
from auditmw._transparency.merkle import Frontier

Progress = Callable[[str], None]


class PruneSource(Protocol):
    """What pruning needs of a store (``AuditStore`` has all of it)."""

    async def logs(self) -> list[str]: ...

    def chain_after(self, log: str, seq: int) -> AsyncIterator[tuple[int, str, str]]: ...

    async def cut_records(self) -> list[CutRecord]: ...


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What ``AuditStore.prune`` did: ``cuts``, every log's cut after it (including those
    of earlier prunes); ``moved``, the logs this prune cut further; ``entries``, how many
    entries it cut; ``deleted``, rows deleted by this call (an unfinished earlier prune's
    included); ``archive_sha256`` (None for a deliberate discard); ``event``, the
    ``audit.pruned`` event appended."""

    before: str
    cuts: dict[str, Cut]
    moved: tuple[str, ...]
    entries: int
    deleted: int
    archive_sha256: str | None
    event: Event | None

    def line(self) -> str:
        logs = ", ".join(f"{log!r} seqs 1..{self.cuts[log].last_seq}" for log in self.moved)
        return f"pruned {self.entries} entries before {self.before} ({logs or 'nothing to prune'})"


@dataclass(slots=True)
class _Plan:
    recorded: dict[str, Cut]
    cuts: dict[str, Cut] = field(default_factory=dict)
    entries: int = 0

    @property
    def moved(self) -> tuple[str, ...]:
        return tuple(sorted(log for log, cut in self.cuts.items() if self.recorded.get(log) != cut))


async def plan(source: PruneSource, before: str) -> _Plan:
    """Each log's new cut: the longest prefix of its kept entries older than ``before``,
    read along the primary key from the log's cut until the first entry that is not."""
    result = _Plan(latest_cuts(await source.cut_records()))
    result.cuts = dict(result.recorded)
    for log in sorted(set(await source.logs()) | set(result.recorded)):
        start = result.recorded.get(log)
        frontier = Frontier() if start is None else start.frontier.copy()
        last = 0 if start is None else start.last_seq
        head = None
        rows = source.chain_after(log, last)
        try:
            async for seq, hash_hex, timestamp in rows:
                if seq != last + 1 or timestamp >= before:
                    break  # an entry at or after ``before`` (or a hole) ends the prefix
                frontier.append(bytes.fromhex(hash_hex))
                last, head = seq, hash_hex
        finally:
            aclose = getattr(rows, "aclose", None)
            if aclose is not None:  # stop the read (a cursor, its transaction) now
                await aclose()
        if head is not None:
            result.entries += last - (0 if start is None else start.last_seq)
            result.cuts[log] = Cut(last, head, frontier)
    return result


def check_before(before: datetime | str) -> str:
    """``before`` as a log timestamp; a time in the future is refused (it would cut
    entries still being written)."""
    cut = cut_time(before)
    if cut > utc_timestamp():
        raise PruneRefusedError(f"before {cut} is in the future; nothing was pruned")
    return cut


async def check_archive(path: str | os.PathLike[str], before: str, planned: _Plan) -> str:
    """Verify the archive at ``path`` completely and require it to hold exactly the
    planned prefix of every log; its SHA-256 (hex). ``PruneRefusedError`` otherwise."""
    read = await asyncio.to_thread(verify_archive_file, path)
    header, report, digest = read.header, read.report, read.sha256
    if header is None or report is None:
        raise PruneRefusedError(f"{path}: {read.problem}; nothing was pruned", damaged=True)
    if not report.ok:
        raise PruneRefusedError(
            f"{path}: the archive is damaged ({report.summary()}); nothing was pruned",
            damaged=True,
        )
    problems = _mismatches(header, before, planned)
    if problems:
        raise PruneRefusedError(
            f"{path}: the archive does not hold exactly the entries to prune: "
            + "; ".join(problems)
            + "; nothing was pruned"
        )
    return digest


def _mismatches(header: ArchiveHeader, before: str, planned: _Plan) -> list[str]:
    problems = []
    if header.before != before:
        problems.append(f"it was written before {header.before}, the prune is before {before}")
    moved = set(planned.moved)
    for log in sorted(moved | set(header.logs)):
        cut, archived = planned.cuts.get(log), header.logs.get(log)
        if log not in moved or cut is None:
            problems.append(f"log {log!r}: archived, but nothing of it is to be pruned")
            continue
        if archived is None:
            problems.append(f"log {log!r}: seqs ..{cut.last_seq} are to be pruned, not archived")
            continue
        previous = planned.recorded.get(log)
        first = 1 if previous is None else previous.last_seq + 1
        if (archived.first_seq, archived.last_seq) != (first, cut.last_seq):
            problems.append(
                f"log {log!r}: archived seqs {archived.first_seq}..{archived.last_seq}, "
                f"to prune {first}..{cut.last_seq}"
            )
        elif archived.head != cut.head or archived.frontier != cut.frontier:
            problems.append(f"log {log!r}: the archived head or frontier is not the store's")
    return problems


def prune_event(
    before: str, planned: _Plan, archive_sha256: str | None, actor: str | None
) -> NewEvent:
    """The ``audit.pruned`` event: who, before when, by which archive, how many entries,
    and every log's cut (so the newest one alone says where each log starts)."""
    details: dict[str, object] = {
        "before": before,
        "archive_sha256": archive_sha256,
        "entries": planned.entries,
        "cuts": {log: cut.to_dict() for log, cut in sorted(planned.cuts.items())},
    }
    if archive_sha256 is None:
        details["discarded"] = True
    return NewEvent(
        action=PRUNED_ACTION,
        resource=PRUNE_RESOURCE,
        user_id=actor if actor is not None else default_actor(),
        details=details,
    )


# Who is acting now, when auditmw knows it: the user of the request being handled, or
# of an ``acting_as()`` block. The recording layer (``auditmw._record``), above the
# store, plugs its lookup in here at import.
ACTOR_LOOKUPS: list[Callable[[], str | None]] = []


def default_actor() -> str | None:
    """The actor of the store's own retention events when none is given: the current
    audit context's user id, else the OS user."""
    for lookup in ACTOR_LOOKUPS:
        found = lookup()
        if found:
            return found
    return os_user()


def os_user() -> str | None:
    """Who runs this process, as the OS knows them: the default actor of the store's own
    retention events."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def records_of(planned: _Plan, event_id: str, created_at: str) -> list[CutRecord]:
    return [CutRecord(log, cut, event_id, created_at) for log, cut in sorted(planned.cuts.items())]
