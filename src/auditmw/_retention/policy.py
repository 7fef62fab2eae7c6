"""A retention policy: prune on a schedule inside the application (docs/retention.md).

Given to a store (``retention=RetentionPolicy(...)``), it starts a task when the store
opens and stops it when the store closes. Each run prunes the entries older than
``keep`` — archived first into ``archive_dir`` (a file named by the cut's time), or
discarded when ``discard`` — then waits ``every``. A run refused by a legal hold, or by
a prune that another worker ran at the same time, is logged and retried next time; any
other error is logged too: the application never sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from auditmw._errors import PruneRefusedError
from auditmw._retention.archive_format import ArchiveHeader
from auditmw._retention.prune import PruneReport

logger = logging.getLogger("auditmw")
POLICY_ACTOR = "retention-policy"  # the user id of the prunes a policy makes


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Keep ``keep`` of history; prune what is older every ``every``, archiving it into
    ``archive_dir`` first, or discarding it (``discard=True``: deliberate, recorded as
    such). ``clock`` tells the time (tests inject one)."""

    keep: timedelta
    archive_dir: Path | None = None
    discard: bool = False
    every: timedelta = timedelta(hours=24)
    clock: Callable[[], datetime] = field(default=_now, repr=False)

    def __post_init__(self) -> None:
        if (self.archive_dir is None) != self.discard:
            raise ValueError("give archive_dir, or archive_dir=None with discard=True")
        if self.keep <= timedelta(0) or self.every <= timedelta(0):
            raise ValueError("keep and every must be positive")


class PolicyStore(Protocol):
    """What a policy needs of its store (``AuditStore`` has it)."""

    async def archive(
        self, *, before: datetime | str, output: str | os.PathLike[str]
    ) -> ArchiveHeader: ...

    async def prune(
        self,
        *,
        before: datetime | str,
        archive: str | os.PathLike[str] | None,
        discard: bool = False,
        actor: str | None = None,
    ) -> PruneReport: ...


@dataclass(slots=True)
class RetentionStats:
    """How the policy's runs went (for monitoring): ``runs``, ``pruned`` (entries),
    ``refused`` (a hold, or another worker's prune), ``failures`` and the last error."""

    runs: int = 0
    pruned: int = 0
    refused: int = 0
    failures: int = 0
    last_error: str | None = None


class RetentionScheduler:
    """Runs ``policy`` for ``store`` in a task between ``start()`` and ``stop()``."""

    def __init__(self, store: PolicyStore, policy: RetentionPolicy) -> None:
        self._store = store
        self.policy = policy
        self.stats = RetentionStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="auditmw-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.policy.every.total_seconds())

    async def run_once(self) -> PruneReport | None:
        """One run of the policy; never raises (but for cancellation)."""
        try:
            report = await self._prune()
        except PruneRefusedError as exc:
            self.stats.refused += 1
            logger.info("retention: prune refused, retried next time: %s", exc)
            return None
        except Exception as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            logger.exception("retention: prune failed, retried next time: %s", exc)
            return None
        finally:
            self.stats.runs += 1
        if report is not None:
            self.stats.pruned += report.entries
            if report.moved:
                logger.info("retention: %s", report.line())
        return report

    async def _prune(self) -> PruneReport | None:
        policy = self.policy
        before = policy.clock().astimezone(UTC) - policy.keep
        if policy.archive_dir is None:
            return await self._store.prune(
                before=before, archive=None, discard=True, actor=POLICY_ACTOR
            )
        path = policy.archive_dir / f"auditmw-before-{before:%Y%m%dT%H%M%S%fZ}.jsonl"
        if await asyncio.to_thread(path.exists):
            # Written by an earlier run at this very cut (the clock did not move on, or
            # that run stopped before its prune): prune with it, or nothing is left to.
            return await self._store.prune(before=before, archive=path, actor=POLICY_ACTOR)
        header = await self._store.archive(before=before, output=path)
        if not header.logs:
            await asyncio.to_thread(path.unlink)  # nothing that old: no archive to keep
            return None
        try:
            return await self._store.prune(before=before, archive=path, actor=POLICY_ACTOR)
        except PruneRefusedError:
            await asyncio.to_thread(path.unlink)  # this run's, and not the archive of a prune
            raise
