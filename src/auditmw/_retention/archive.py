"""Writing an archive: every log's prefix of entries older than a date (docs/retention.md).

The cut of a log is the **longest prefix whose entries all have a timestamp before
``before``**: its entries are read in seq order and the first one at or after ``before``
ends it, even when later entries are older again (a clock stepped back). So the entries
an archive holds are always seqs 1 to n of the log (of a pruned log, its cut + 1 to n),
and what it leaves in the store is one unbroken run: an out-of-order timestamp never
makes a hole.

The file is written beside ``output`` under a temporary name, flushed to disk and then
linked to ``output``, which fails if ``output`` exists: a crash never leaves a half
archive under that name, and an existing file is never replaced.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Protocol

from auditmw._event import Event, utc_timestamp
from auditmw._retention.archive_format import ArchiveHeader, LinkedCheckpoint, LogCut
from auditmw._retention.cuts import Cut, CutRecord, latest_cuts
from auditmw._stores.filters import format_timestamp, parse_time
from auditmw._stores.jsonl import jsonl_line
from auditmw._stores.rows import StoredCheckpoint
from auditmw._transparency.merkle import Frontier, aconsistency_proof_from

WRITE_BYTES = 64 * 1024  # entries written to the file at a time, from a thread


class ArchiveSource(Protocol):
    """What archiving reads of a store (``AuditStore`` has all of it)."""

    async def logs(self) -> list[str]: ...

    def iter_events_after(self, log: str, seq: int) -> AsyncIterator[Event]: ...

    async def checkpoints(self, log: str | None = None) -> list[StoredCheckpoint]: ...

    def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]: ...

    async def cut_records(self) -> list[CutRecord]: ...


def cut_time(before: datetime | str) -> str:
    """``before`` as a log timestamp: an aware ``datetime``, or a date or date-time string
    read as ``auditmw export --to`` reads it (``QueryError`` with param ``before``)."""
    if isinstance(before, datetime):
        if before.utcoffset() is None:
            raise ValueError("before must be a timezone-aware datetime")
        return format_timestamp(before.astimezone(UTC))
    return parse_time("before", before)


@dataclass(slots=True)
class _Prefix:
    """The archived prefix of one log, as it is read."""

    last_seq: int = 0
    head: str = ""
    frontier: Frontier = field(default_factory=Frontier)
    after: Cut | None = None  # the log's cut from an earlier prune: the prefix goes on from it


async def write_archive(
    source: ArchiveSource, *, before: datetime | str, output: str | os.PathLike[str]
) -> ArchiveHeader:
    """Write the archive of the entries of ``source`` before ``before`` to ``output``
    (which must not exist) and return its header. The file is written in a thread, never
    blocking the event loop."""
    cut = cut_time(before)
    target = Path(output)
    if await asyncio.to_thread(target.exists):  # fail before the pass over the store
        raise FileExistsError(f"{target} exists; an archive never replaces a file")
    with _temporary(target, ".entries") as entries:
        pruned = latest_cuts(await source.cut_records())
        prefixes = await _write_entries(source, cut, entries, pruned)
        logs = {log: await _log_cut(source, log, prefix) for log, prefix in prefixes.items()}
        header = ArchiveHeader(cut, utc_timestamp(), logs)
        await asyncio.to_thread(_publish, header, entries, target)
    return header


async def _write_entries(
    source: ArchiveSource, cut: str, output: IO[bytes], pruned: dict[str, Cut]
) -> dict[str, _Prefix]:
    """Write each log's prefix before ``cut`` to ``output`` (of a pruned log: from its
    cut on); the prefix of each log."""
    prefixes: dict[str, _Prefix] = {}
    chunk = bytearray()
    # Log by log, along the primary key from the log's cut (a filter on time would sort
    # the whole table first: too slow to start at a million rows); the first entry at or
    # after the cut ends the prefix, even if later ones are older again.
    for log in sorted(set(await source.logs()) | set(pruned)):
        after = pruned.get(log)
        prefix = _Prefix(0 if after is None else after.last_seq, after=after)
        if after is not None:
            prefix.frontier = after.frontier.copy()
        events = source.iter_events_after(log, prefix.last_seq)
        try:
            async for event in events:
                if event.seq != prefix.last_seq + 1 or event.timestamp >= cut:
                    break
                chunk += jsonl_line(event)
                prefix.last_seq = event.seq
                prefix.head = event.hash
                prefix.frontier.append(bytes.fromhex(event.hash))
                if len(chunk) >= WRITE_BYTES:
                    await asyncio.to_thread(output.write, bytes(chunk))
                    chunk.clear()
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if prefix.head:
            prefixes[log] = prefix
    await asyncio.to_thread(output.write, bytes(chunk))
    return prefixes


def _publish(header: ArchiveHeader, entries: IO[bytes], target: Path) -> None:
    """Write the header and the entries to a new file and link it to ``target``, durably."""
    entries.flush()
    entries.seek(0)
    with _temporary(target, ".part") as archive:
        archive.write(header.line())
        shutil.copyfileobj(entries, archive)
        archive.flush()
        os.fsync(archive.fileno())
        os.link(archive.name, target)  # FileExistsError if it appeared meanwhile
    _sync_directory(target.parent)


async def _log_cut(source: ArchiveSource, log: str, prefix: _Prefix) -> LogCut:
    after = prefix.after
    base = None if after is None else after.frontier
    checkpoint = await _link(source, log, prefix.last_seq, base)
    first = 1 if after is None else after.last_seq + 1
    previous = None if after is None else (after.head, after.frontier)
    return LogCut(first, prefix.last_seq, prefix.head, prefix.frontier, checkpoint, previous)


async def _link(
    source: ArchiveSource, log: str, size: int, base: Frontier | None
) -> LinkedCheckpoint | None:
    """The smallest stored checkpoint of ``log`` covering ``size`` entries and the
    consistency proof from the tree of those entries to it; None when there is none."""
    covering = [c for c in await source.checkpoints(log) if c.size >= size]
    if not covering:
        return None
    checkpoint = min(covering, key=lambda c: c.size)
    read = partial(source.leaf_hashes, log)
    proof = await aconsistency_proof_from(read, size, checkpoint.size, base)
    return LinkedCheckpoint(checkpoint.note.decode("utf-8"), tuple(node.hex() for node in proof))


@contextmanager
def _temporary(target: Path, suffix: str) -> Iterator[IO[bytes]]:
    """A new file beside ``target``, removed on exit (after it was linked, or on failure)."""
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=suffix, delete=False
    ) as file:
        try:
            yield file
        finally:
            os.unlink(file.name)


def _sync_directory(directory: Path) -> None:
    """Make the new name durable (the link is in the directory's own data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
