"""The narrow interface between ``AuditStore`` and the database that holds a log.

``AuditStore`` (``auditmw._stores.store``) does what every store does alike: the group
commit writer, limits, checkpointing, verification, histogram layout, cursors. A
``StoreBackend`` only moves rows: it appends a prepared batch, reads ranges, runs the
queries of a filter, and keeps checkpoint rows and what it knows about itself.

A new backend subclasses ``StoreBackend``; ``auditmw._stores.memory`` is the smallest
complete one, and the contract tests (tests/test_store_contract.py) run every backend.

Every failure of the database maps to one of the documented ``StoreError`` subclasses
(``StoreUnavailableError`` for "not now", ``StorageDamagedError`` for damaged storage,
``EventRefusedError`` for refused data, ``NotAStoreError`` when there is no store);
reading from a backend that is not connected raises ``StoreClosedError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from auditmw._event import Event, PreparedEvent
from auditmw._retention.cuts import CutRecord
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import EventFilter
from auditmw._stores.histogram import BucketLayout
from auditmw._stores.personal_check import ErasureRecord
from auditmw._stores.rows import CheckpointRow, PersonalUpdate, StoredCheckpoint, SubjectRow
from auditmw._stores.stream_state import StreamState
from auditmw._stores.verify import ChainRow

# The columns whose distinct values the dashboard offers as choices.
FACET_COLUMNS = ("action", "resource", "outcome")


class StoreBackend(ABC):
    """Rows of one audit log in one database (see the module docstring)."""

    # The type of the second half of a keyset position (timestamp, tie-breaker): what
    # orders events of equal timestamps, in insertion order.
    tiebreak: ClassVar[type[int] | type[str]]
    # Rows a prune deletes per transaction after recording (``delete_pruned``): appends
    # take turns with the batches, so this bounds how long one waits (benchmarks/prune.py).
    prune_batch: ClassVar[int] = 10_000
    # Whether the store holds entries of format 2 (their openings beside them); False for
    # a store that predates them, opened without ``create`` (known once connected): it
    # reads, and refuses appends until it is opened with ``create`` (which migrates it).
    writes_format_2: bool = True

    # --- connection ----------------------------------------------------------------------

    @abstractmethod
    async def connect(self) -> None:
        """Open (and, when allowed, create) the store; ``NotAStoreError`` when there is none."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close every connection; safe to call when not (or partly) connected."""

    # --- appending -----------------------------------------------------------------------

    @abstractmethod
    async def append_batch(self, batch: list[PreparedEvent], deadline: float) -> list[Event]:
        """Chain ``batch`` after the heads of its logs and insert it in one transaction:
        all or nothing. ``EventRefusedError`` when the database refused its data (with
        ``committed``: a prefix it kept all the same); ``StoreUnavailableError`` once
        ``deadline`` (``time.monotonic()``) passed without success."""

    # --- ranges --------------------------------------------------------------------------

    @abstractmethod
    def iter_chain_rows(self) -> AsyncIterator[ChainRow]:
        """Every stored row, ordered by (log, seq), as the verifier reads it."""

    @abstractmethod
    def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The Merkle leaves ``[start, end)`` of ``log``: the stored hashes of its entries
        with seq ``start + 1`` to ``end``, in order, as 32-byte values."""

    @abstractmethod
    def chain_after(self, log: str, seq: int) -> AsyncIterator[tuple[int, str, str]]:
        """``(seq, hash, timestamp)`` of ``log``'s entries after ``seq``, in seq order,
        streamed from the first at once (a prune's plan stops at the first too new)."""

    @abstractmethod
    def iter_events_after(self, log: str, seq: int) -> AsyncIterator[Event]:
        """``log``'s events after ``seq``, in seq order, streamed from the first at once
        (an archive stops at the first too new)."""

    @abstractmethod
    async def get(self, event_id: str) -> Event | None:
        """The event with this id, or None."""

    # --- queries of a filter -------------------------------------------------------------

    @abstractmethod
    async def page(
        self, filter: EventFilter, limit: int, position: Keyset | None, offset: int
    ) -> tuple[list[Event], Keyset | None]:
        """Up to ``limit`` events matching ``filter`` newest first (by timestamp, ties by
        insertion order), after ``position`` when given, ``offset`` of them skipped; and
        the position of the last one when more follow (else None)."""

    @abstractmethod
    def stream(self, filter: EventFilter) -> AsyncIterator[Event]:
        """Every event matching ``filter`` in chain order (log, then seq), flat memory."""

    @abstractmethod
    async def time_span(self, filter: EventFilter) -> tuple[str, str] | None:
        """The timestamps of the first and the last event matching ``filter``; None when
        none does."""

    @abstractmethod
    async def interval_counts(self, filter: EventFilter, layout: BucketLayout) -> list[int]:
        """How many events matching ``filter`` fall in each of ``layout``'s intervals, in
        order: ``layout.count`` numbers. The first interval takes every earlier event and
        the last every later one (see ``BucketLayout.edges``), so they add up to all the
        matches."""

    @abstractmethod
    async def distinct_values(self, column: str, limit: int) -> list[str]:
        """The distinct values of ``column`` (one of ``FACET_COLUMNS``), sorted, at most
        ``limit`` of them."""

    # --- erasure (auditmw._retention.erasure) ----------------------------------------------

    @abstractmethod
    async def subject_rows(self, user_id: str, resources: Sequence[str]) -> list[SubjectRow]:
        """The rows whose actor is ``user_id`` (its column form), or that are about that
        person: resource one of ``resources``, resource_id ``user_id``."""

    @abstractmethod
    async def remove_personal(self, updates: list[PersonalUpdate]) -> list[str]:
        """Apply ``updates`` in one transaction, through the one UPDATE the table takes,
        and make the removed values unreadable from the database's files as far as it
        can; returns notes on what it could not (e.g. what PostgreSQL keeps a while)."""

    # --- checkpoint rows -----------------------------------------------------------------

    @abstractmethod
    async def checkpoints(self, log: str | None) -> list[StoredCheckpoint]:
        """The stored checkpoints of ``log`` (of every log when None), ordered by log,
        size, then insertion order. Empty for a store that has no checkpoint table."""

    @abstractmethod
    async def recent_checkpoints(self, log: str, limit: int) -> list[CheckpointRow]:
        """Up to ``limit`` checkpoints of ``log``, largest size first (then newest)."""

    @abstractmethod
    async def insert_checkpoint(self, row: CheckpointRow) -> bool:
        """Store ``row`` in its own transaction (never inside a batch's), unless a
        checkpoint of that log with the same size and root is stored already (two issuers
        raced); True if inserted."""

    # --- meta ----------------------------------------------------------------------------

    @abstractmethod
    async def logs(self) -> list[str]:
        """The names of the logs that have events, sorted."""

    @abstractmethod
    async def count(self) -> int:
        """How many events the store holds, over all logs."""

    @abstractmethod
    async def last_seq(self, log: str) -> int:
        """The seq of ``log``'s newest entry (its Merkle tree size); 0 when empty."""

    @abstractmethod
    async def schema_warnings(self) -> list[str]:
        """Protections found missing (e.g. append-only triggers dropped)."""

    @abstractmethod
    async def erasure_records(self) -> list[ErasureRecord]:
        """The ``audit.erased`` entries (resource ``user``) as the columns show them."""

    @abstractmethod
    async def storage_damage(self) -> list[str]:
        """What the database's own check of its storage finds wrong; empty when nothing
        (or when the backend has no such check to run)."""

    @abstractmethod
    async def removed_checkpoints(self) -> list[str]:
        """Checkpoint rows the store's own records prove deleted; empty when none (or
        when the backend keeps no such record)."""

    @abstractmethod
    async def checkpoint_sizes(self) -> dict[tuple[str, str], int]:
        """For each (log, verifier key), the largest size of a stored checkpoint signed
        by that key (per the table's unsigned ``key`` column: a forged row passes here,
        and fails when the notes are checked with ``--public-key``)."""

    # --- retention (docs/retention.md) -----------------------------------------------------

    @abstractmethod
    async def cut_rows(self) -> list[tuple[object, ...]]:
        """Every row of the cut table as stored, in insertion order: ``(log, last_seq,
        head, frontier json, event_id, created_at)``; empty without the table."""

    @abstractmethod
    async def prune(
        self,
        event: PreparedEvent,
        records: list[CutRecord],
        recorded: dict[str, int],
        deadline: float,
    ) -> tuple[Event, int]:
        """In one transaction: check the cut table still records ``recorded`` (each
        log's largest ``last_seq``; else ``PruneRefusedError``) and each new cut's entry
        its head; append ``event`` (``audit.pruned``) to its log; insert ``records``
        (every log's cut, ``event_id`` the event's). The rows at or below the cuts are
        deleted in that transaction (the memory backend) or left to ``delete_pruned``
        (SQLite, PostgreSQL: short batches, appends take turns with them). Returns the
        event and how many rows were deleted."""

    @abstractmethod
    async def delete_pruned(self, limit: int) -> int:
        """Delete up to ``limit`` rows at or below the recorded cuts (a prune not finished
        yet), in (log, seq) order, in one short transaction; how many were deleted."""

    # --- log streams (auditmw._streams; their state: auditmw._stores.stream_state) --------

    @abstractmethod
    async def events_after(
        self, log: str, after: int, through: int, limit: int, filter: EventFilter
    ) -> list[Event]:
        """Up to ``limit`` events of ``log`` with ``after < seq <= through`` that match
        ``filter``, in seq order: a stream's next batch, read by range, never the whole
        log."""

    @abstractmethod
    async def stream_states(self, name: str | None) -> list[StreamState]:
        """The state of stream ``name`` (of every stream when None), by name; empty when
        there is none (or no streams table yet)."""

    @abstractmethod
    async def claim_stream(
        self, name: str, owner: str, now: float, expires: float, created_at: str
    ) -> StreamState | None:
        """Take stream ``name``'s lease for ``owner`` until ``expires`` (Unix seconds),
        creating the stream (at ``created_at``) if it is new, when the lease is free,
        expired at ``now`` or already ``owner``'s; its state then, else None (another
        forwarder holds it). Creates the streams table on first use."""

    @abstractmethod
    async def save_stream(self, state: StreamState, owner: str) -> bool:
        """Write ``state`` (cursors, settings, times, error, lease) over stream
        ``state.name``'s row if ``owner`` still holds its lease; False if not (the lease
        was lost: nothing was written)."""
