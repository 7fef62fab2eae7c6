"""Group commit: one writer task turns many concurrent appends into few transactions.

Callers put their prepared event in a bounded buffer (waiting when it is full: back-
pressure, never a dropped event) and await a future. The writer takes everything
buffered, commits it in one transaction and only then resolves the futures, so an
``append`` returns only after its event is durable.

When the database refuses the data of a batch (``EventRefusedError``: a constraint, a
trigger, an encoding), one bad event must not cost the others: the batch is split in
halves, recursively, until each refused event is alone, and everything else is committed,
in order. Only the callers of the refused events get the error; k bad events among n cost
O(k log n) more transactions. Any other failure (the database unreachable, locked, full)
fails every caller whose event was not committed yet, at once: retrying smaller batches
would only multiply the outage.

Each append has one deadline, ``timeout`` seconds after its call: an event still queued
when its deadline passes fails without being tried, and the batch being committed must
succeed or fail by its oldest event's deadline (``deadline``, which the store's commit
reads). So a caller waits at most ``timeout``, however long the batches before its own
kept failing. The parts of a split batch share that deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from auditmw._errors import EventRefusedError, StoreClosedError, StoreError, StoreUnavailableError
from auditmw._event import Event, PreparedEvent

CommitBatch: TypeAlias = Callable[[list[PreparedEvent]], Awaitable[list[Event]]]
# Told what each successful batch committed (e.g. the checkpointer); must not raise.
OnCommit: TypeAlias = Callable[[list[Event]], None]


class GroupCommitWriter:
    def __init__(
        self,
        commit: CommitBatch,
        *,
        max_batch: int,
        max_pending: int,
        timeout: float,
        on_commit: OnCommit | None = None,
    ) -> None:
        self._commit = commit
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._timeout = timeout
        # Two plain lists, not an asyncio.Queue: an append costs two list appends, and the
        # writer takes a whole batch with one slice instead of one get_nowait() per event
        # (the queue's bookkeeping was a visible share of the per-event cost).
        self._events: list[PreparedEvent] = []
        self._futures: list[asyncio.Future[Event]] = []
        self._deadlines: list[float] = []  # time.monotonic() values, in submission order
        # While a batch is being committed: when it must have succeeded or failed (its
        # oldest event's deadline). None between batches.
        self.deadline: float | None = None
        self._room_waiters: deque[asyncio.Future[None]] = deque()  # FIFO, as a queue's putters
        self._waiting_for_room = 0
        self._wakeup: asyncio.Future[None] | None = None  # set while the writer is idle
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """How many appends wait for the writer: buffered, or waiting for room."""
        return len(self._events) + self._waiting_for_room

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="auditmw-writer")

    async def submit(self, event: PreparedEvent) -> Event:
        if self._closing or self._task is None:
            raise StoreClosedError("the audit store is closed")
        deadline = time.monotonic() + self._timeout  # from the call: waiting for room counts
        if len(self._events) >= self._max_pending:
            await self._wait_for_room()
        future: asyncio.Future[Event] = self._task.get_loop().create_future()
        self._events.append(event)
        self._futures.append(future)
        self._deadlines.append(deadline)
        self._wake_writer()
        return await future

    async def close(self) -> None:
        """Stop taking appends, commit everything already submitted, then stop."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._wake_writer()
        await self._task

    async def _wait_for_room(self) -> None:
        """Back-pressure: wait while ``max_pending`` events wait for the writer."""
        self._waiting_for_room += 1
        try:
            while len(self._events) >= self._max_pending:
                room = self._task_loop().create_future()
                self._room_waiters.append(room)
                try:
                    await room
                except asyncio.CancelledError:
                    if room.done() and not room.cancelled():
                        self._make_room(1)  # woken, then cancelled: pass the turn on
                    raise
        finally:
            self._waiting_for_room -= 1
            if self._closing:
                self._wake_writer()  # it may be waiting for this caller before it stops

    def _make_room(self, count: int) -> None:
        while count and self._room_waiters:
            room = self._room_waiters.popleft()
            if not room.done():
                room.set_result(None)
                count -= 1

    def _wake_writer(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _task_loop(self) -> asyncio.AbstractEventLoop:
        assert self._task is not None
        return self._task.get_loop()

    async def _run(self) -> None:
        while True:
            if not self._events:
                # Callers already past the closed check (waiting for room) still get in.
                if self._closing and not self._waiting_for_room:
                    return
                self._wakeup = self._task_loop().create_future()
                await self._wakeup
                self._wakeup = None
                continue
            size = self._max_batch
            events, futures = self._events[:size], self._futures[:size]
            deadlines = self._deadlines[:size]
            del self._events[:size], self._futures[:size], self._deadlines[:size]
            self._make_room(len(events))
            if min(deadlines) <= time.monotonic():
                events, futures, deadlines = self._drop_expired(events, futures, deadlines)
                if not events:
                    continue
            self.deadline = min(deadlines)
            try:
                await self._commit_batch(events, futures)
            finally:
                self.deadline = None

    def _drop_expired(
        self,
        events: list[PreparedEvent],
        futures: list[asyncio.Future[Event]],
        deadlines: list[float],
    ) -> tuple[list[PreparedEvent], list[asyncio.Future[Event]], list[float]]:
        """Fail the events whose deadline passed while they were queued (a new attempt
        would keep their callers waiting past it; nothing of them was tried); the rest."""
        now = time.monotonic()
        kept: tuple[list[PreparedEvent], list[asyncio.Future[Event]], list[float]] = ([], [], [])
        for event, future, deadline in zip(events, futures, deadlines, strict=True):
            if deadline > now:
                kept[0].append(event)
                kept[1].append(future)
                kept[2].append(deadline)
            elif not future.done():
                message = f"the audit store did not commit the event within {self._timeout:g} s"
                future.set_exception(StoreUnavailableError(message))
        return kept

    async def _commit_batch(
        self, events: list[PreparedEvent], futures: list[asyncio.Future[Event]]
    ) -> None:
        """Commit ``events`` and answer their callers, isolating refused events (see the
        module docstring)."""
        parts = [(0, len(events))]  # [start, end) ranges left to commit; the next on top
        while parts:
            start, end = parts.pop()
            try:
                committed = await self._commit(events[start:end])
            except EventRefusedError as exc:
                done = len(exc.committed)  # a prefix the database kept all the same
                self._answer(futures[start : start + done], exc.committed)
                start += done
                if end - start > 1:
                    middle = (start + end) // 2
                    parts += [(middle, end), (start, middle)]  # the first half first
                elif end > start:
                    _fail(futures[start:end], exc)
                continue
            except Exception as exc:
                # Parts are committed in order: everything from ``start`` on is left.
                _fail(futures[start:], exc)
                return
            self._answer(futures[start:end], committed)

    def _answer(self, futures: list[asyncio.Future[Event]], committed: list[Event]) -> None:
        if not committed:
            return
        for future, event in zip(futures, committed, strict=True):
            if not future.done():  # a caller cancelled after queueing: committed anyway
                future.set_result(event)
        if self._on_commit is not None:
            self._on_commit(committed)


def _fail(futures: list[asyncio.Future[Event]], exc: Exception) -> None:
    error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
    for future in futures:
        if not future.done():
            future.set_exception(_copy_error(error, exc))


def _copy_error(error: StoreError, cause: BaseException) -> StoreError:
    """A fresh exception per caller, so tracebacks of one batch do not pile up."""
    copy = type(error)(*error.args)
    copy.__cause__ = cause
    return copy
