"""Group commit: many concurrent appends become few transactions.

Callers put their prepared event in a bounded buffer (waiting when it is full: back-
pressure, never a dropped event) and await a future. A writer takes everything
buffered, commits it in one transaction and only then resolves the futures, so an
``append`` returns only after its event is durable. A failed commit fails every
caller of that batch; nothing of it was stored.

Two writers share that contract:

- ``GroupCommitWriter`` commits with a coroutine (PostgreSQL, asyncpg): a writer task
  on the event loop.
- ``ThreadedGroupCommitWriter`` commits with a blocking function on the store's own
  thread (SQLite). That thread takes the next batch itself as soon as a commit ends,
  so a busy event loop never stands between two commits: with a task on the loop,
  each batch waited for two loop iterations (the commit's completion, then the task's
  turn), each as long as the request handling queued before it, and under load the
  loop sat idle waiting for commits that had not started.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias

from ._errors import StoreClosedError, StoreError
from ._event import Event, PreparedEvent

CommitBatch: TypeAlias = Callable[[list[PreparedEvent]], Awaitable[list[Event]]]
BlockingCommitBatch: TypeAlias = Callable[[list[PreparedEvent]], list[Event]]
# Told, on the event loop, what each successful batch committed (e.g. the checkpointer).
OnCommit: TypeAlias = Callable[[list[Event]], None]
# Runs a job on the store's thread (e.g. ThreadPoolExecutor.submit of a 1-thread pool).
RunOnThread: TypeAlias = Callable[[Callable[[], None]], object]
# After this many batches in a row the drain gives the store's thread back, so other
# jobs queued on it (opening, statistics, checkpoints) are not starved by a steady load.
BATCHES_PER_TURN = 16


class Writer(Protocol):
    def start(self) -> None: ...

    async def submit(self, event: PreparedEvent) -> Event: ...

    async def close(self) -> None: ...


class _Buffer:
    """The pending events, their callers' futures and back-pressure; loop side."""

    def __init__(self, *, max_batch: int, max_pending: int, on_commit: OnCommit | None) -> None:
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._max_pending = max_pending
        # Two plain lists, not an asyncio.Queue: an append costs two list appends, and a
        # writer takes a whole batch with one slice instead of one get_nowait() per event.
        self._events: list[PreparedEvent] = []
        self._futures: list[asyncio.Future[Event]] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()  # FIFO, as a queue's
        self._waiting_for_room = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def _check_open(self) -> asyncio.AbstractEventLoop:
        if self._closing or self._loop is None:
            raise StoreClosedError("the audit store is closed")
        return self._loop

    def _take_batch(self) -> tuple[list[PreparedEvent], list[asyncio.Future[Event]]]:
        size = self._max_batch
        events, futures = self._events[:size], self._futures[:size]
        del self._events[:size], self._futures[:size]
        return events, futures

    async def _wait_for_room(self, loop: asyncio.AbstractEventLoop) -> None:
        """Back-pressure: wait while ``max_pending`` events wait for the writer."""
        self._waiting_for_room += 1
        try:
            while len(self._events) >= self._max_pending:
                room = loop.create_future()
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
                self._on_caller_left()

    def _on_caller_left(self) -> None:
        """A caller waiting for room went away while closing (the writer may wait)."""

    def _make_room(self, count: int) -> None:
        while count and self._room_waiters:
            room = self._room_waiters.popleft()
            if not room.done():
                room.set_result(None)
                count -= 1

    def _settle(
        self, futures: list[asyncio.Future[Event]], committed: list[Event] | BaseException
    ) -> None:
        if isinstance(committed, BaseException):
            error = committed if isinstance(committed, StoreError) else StoreError(str(committed))
            for future in futures:
                if not future.done():
                    future.set_exception(_copy_error(error, committed))
            return
        for future, event in zip(futures, committed, strict=True):
            if not future.done():  # a caller cancelled after queueing: committed anyway
                future.set_result(event)
        if self._on_commit is not None:
            self._on_commit(committed)


