"""Issuing signed checkpoints from a store (docs/checkpoints.md, "Issuing").

A store opened with ``checkpointing=Checkpointing(key, ...)`` tells its ``Checkpointer``
after each committed batch how many entries each log got (one cheap call, outside the
batch's transaction). The checkpointer issues a checkpoint for a log when ``every``
entries accumulated, when ``interval`` seconds passed since its first entry not yet
covered, and when the store closes; and, right after it records a new key in the log
(``checkpoint.key_rotated``), one covering that record, so that the store holds a
checkpoint by every key its log names (``auditmw verify`` reports a record without one).
Issuing happens in a task of its own:

1. read the log's newest checkpoint **signed by this key** and its stored frontier
   (the right edge of the Merkle tree at that size);
2. extend the frontier with the leaves written since: O(new entries), never the whole log;
3. sign the checkpoint, store it in its own transaction, and only then hand it to the sink.

Each issuer works from what the database holds, so several processes sharing a store all
issue correct checkpoints. A failure is logged, counted and retried later; it never fails
an append.

The issuer never signs a tree that contradicts one it signed before: it extends the
frontier of its own last checkpoint. If that frontier was damaged it is rebuilt from the
leaves, and used only if they still give the signed root; otherwise (the log was rewritten
or truncated under a checkpoint) it stops issuing for that log and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Protocol, TypeAlias

from auditmw._errors import StoreError
from auditmw._event import Event, NewEvent
from auditmw._retention.cuts import CutRecord, latest_cuts
from auditmw._stores.cursor import Keyset
from auditmw._stores.filters import EventFilter
from auditmw._stores.rows import CheckpointRow, StoredCheckpoint
from auditmw._transparency.key_record import KEY_RESOURCE, KEY_ROTATED_ACTION
from auditmw._transparency.merkle import Frontier
from auditmw._transparency.sinks import Sink

if TYPE_CHECKING:
    from auditmw._transparency.notes import SigningKey, VerifierKey

logger = logging.getLogger("auditmw")

DEFAULT_KEY_ENV = "AUDITMW_SIGNING_KEY"
# How many of a log's newest checkpoints are tried as the base to extend: others' (a
# rotated key's) are skipped; past these the tree is computed from all the leaves.
RECENT_CHECKPOINTS = 8
_LOG_LOG = attrgetter("log")


class CheckpointStorage(Protocol):
    """What the checkpointer reads and writes: a store's backend
    (``auditmw._stores.backend.StoreBackend``) has all of it."""

    async def logs(self) -> list[str]: ...

    async def last_seq(self, log: str) -> int: ...

    def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]: ...

    async def page(
        self, filter: EventFilter, limit: int, position: Keyset | None, offset: int
    ) -> tuple[list[Event], Keyset | None]: ...

    async def recent_checkpoints(self, log: str, limit: int) -> list[CheckpointRow]: ...

    async def insert_checkpoint(self, row: CheckpointRow) -> bool: ...

    async def cut_rows(self) -> list[tuple[object, ...]]: ...


# Appends one of the store's own events (the key record), even while the store closes.
AppendEvent: TypeAlias = Callable[[NewEvent], Awaitable[Event]]


class CheckpointingError(StoreError):
    """A checkpoint could not be issued because the log contradicts one already signed."""


@dataclass(frozen=True, slots=True)
class Checkpointing:
    """Signed checkpoints for a store: pass as ``checkpointing=`` to a store or
    ``open_store``.

    - ``key``: the signing key (``load_signing_key(path)``, ``signing_key_from_env()``);
      it stays in memory, never in the store.
    - ``every``: issue when a log got this many entries since its last checkpoint
      (None: never by count).
    - ``interval``: issue when a log's oldest entry not covered is this many seconds old
      (None: never by time). Closing the store always issues.
    - ``sink``: called with ``(log, size, note)`` after each checkpoint committed, e.g.
      ``DirectorySink(path)``; plain or async. Keep it quick, or make it async.
    - ``origin_prefix``: the checkpoints' origin is ``<prefix>/<log, percent-encoded>``;
      the key's name by default (C2SP: the origin should extend the key name).
    """

    key: SigningKey
    every: int | None = 1000
    interval: float | None = 60.0
    sink: Sink | None = None
    origin_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise ValueError("every must be a positive number of entries, or None")
        if self.interval is not None and not self.interval > 0:
            raise ValueError("interval must be a positive number of seconds, or None")
        if self.origin_prefix is not None and not self.origin_prefix:
            raise ValueError("origin_prefix must not be empty")

    @property
    def prefix(self) -> str:
        return self.origin_prefix if self.origin_prefix is not None else self.key.name

    def __repr__(self) -> str:  # the key's repr never shows the seed; say so explicitly
        return (
            f"Checkpointing(key={self.key!r}, every={self.every}, interval={self.interval}, "
            f"sink={self.sink!r}, prefix={self.prefix!r})"
        )


@dataclass(slots=True)
class CheckpointStats:
    """Counters for monitoring (``store.checkpoint_stats``)."""

    issued: int = 0  # checkpoints stored by this process
    failures: int = 0  # issue attempts that failed (retried later)
    sink_failures: int = 0  # checkpoints stored but not delivered to the sink
    last_error: str | None = None


def signing_key_from_env(var: str = DEFAULT_KEY_ENV) -> SigningKey:
    """The signing key in the environment variable ``var``: either the key itself
    (``PRIVATE+KEY+...``, as ``auditmw keygen`` writes it) or the path of a file holding it.
    Raises ``ValueError`` when the variable is unset or empty."""
    from auditmw._transparency.notes import SigningKey, load_signing_key

    value = os.environ.get(var, "").strip()
    if not value:
        raise ValueError(f"the environment variable {var} holds no signing key")
    if value.startswith("PRIVATE+KEY+"):
        return SigningKey.parse(value)
    return load_signing_key(value)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Checkpointer:
    """Issues the checkpoints of one open store (see the module docstring)."""

    def __init__(
        self, storage: CheckpointStorage, append: AppendEvent, config: Checkpointing
    ) -> None:
        self._storage = storage
        self._append = append
        self._config = config
        self.stats = CheckpointStats()
        self._verifier: VerifierKey | None = None
        # Entries committed per log and not yet covered, and since when (loop time).
        self._pending: dict[str, int] = {}
        self._since: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}  # after a failure: not before then
        # Logs holding a key record no checkpoint covers yet: due now, whatever the count.
        self._key_records_due: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()  # one issuing round at a time
        self._key_recorded = False

    @property
    def verifier(self) -> VerifierKey:
        if self._verifier is None:
            self._verifier = self._config.key.verifier
        return self._verifier

    # --- lifecycle (called by the store) ------------------------------------------------

    async def start(self) -> None:
        """After the store opened: record the key if new, note the logs left behind by an
        earlier run, and start the background task."""
        self.verifier  # noqa: B018 (derives the public key now: a bad key fails at open)
        self._wake = asyncio.Event()
        self._stopping = False
        try:
            await self._ensure_key_recorded()
            await self._note_logs_behind()
        except Exception as exc:  # retried when issuing
            self._failed(f"could not prepare checkpointing: {exc}", exc)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="auditmw-checkpointer"
        )

    async def stop(self) -> None:
        """Before the writer drains: stop the background task, and record the key while
        appends are still taken (the last checkpoint must not precede that record)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self._ensure_key_recorded()
        except Exception as exc:
            self._failed(f"could not record the checkpoint key: {exc}", exc)

    async def close(self) -> None:
        """After the writer drained: one last checkpoint of every log with new entries."""
        if self._task is not None:
            await self.stop()
        due = [log for log, count in self._pending.items() if count > 0]
        if due:
            await self._issue_logs(due, strict=False)

    def committed(self, events: list[Event]) -> None:
        """The writer committed ``events``. Cheap: counts, and wakes the task when due.

        Never raises: the batch is committed, and an exception here would make the
        writer report it failed (and its callers append it again)."""
        try:
            self._count(events)
        except Exception as exc:  # pragma: no cover (a bug; the next issue catches up)
            logger.exception("checkpointing lost count of a batch: %s", exc)

    def _count(self, events: list[Event]) -> None:
        if not events:
            return
        now = asyncio.get_running_loop().time()
        wake = False
        every = self._config.every
        for log, count in Counter(map(_LOG_LOG, events)).items():
            before = self._pending.get(log, 0)
            self._pending[log] = before + count
            if before == 0:
                self._since[log] = now
                wake = wake or self._config.interval is not None  # a new deadline
            if every is not None and before < every <= before + count:
                wake = wake or now >= self._retry_at.get(log, 0.0)
        if wake and self._wake is not None:
            self._wake.set()

    async def issue_all(self) -> list[StoredCheckpoint]:
        """Issue for every log of the store now; failures raise."""
        return await self._issue_logs(await self._storage.logs(), strict=True)

    # --- when to issue ---------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            deadline = self._next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._stopping:
                return
            try:
                due = self._due(loop.time())
                if due:
                    await self._issue_logs(due, strict=False)
            except Exception as exc:  # pragma: no cover (failures are handled inside)
                self._failed(f"checkpointing failed: {exc}", exc)
                await asyncio.sleep(1.0)  # no busy loop on a persistent bug

    def _due(self, now: float) -> list[str]:
        every, interval = self._config.every, self._config.interval
        due = [log for log in sorted(self._key_records_due) if now >= self._retry_at.get(log, 0.0)]
        for log, count in self._pending.items():
            if count <= 0 or now < self._retry_at.get(log, 0.0) or log in self._key_records_due:
                continue
            if (every is not None and count >= every) or (
                interval is not None and now >= self._since[log] + interval
            ):
                due.append(log)
        return due

    def _next_deadline(self) -> float | None:
        """When the next log falls due (loop time), or None: wait for a commit."""
        every, interval = self._config.every, self._config.interval
        deadlines = [self._retry_at.get(log, 0.0) for log in self._key_records_due]
        for log, count in self._pending.items():
            if count <= 0:
                continue
            retry = self._retry_at.get(log, 0.0)
            if every is not None and count >= every:
                deadlines.append(retry)  # due now, or when the back-off ends
            elif interval is not None:
                deadlines.append(max(self._since[log] + interval, retry))
        return min(deadlines, default=None)

    # --- issuing -----------------------------------------------------------------------------

    async def _issue_logs(self, logs: list[str], *, strict: bool) -> list[StoredCheckpoint]:
        """Issue for each of ``logs``; with ``strict`` a failure raises, else it is logged,
        counted and the log retried after a back-off."""
        issued: list[StoredCheckpoint] = []
        async with self._lock:
            try:
                await self._ensure_key_recorded()
            except Exception as exc:
                self._failed(f"could not record the checkpoint key: {exc}", exc)
                for log in logs:
                    self._back_off(log, 0)
                if strict:
                    raise
                return issued
            logs = [*logs, *sorted(self._key_records_due.difference(logs))]  # a record just made
            for log in logs:
                # Taken before reading the log: entries committed meanwhile count again
                # (at worst one more round that finds nothing new).
                taken = self._pending.pop(log, 0)
                self._since.pop(log, None)
                try:
                    stored = await self._issue(log)
                except Exception as exc:
                    self._failed(f"could not issue a checkpoint of log {log!r}: {exc}", exc)
                    self._back_off(log, taken)
                    if strict:
                        raise
                    continue
                self._retry_at.pop(log, None)
                self._key_records_due.discard(log)
                if stored is not None:
                    self.stats.issued += 1
                    issued.append(stored)
                    await self._publish(stored)
        return issued

    async def _issue(self, log: str) -> StoredCheckpoint | None:
        """Sign and store the checkpoint of ``log`` as it is now; None when its newest
        checkpoint (by this key) already covers it, or another issuer stored the same."""
        from auditmw._transparency.notes import Checkpoint, log_origin, sign_checkpoint

        head = await self._storage.last_seq(log)
        frontier = await self._base(log, head)
        cut = await self._cut(log)
        if cut is not None and frontier.size < cut.size:
            frontier = cut  # pruned since: the leaves before the cut are only its frontier
        if frontier.size == head:
            return None
        async for leaf in self._storage.leaf_hashes(log, frontier.size, head):
            frontier.append(leaf)
        if frontier.size != head:  # the store returned a gap: never sign a guess
            raise StoreError(f"log {log!r}: read {frontier.size} leaves of {head}")
        root = frontier.root()
        checkpoint = Checkpoint(log_origin(self._config.prefix, log), head, root)
        note = sign_checkpoint(checkpoint, self._config.key)
        stored = StoredCheckpoint(log, head, root, note, _now())
        row = CheckpointRow(stored, frontier.to_bytes(), self.verifier.encode())
        return stored if await self._storage.insert_checkpoint(row) else None

    async def _cut(self, log: str) -> Frontier | None:
        """The frontier of ``log``'s pruned prefix (docs/retention.md); None if unpruned."""
        records = [CutRecord.from_row(row) for row in await self._storage.cut_rows()]
        cut = latest_cuts(records).get(log)
        return None if cut is None else cut.frontier.copy()

    async def _base(self, log: str, head: int) -> Frontier:
        """The frontier to extend: that of the newest checkpoint of ``log`` this key
        signed, checked against its signed root; the empty tree when there is none."""
        rows = await self._storage.recent_checkpoints(log, RECENT_CHECKPOINTS)
        for row in rows:
            if not self._signed_by_us(log, row):
                continue  # another key's (rotated), or a forgery: not a base
            size, root = row.checkpoint.size, row.checkpoint.root
            if size > head:
                raise CheckpointingError(
                    f"log {log!r} has {head} entries, but a checkpoint signed by this key "
                    f"covers {size}: its tail was removed; run `auditmw verify`"
                )
            frontier = _frontier_or_none(row.frontier)
            if frontier is not None and frontier.size == size and frontier.root() == root:
                return frontier
            logger.warning(
                "log %r: the stored frontier of checkpoint %d is damaged; rebuilding it "
                "from the log's entries",
                log,
                size,
            )
            frontier = Frontier()
            async for leaf in self._storage.leaf_hashes(log, 0, size):
                frontier.append(leaf)
            if frontier.size != size or frontier.root() != root:
                raise CheckpointingError(
                    f"the first {size} entries of log {log!r} no longer give the root of the "
                    "checkpoint this key signed for them: the log was rewritten; "
                    "run `auditmw verify`"
                )
            return frontier
        if rows:
            logger.info(
                "log %r: no checkpoint signed by %s yet; computing its tree from all entries",
                log,
                self.verifier.name,
            )
        return Frontier()

    def _signed_by_us(self, log: str, row: CheckpointRow) -> bool:
        """Whether the row's note is this key's valid checkpoint of ``log`` and says what
        the row's size and root columns say."""
        from auditmw._transparency.notes import CheckpointError, log_origin, open_checkpoint

        try:
            opened = open_checkpoint(
                row.checkpoint.note,
                [self.verifier],
                origin=log_origin(self._config.prefix, log),
            )
        except CheckpointError:
            return False
        checkpoint = opened.checkpoint
        return checkpoint.size == row.checkpoint.size and checkpoint.root == row.checkpoint.root

    async def _publish(self, stored: StoredCheckpoint) -> None:
        """Hand a committed checkpoint to the sink; a failure is logged and counted."""
        sink = self._config.sink
        if sink is None:
            return
        try:
            result = sink(stored.log, stored.size, stored.note)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.stats.sink_failures += 1
            self.stats.last_error = f"sink: {exc}"
            logger.error(
                "checkpoint of log %r at size %d is stored but the sink failed: %s",
                stored.log,
                stored.size,
                exc,
                exc_info=exc,
            )

    # --- the signing key on record -------------------------------------------------------------

    async def _ensure_key_recorded(self) -> None:
        """Append ``checkpoint.key_rotated`` when the key that signs is not the one the log
        last recorded (old_key null for the first key), before any checkpoint by it."""
        if self._key_recorded:
            return
        current = self.verifier.encode()
        newest, _ = await self._storage.page(EventFilter(action=KEY_ROTATED_ACTION), 1, None, 0)
        recorded = None
        if newest and isinstance(newest[0].details, dict):
            value = newest[0].details.get("new_key")
            recorded = value if isinstance(value, str) else None
        if recorded != current:
            record = await self._append(
                NewEvent(
                    action=KEY_ROTATED_ACTION,
                    resource=KEY_RESOURCE,
                    resource_id=f"{self.verifier.name}+{self.verifier.key_id.hex()}",
                    details={"old_key": recorded, "new_key": current},
                )
            )
            logger.info("checkpoint signing key recorded: %s (was %s)", current, recorded)
            # The record is anchored at once by the key it names: a record that no stored
            # checkpoint by that key covers is then evidence that checkpoints were removed.
            self._key_records_due.add(record.log)
            if self._wake is not None:
                self._wake.set()
        self._key_recorded = True

    async def _note_logs_behind(self) -> None:
        """Logs whose entries outrun their newest checkpoint (an earlier run stopped
        without closing the store) are due like fresh entries: by count, time or close."""
        now = asyncio.get_running_loop().time()
        for log in await self._storage.logs():
            head = await self._storage.last_seq(log)
            rows = await self._storage.recent_checkpoints(log, 1)
            behind = head - (rows[0].checkpoint.size if rows else 0)
            if behind > 0 and log not in self._pending:
                self._pending[log] = behind
                self._since[log] = now
        if self._pending and self._wake is not None:
            self._wake.set()

    # --- failures ----------------------------------------------------------------------------

    def _failed(self, message: str, exc: BaseException) -> None:
        self.stats.failures += 1
        self.stats.last_error = message
        logger.error("%s", message, exc_info=exc)

    def _back_off(self, log: str, count: int) -> None:
        """Keep the log due, but retry only after ``interval`` (60 s without one)."""
        now = asyncio.get_running_loop().time()
        self._pending[log] = self._pending.get(log, 0) + count
        self._since.setdefault(log, now)
        self._retry_at[log] = now + (self._config.interval or 60.0)


def _frontier_or_none(data: bytes) -> Frontier | None:
    try:
        return Frontier.from_bytes(bytes(data))
    except ValueError:
        return None
