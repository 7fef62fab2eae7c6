"""The store interface shared by every backend, and what all backends do alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from ._errors import StoreClosedError
from ._event import Event, Limits, NewEvent, PreparedEvent, prepare
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

    async def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Check the whole log (see ``auditmw._verify``); O(n) time, flat memory."""
        self._require_open()
        report = await verify_rows(self.iter_chain_rows(), progress)
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

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _commit_batch(self, batch: list[PreparedEvent]) -> list[Event]:
        """Chain and insert ``batch`` in one transaction; all or nothing."""