class GroupCommitWriter(_Buffer):
    """Group commit with a coroutine, by one writer task on the event loop."""

    def __init__(
        self,
        commit: CommitBatch,
        *,
        max_batch: int,
        max_pending: int,
        on_commit: OnCommit | None = None,
    ) -> None:
        super().__init__(max_batch=max_batch, max_pending=max_pending, on_commit=on_commit)
        self._commit = commit
        self._wakeup: asyncio.Future[None] | None = None  # set while the writer is idle
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="auditmw-writer")

    async def submit(self, event: PreparedEvent) -> Event:
        loop = self._check_open()
        if len(self._events) >= self._max_pending:
            await self._wait_for_room(loop)
        future: asyncio.Future[Event] = loop.create_future()
        self._events.append(event)
        self._futures.append(future)
        self._wake_writer()
        return await future

    async def close(self) -> None:
        """Stop taking appends, commit everything already submitted, then stop."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._wake_writer()
        await self._task

    def _on_caller_left(self) -> None:
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        assert self._loop is not None
        while True:
            if not self._events:
                # Callers already past the closed check (waiting for room) still get in.
                if self._closing and not self._waiting_for_room:
                    return
                self._wakeup = self._loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            events, futures = self._take_batch()
            self._make_room(len(events))
            try:
                committed: list[Event] | BaseException = await self._commit(events)
            except Exception as exc:
                committed = exc
            self._settle(futures, committed)


class ThreadedGroupCommitWriter(_Buffer):
    """Group commit with a blocking function, on the store's thread (see the module
    docstring). The loop and that thread share the buffer under a lock."""

    def __init__(
        self,
        commit: BlockingCommitBatch,
        run_on_thread: RunOnThread,
        *,
        max_batch: int,
        max_pending: int,
        on_commit: OnCommit | None = None,
    ) -> None:
        super().__init__(max_batch=max_batch, max_pending=max_pending, on_commit=on_commit)
        self._commit = commit
        self._run_on_thread = run_on_thread
        self._lock = threading.Lock()
        self._draining = False  # a drain job is queued or running on the store's thread
        self._idle: asyncio.Future[None] | None = None  # close() waits on it

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def submit(self, event: PreparedEvent) -> Event:
        loop = self._check_open()
        if len(self._events) >= self._max_pending:
            await self._wait_for_room(loop)
        future: asyncio.Future[Event] = loop.create_future()
        with self._lock:
            self._events.append(event)
            self._futures.append(future)
            start_drain = not self._draining
            self._draining = True
        if start_drain:
            self._run_on_thread(self._drain)
        return await future

    async def close(self) -> None:
        """Stop taking appends, commit everything already submitted, then return."""
        if self._loop is None or self._closing:
            return
        self._closing = True
        while True:
            idle = self._loop.create_future()
            self._idle = idle
            with self._lock:
                busy = self._draining
            if not busy and not self._waiting_for_room:
                self._idle = None
                return
            await idle  # the drain finished, or a caller waiting for room left

    def _on_caller_left(self) -> None:
        self._wake_closer()

    def _wake_closer(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _drain(self) -> None:
        """On the store's thread: commit batches until nothing is pending."""
        loop = self._loop
        assert loop is not None
        for _ in range(BATCHES_PER_TURN):
            with self._lock:
                events, futures = self._take_batch()
                if not events:
                    self._draining = False
                    break
            try:
                committed: list[Event] | BaseException = self._commit(events)
            except Exception as exc:
                committed = exc
            loop.call_soon_threadsafe(self._settle_batch, futures, committed)
        else:
            self._run_on_thread(self._drain)  # more may be pending: queue another turn
            return
        loop.call_soon_threadsafe(self._wake_closer)

    def _settle_batch(
        self, futures: list[asyncio.Future[Event]], committed: list[Event] | BaseException
    ) -> None:
        self._make_room(len(futures))
        self._settle(futures, committed)


def _copy_error(error: StoreError, cause: BaseException) -> StoreError:
    """A fresh exception per caller, so tracebacks of one batch do not pile up."""
    copy = type(error)(*error.args)
    copy.__cause__ = cause
    return copy
