"""Group commit: one writer task turns many concurrent appends into few transactions.

Callers put their prepared event on a bounded queue (waiting when it is full: back-
pressure, never a dropped event) and await a future. The writer takes everything
queued, commits it in one transaction and only then resolves the futures, so an
``append`` returns only after its event is durable. A failed commit fails every
caller of that batch; nothing of it was stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from ._errors import StoreClosedError, StoreError
from ._event import Event, PreparedEvent

CommitBatch: TypeAlias = Callable[[list[PreparedEvent]], Awaitable[list[Event]]]
_Item: TypeAlias = tuple[PreparedEvent, "asyncio.Future[Event]"] | None  # None: stop


class GroupCommitWriter:
    def __init__(self, commit: CommitBatch, *, max_batch: int, max_pending: int) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="auditmw-writer")

    async def submit(self, event: PreparedEvent) -> Event:
        if self._closing or self._task is None:
            raise StoreClosedError("the audit store is closed")
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, future))
        return await future

    async def close(self) -> None:
        """Stop taking appends, commit everything already queued, then stop."""
        if self._task is None or self._closing:
            return
        self._closing = True
        await self._queue.put(None)
        await self._task

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[tuple[PreparedEvent, asyncio.Future[Event]]]) -> None:
        try:
            events = await self._commit([event for event, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
                    future.set_exception(_copy_error(error, exc))
            return
        for (_, future), event in zip(batch, events, strict=True):
            if not future.done():  # a caller cancelled after queueing: committed anyway
                future.set_result(event)


def _copy_error(error: StoreError, cause: BaseException) -> StoreError:
    """A fresh exception per caller, so tracebacks of one batch do not pile up."""
    copy = type(error)(*error.args)
    copy.__cause__ = cause
    return copy
