"""``AuditStore``: what every store does alike, in front of a ``StoreBackend``.

The front owns the group commit writer, the event limits, checkpointing, verification,
the histogram's layout and the paging cursors; the backend (``auditmw._stores.backend``)
only moves rows. ``SQLiteStore`` and ``PostgresStore`` are this front with their backend
built in; ``auditmw.testing.MemoryStore`` is it over the in-memory reference backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType
from typing import Self, TypedDict

from auditmw._errors import PruneRefusedError, StorageDamagedError, StoreClosedError, StoreError
from auditmw._event import Event, Limits, NewEvent, PreparedEvent, prepare, utc_timestamp
from auditmw._retention.archive import write_archive
from auditmw._retention.archive_format import ArchiveHeader
from auditmw._retention.cuts import CutRecord
from auditmw._retention.erasure import ErasureReport, erase_person
from auditmw._retention.holds import (
    HOLD_PLACED,
    HOLD_RELEASED,
    LegalHold,
    active_holds,
    hold_event,
)
from auditmw._retention.policy import RetentionPolicy, RetentionScheduler, RetentionStats
from auditmw._retention.prune import (
    Progress,
    PruneReport,
    check_archive,
    check_before,
    default_actor,
    plan,
    prune_event,
    records_of,
)
from auditmw._stores.backend import FACET_COLUMNS, StoreBackend
from auditmw._stores.cursor import encode_cursor, keyset_position
from auditmw._stores.filters import EventFilter, Page
from auditmw._stores.histogram import DEFAULT_BUCKETS, MAX_BUCKETS, BucketLayout, Histogram
from auditmw._stores.personal_check import ErasureRecord
from auditmw._stores.rows import CheckpointRow, StoredCheckpoint
from auditmw._stores.verify import ChainRow, StoreEvidence, verify_rows
from auditmw._stores.verify_report import VerifyReport
from auditmw._stores.writer import GroupCommitWriter, OnCommit
from auditmw._transparency.checkpoints import Checkpointer, Checkpointing, CheckpointStats

__all__ = [
    "AuditStore",
    "CheckpointRow",
    "PruneRefusedError",
    "PruneReport",
    "StoreOptions",
    "StoredCheckpoint",
]


class StoreOptions(TypedDict, total=False):
    """The options every store takes beside its backend's settings (``AuditStore``)."""

    limits: Limits | None
    max_batch: int
    max_pending: int
    checkpointing: Checkpointing | None
    retention: RetentionPolicy | None


