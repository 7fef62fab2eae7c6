"""The store interface shared by every backend, and what all backends do alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from ._errors import StoreClosedError
from ._event import Event, Limits, NewEvent, PreparedEvent, prepare
from ._query import EventFilter, Page
from ._verify import ChainRow, VerifyReport, verify_rows
from ._writer import GroupCommitWriter


class AuditStore(ABC):
    """An append-only, hash-chained audit log.

    Use it as an async context manager (or call ``open()``/``close()``); ``close()``
    commits every append already made before it returns.
    """

    def __init__(
        self, *, limits: Limits | None = None, max_batch: int = 1024, max_pending: int = 10_000
    ) -> None:
        self.limits = limits or Limits()
        self._writer = GroupCommitWriter(
            self._commit_batch, max_batch=max_batch, max_pending=max_pending
        )
        self._opened = False

    async def open(self) -> Self:
        if not self._opened:
            await self._connect()
            self._writer.start()
            self._opened = True
        return self

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._writer.close()
            await self._disconnect()

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
        when it could not be committed.
        """
        prepared = prepare(event, self.limits)
        if not self._opened:
            raise StoreClosedError("the audit store is not open")
        return await self._writer.submit(prepared)

    async def verify(
        self, progress: Callable[[int], None] | None = None, *, max_findings: int = 1000
    ) -> VerifyReport:
        """Check the whole log (see ``auditmw._verify``); O(n) time, flat memory.

        All findings are counted; the first ``max_findings`` are listed in the report.
        """
        self._require_open()
        report = await verify_rows(self.iter_chain_rows(), progress, max_findings)
        report.warnings.extend(await self.schema_warnings())
        return report

    def _require_open(self) -> None:
        if not self._opened:
            raise StoreClosedError("the audit store is not open")

    @abstractmethod
    async def get(self, event_id: str) -> Event | None:
        """The event with this id, or None."""

    @abstractmethod
    async def count(self) -> int:
        """How many events the store holds, over all logs."""

    @abstractmethod
    def iter_chain_rows(self) -> AsyncIterator[ChainRow]:
        """Every stored row, ordered by (log, seq), as the verifier reads it."""

    @abstractmethod
    async def schema_warnings(self) -> list[str]:
        """Protections found missing (e.g. append-only triggers dropped)."""

    # Reading, for the admin app and exports (filters and cursors: auditmw._query).

    @abstractmethod
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

    @abstractmethod
    def iter_events(self, filter: EventFilter) -> AsyncIterator[Event]:
        """Every event matching ``filter`` in chain order: by log, then seq ascending.

        Streamed with flat memory, for exports. Chain order is what lets an export of the
        whole log be verified offline (``auditmw verify --jsonl``).
        """

    @abstractmethod
    async def distinct_values(self, column: str, *, limit: int = 1000) -> list[str]:
        """The distinct values of ``action``, ``resource`` or ``outcome`` in the log,
        sorted, at most ``limit`` of them (for the dashboard's choices)."""

    # Merkle leaves, for inclusion proofs (auditmw._proofs).

    @abstractmethod
    async def last_seq(self, log: str) -> int:
        """The seq of ``log``'s newest entry (its Merkle tree size); 0 when empty."""

    @abstractmethod
    def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The Merkle leaves ``[start, end)`` of ``log``: the stored hashes of its entries
        with seq ``start + 1`` to ``end``, in order, as 32-byte values."""

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _commit_batch(self, batch: list[PreparedEvent]) -> list[Event]:
        """Chain and insert ``batch`` in one transaction; all or nothing."""