class AuditStore:
    """An append-only, hash-chained audit log kept by ``backend``.

    Use it as an async context manager (or call ``open()``/``close()``); ``close()``
    commits every append already made before it returns.

    ``limits`` bounds each event's fields (``Limits``). Appends are committed in groups
    of up to ``max_batch``; up to ``max_pending`` wait for the writer, further callers
    wait for room. ``append_timeout`` is how long an append may take from its call.
    ``checkpointing`` issues signed checkpoints (``Checkpointing``, docs/checkpoints.md).
    ``retention`` prunes on a schedule while the store is open (``RetentionPolicy``,
    docs/retention.md).
    """

    def __init__(
        self,
        backend: StoreBackend,
        *,
        limits: Limits | None = None,
        max_batch: int = 1024,
        max_pending: int = 10_000,
        checkpointing: Checkpointing | None = None,
        retention: RetentionPolicy | None = None,
        append_timeout: float = 10.0,  # each backend's setting (retry_for, busy_timeout)
    ) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self._append_timeout = append_timeout
        self._checkpointer: Checkpointer | None = None
        on_commit: OnCommit | None = None
        if checkpointing is not None:
            # It reads and writes checkpoint rows through the backend and appends its
            # key records through ``_append_own``: it never sees the store itself.
            self._checkpointer = Checkpointer(backend, self._append_own, checkpointing)
            # Told what each batch committed; it issues checkpoints in its own task,
            # never in the batch's transaction.
            on_commit = self._checkpointer.committed
        self._writer = GroupCommitWriter(
            self._commit_batch,
            max_batch=max_batch,
            max_pending=max_pending,
            timeout=append_timeout,
            on_commit=on_commit,
        )
        # Prunes on a schedule while the store is open (docs/retention.md).
        self._retention = None if retention is None else RetentionScheduler(self, retention)
        self._opened = False  # taking appends
        self._connected = False  # readable: from connect until disconnect (close included)

    async def open(self) -> Self:
        if not self._opened:
            await self.backend.connect()
            self._connected = True
            self._writer.start()
            self._opened = True
            if self._checkpointer is not None:
                try:
                    await self._checkpointer.start()
                except BaseException:
                    await self.close()
                    raise
            if self._retention is not None:
                self._retention.start()
        return self

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                if self._retention is not None:
                    await self._retention.stop()  # a prune under way is rolled back
                if self._checkpointer is not None:
                    await self._checkpointer.stop()  # records a new key while it still can
                await self._writer.close()
                if self._checkpointer is not None:
                    # After the writer drained: the last checkpoint covers every append.
                    await self._checkpointer.close()
            finally:
                self._connected = False
                await self.backend.disconnect()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def append(self, event: NewEvent) -> Event:
        """Validate, chain and durably commit one event; returns it with seq and hash.

        Raises ``ValidationError`` for a bad event (nothing is queued) and ``StoreError``
        when it could not be committed: ``EventRefusedError`` when the database refused
        this event's data (the events that shared its transaction are committed);
        ``StoreUnavailableError`` when the database was unreachable, too slow or locked
        until the append's deadline, the store's append timeout after this call
        (``retry_for``, ``busy_timeout``).
        """
        prepared = prepare(event, self.limits)
        if not self._opened:
            raise StoreClosedError("the audit store is not open")
        self._require_format_2()
        return await self._writer.submit(prepared)

    def _require_format_2(self) -> None:
        if not self.backend.writes_format_2:
            raise StoreError(
                "the audit store predates entry format 2 and was opened without create: "
                "open it once with create=True (as its owner) to upgrade it"
            )

    @property
    def is_open(self) -> bool:
        """Whether the store takes appends: from ``open()`` until ``close()`` begins."""
        return self._opened

    @property
    def retention_stats(self) -> RetentionStats | None:
        """How the retention policy's runs went, or None without ``retention``."""
        return None if self._retention is None else self._retention.stats

    @property
    def pending(self) -> int:
        """How many appends were made and wait for the writer (not being committed)."""
        return self._writer.pending

    @property
    def committing(self) -> bool:
        """Whether a batch of appends is being committed now (its transaction begun,
        waiting for a lock or a server included)."""
        return self._writer.deadline is not None

    async def _append_own(self, event: NewEvent) -> Event:
        """``append`` for the store's own events (the checkpoint key record), which may
        still be made while the store is closing, before its writer stopped."""
        self._require_format_2()
        return await self._writer.submit(prepare(event, self.limits))

    async def verify(
        self, progress: Callable[[int], None] | None = None, *, max_findings: int = 1000
    ) -> VerifyReport:
        """Check the whole log (see ``auditmw._stores.verify``); O(n) time, flat memory.

        All findings are counted; the first ``max_findings`` are listed in the report.
        """
        self._require_open()
        evidence = await self.evidence()
        return await verify_rows(self.iter_chain_rows(), progress, max_findings, evidence=evidence)

    async def evidence(self) -> StoreEvidence:
        """What verification checks beside the rows (``auditmw._stores.verify.StoreEvidence``).

        A read that fails on damaged storage is damage to report, not an error: verify
        goes on with what it can read."""
        damage = await self.backend.storage_damage()
        removed: list[str] = []
        sizes: dict[tuple[str, str], int] | None = None
        erasures: list[ErasureRecord] = []
        try:
            removed = await self.backend.removed_checkpoints()
            sizes = await self.backend.checkpoint_sizes()
        except StorageDamagedError as exc:
            damage.append(f"reading the checkpoint table failed: {exc}")
        cuts: list[CutRecord] = []
        cut_problems: list[str] = []
        try:
            for number, row in enumerate(await self.backend.cut_rows(), 1):
                try:
                    cuts.append(CutRecord.from_row(row))
                except (ValueError, TypeError) as exc:
                    cut_problems.append(f"auditmw_cuts row {number} is not a cut: {exc}")
        except StorageDamagedError as exc:
            damage.append(f"reading the cut table failed: {exc}")
        try:
            erasures = await self.backend.erasure_records()
        except StorageDamagedError as exc:
            damage.append(f"reading the erasure records failed: {exc}")
        return StoreEvidence(
            tuple(damage),
            tuple(removed),
            sizes,
            tuple(await self.backend.schema_warnings()),
            tuple(cuts),
            tuple(cut_problems),
            tuple(erasures),
        )

    async def cut_records(self) -> list[CutRecord]:
        """The rows of the cut table (where each pruned log starts), in insertion order."""
        return [CutRecord.from_row(row) for row in await self.backend.cut_rows()]

    async def prune(
        self,
        *,
        before: datetime | str,
        archive: str | os.PathLike[str] | None,
        discard: bool = False,
        actor: str | None = None,
        progress: Progress | None = None,
    ) -> PruneReport:
        """Delete every log's prefix of entries older than ``before`` as one recorded
        operation (docs/retention.md); returns what it did.

        ``archive``: an archive of exactly that prefix (``archive()`` before the same
        ``before``), verified completely first; ``None`` only with ``discard=True``, a
        deliberate discard. Appends an ``audit.pruned`` event (``actor`` as its user id,
        by default the current audit context's user, else the OS user) that records every
        log's cut. Refused with
        ``PruneRefusedError`` and nothing deleted: a ``before`` in the future, an archive
        damaged or not of exactly the prefix, another prune meanwhile. A prune left
        unfinished (PostgreSQL deletes in batches after recording) is finished first.
        """
        if not self._opened:
            raise StoreClosedError("the audit store is not open")
        if (archive is None) != discard:
            raise ValueError("give an archive, or archive=None with discard=True (not both)")
        cut = check_before(before)
        held = await self.holds()
        if held:
            names = ", ".join(f"{hold.name!r} ({hold.reason})" for hold in held)
            raise PruneRefusedError(
                f"legal hold {names} is active: nothing was pruned; release it first"
            )
        tell = progress or (lambda _: None)
        deleted = await self._finish_prune(tell)
        planned = await plan(self, cut)
        if not planned.moved:
            tell("nothing to prune")
            return PruneReport(cut, planned.cuts, (), 0, deleted, None, None)
        tell(f"planned {planned.entries} entries of {', '.join(planned.moved)}")
        digest = None if archive is None else await check_archive(archive, cut, planned)
        if digest is not None:
            tell(f"archive verified, sha256 {digest}")
        prepared = prepare(prune_event(cut, planned, digest, actor), self.limits)
        records = records_of(planned, prepared.id, utc_timestamp())
        recorded = {log: c.last_seq for log, c in planned.recorded.items()}
        deadline = time.monotonic() + self._append_timeout
        event, now = await self.backend.prune(prepared, records, recorded, deadline)
        if self._checkpointer is not None:
            self._checkpointer.committed([event])
        tell(f"recorded cuts {', '.join(planned.moved)}; deleted {now}")
        deleted += now + await self._finish_prune(tell)
        tell("done")
        return PruneReport(
            cut, planned.cuts, planned.moved, planned.entries, deleted, digest, event
        )

    async def holds(self) -> list[LegalHold]:
        """The active legal holds (placed, not released since), oldest first."""
        self._require_open()
        return await active_holds(self)

    async def place_hold(self, name: str, reason: str, *, actor: str | None = None) -> LegalHold:
        """Place the legal hold ``name``: prune refuses until it is released. Recorded as
        an ``audit.hold_placed`` event (``actor``, by default the current audit context's
        user or the OS user, as its user id). ``ValueError`` when a hold of that name is active."""
        if any(hold.name == name for hold in await self.holds()):
            raise ValueError(f"legal hold {name!r} is already active")
        event = await self.append(hold_event(HOLD_PLACED, name, reason, actor or default_actor()))
        return LegalHold(name, reason, event.timestamp, event.user_id, event.id)

    async def release_hold(self, name: str, *, actor: str | None = None) -> None:
        """Release the active legal hold ``name`` (an ``audit.hold_released`` event);
        ``ValueError`` when no hold of that name is active."""
        if not any(hold.name == name for hold in await self.holds()):
            raise ValueError(f"no legal hold {name!r} is active")
        await self.append(hold_event(HOLD_RELEASED, name, None, actor or default_actor()))

    async def _finish_prune(self, tell: Progress) -> int:
        """Delete the rows still at or below a recorded cut, a batch per transaction."""
        deleted = 0
        while batch := await self.backend.delete_pruned(self.backend.prune_batch):
            deleted += batch
            tell(f"deleted {deleted}")
        return deleted

    async def archive(
        self, *, before: datetime | str, output: str | os.PathLike[str]
    ) -> ArchiveHeader:
        """Write every log's entries older than ``before`` to the new file ``output`` as
        a self-verifying archive (docs/retention.md); returns its header.

        ``before`` is an aware ``datetime`` or an ISO 8601 date or date-time (a date is
        the start of that day, UTC). Each log's cut is the longest prefix whose entries
        are all older than ``before``. ``FileExistsError`` when ``output`` exists.
        """
        self._require_open()
        return await write_archive(self, before=before, output=output)

    async def erase(self, *, user_id: str, reason: str | None = None) -> ErasureReport:
        """Erase the personal data of the person ``user_id`` (GDPR Art. 17) from every
        entry they made or that is about them (resource ``user``), and record it as an
        appended ``audit.erased`` entry; returns what was erased. The entries, the chain,
        the Merkle tree and every signed checkpoint stay as they were (docs/privacy.md).

        ``ValidationError`` for an empty id, a reason over 1024 characters, or an id that
        no entry names. Entries of format 1 cannot be erased: the report counts them."""
        self._require_open()
        if not self._opened:
            raise StoreClosedError("the audit store is not open")
        self._require_format_2()
        return await erase_person(
            user_id=user_id,
            reason=reason,
            max_chars=self.limits.max_chars,
            keys=self.limits.personal_keys,
            subject_rows=self.backend.subject_rows,
            append=self.append,
            remove=self.backend.remove_personal,
        )

    def _require_open(self) -> None:
        if not self._connected:
            raise StoreClosedError("the audit store is not open")

    # Signed checkpoints (docs/checkpoints.md; issued by auditmw._transparency.checkpoints).

    @property
    def checkpoint_stats(self) -> CheckpointStats | None:
        """Counters of the checkpoints issued and of failures (for monitoring), or None
        when the store was opened without ``checkpointing``."""
        return None if self._checkpointer is None else self._checkpointer.stats

    async def issue_checkpoints(self) -> list[StoredCheckpoint]:
        """Issue a checkpoint now for every log with entries after its newest one (as
        closing the store does); returns those issued. Needs ``checkpointing``.

        Unlike automatic issuing, a failure raises (after being logged and counted)."""
        self._require_open()
        if self._checkpointer is None:
            raise ValueError("the store was opened without checkpointing")
        return await self._checkpointer.issue_all()

    async def checkpoints(self, log: str | None = None) -> list[StoredCheckpoint]:
        """The stored checkpoints of ``log`` (of every log when None), ordered by log,
        size, then insertion order. Empty for a store that has no checkpoint table."""
        return await self.backend.checkpoints(log)

    async def logs(self) -> list[str]:
        """The names of the logs that have events, sorted."""
        return await self.backend.logs()

    async def get(self, event_id: str) -> Event | None:
        """The event with this id, or None."""
        return await self.backend.get(event_id)

    async def count(self) -> int:
        """How many events the store holds, over all logs."""
        return await self.backend.count()

    def iter_chain_rows(self) -> AsyncIterator[ChainRow]:
        """Every stored row, ordered by (log, seq), as the verifier reads it."""
        return self.backend.iter_chain_rows()

    async def schema_warnings(self) -> list[str]:
        """Protections found missing (e.g. append-only triggers dropped)."""
        return await self.backend.schema_warnings()

    # Reading, for the admin app and exports (auditmw._stores.filters, auditmw._stores.cursor).

    async def query(
        self,
        filter: EventFilter,
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int = 0,
    ) -> Page:
        """One page of the events matching ``filter``, newest first.

        Newest first means by timestamp, ties broken by insertion order. Pages are
        keyset-paginated: pass a page's ``next_cursor`` to get the next page, at the same
        cost however deep it is. A cursor made for other filters (or not by this store)
        raises ``QueryError`` with param ``cursor``. ``offset`` skips that many matches
        first, for page-number clients; it costs O(offset).
        """
        if limit < 1 or offset < 0:
            raise ValueError("limit must be at least 1 and offset at least 0")
        position = None
        if cursor is not None:
            position = keyset_position(filter, cursor, self.backend.tiebreak)
        events, last = await self.backend.page(filter, limit, position, offset)
        return Page(events, None if last is None else encode_cursor(filter, last))

    def iter_events(self, filter: EventFilter) -> AsyncIterator[Event]:
        """Every event matching ``filter`` in chain order: by log, then seq ascending.

        Streamed with flat memory, for exports. Chain order is what lets an export of the
        whole log be verified offline (``auditmw verify --jsonl``).
        """
        return self.backend.stream(filter)

    async def distinct_values(self, column: str, *, limit: int = 1000) -> list[str]:
        """The distinct values of ``action``, ``resource`` or ``outcome`` in the log,
        sorted, at most ``limit`` of them (for the dashboard's choices)."""
        if column not in FACET_COLUMNS:
            raise ValueError(f"column must be one of {', '.join(FACET_COLUMNS)}")
        return await self.backend.distinct_values(column, limit)

    async def histogram(self, filter: EventFilter, *, buckets: int = DEFAULT_BUCKETS) -> Histogram:
        """How many events match ``filter`` per interval of time, in at most ``buckets``
        intervals of a width that reads well (see ``auditmw._stores.histogram``).

        The range is ``filter.since``/``until`` when set, else the first and last matching
        events'; the counts add up to exactly the events ``query`` returns. Counted in the
        database, in one statement (tens of milliseconds at a million events; a search
        reads its matches).
        """
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be from 1 to {MAX_BUCKETS}")
        span = None
        if filter.since is None or filter.until is None:
            span = await self.backend.time_span(filter)
        layout = BucketLayout.over(filter.since, filter.until, span, buckets)
        if layout is None:
            return Histogram(filter.since, filter.until, None, ())
        return layout.histogram(await self.backend.interval_counts(filter, layout))

    # Merkle leaves, for inclusion proofs (auditmw._transparency.proofs).

    async def last_seq(self, log: str) -> int:
        """The seq of ``log``'s newest entry (its Merkle tree size); 0 when empty."""
        return await self.backend.last_seq(log)

    def iter_events_after(self, log: str, seq: int) -> AsyncIterator[Event]:
        """``log``'s events after ``seq``, in seq order, streamed."""
        return self.backend.iter_events_after(log, seq)

    def chain_after(self, log: str, seq: int) -> AsyncIterator[tuple[int, str, str]]:
        """``(seq, hash, timestamp)`` of ``log``'s entries after ``seq``, in seq order."""
        return self.backend.chain_after(log, seq)

    def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The Merkle leaves ``[start, end)`` of ``log``: the stored hashes of its entries
        with seq ``start + 1`` to ``end``, in order, as 32-byte values."""
        return self.backend.leaf_hashes(log, start, end)

    async def _commit_batch(self, batch: list[PreparedEvent]) -> list[Event]:
        """Chain and insert ``batch`` in one transaction (the writer's commit); all or
        nothing, by the deadline of its oldest append (set while the writer commits)."""
        deadline = self._writer.deadline
        assert deadline is not None
        return await self.backend.append_batch(batch, deadline)
