"""The forwarder: a stream's loop from the store to its destination.

For each log, in chain order, the events after the stream's cursor are read in batches
(``StoreBackend.events_after``: a range of the (log, seq) key, never the whole log), each
batch is delivered, and only once the destination acknowledged it does the cursor move
past it. So delivery is at least once: a forwarder killed between the acknowledgement and
the cursor's write delivers that batch again when it restarts (at most one batch twice),
and never skips an event. A filter (``EventFilter``) selects events; the cursor still
moves past those it leaves out.

One forwarder per stream delivers at a time: it holds the stream's lease
(``StreamCursor``); another one waits until the lease is given up or expires. A
temporary failure is retried with exponential backoff and full jitter (the lease is
renewed meanwhile); a permanent one is recorded in the stream's state and stops the
forwarder (``PermanentDeliveryError``), never skipping the batch. Appends never wait for
a stream: the forwarder only reads the log and writes its own row.

``StreamForwarder`` runs as its own process (``auditmw stream``) or inside an app, as a
task of its lifespan (docs/streams.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditmw._errors import StoreUnavailableError
from auditmw._stores.filters import EventFilter
from auditmw._stores.store import AuditStore
from auditmw._stores.stream_state import StreamState
from auditmw._streams.cursor import DEFAULT_LEASE_SECONDS, StreamCursor, StreamLeaseLostError
from auditmw._streams.destination import (
    DeliveryBatch,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from auditmw._streams.follow import DEFAULT_POLL_INTERVAL, AppendWaiter
from auditmw._streams.formats import Format, NativeFormat
from auditmw._streams.replay import replay_cursors, reset_stream

DEFAULT_BATCH_SIZE = 1000
STORE_RETRY_ATTEMPT = 3  # an unavailable store is tried again within 1.6 s (Backoff's)
logger = logging.getLogger("auditmw")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between tries: random in [0, min(maximum, initial * 2**attempt)] ("full
    jitter": forwarders that failed together do not retry together)."""

    initial: float = 0.2
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * 2 ** min(attempt, 30)))


class StreamForwarder:
    """Delivers ``store``'s events to ``destination`` as stream ``name``.

    ``replay_from`` (a seq or a date, ``auditmw._streams.replay``) moves the cursors back
    (or forward) there once the lease is taken, recording the reset in the log.
    ``run_once()`` delivers what is committed and returns how many events it delivered;
    ``run()`` follows new commits until cancelled. ``give_up_after`` (seconds) ends a run
    with the last ``TemporaryDeliveryError`` when a batch could not be delivered for that
    long (None: keep trying). ``on_wait`` is told, once, when another forwarder holds the
    stream and this one waits for it. ``settings`` is what the stream's state records
    about it (by default the destination, format and filter).
    """

    def __init__(
        self,
        store: AuditStore,
        destination: Destination,
        *,
        name: str = "default",
        format: Format | None = None,
        filter: EventFilter | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        backoff: Backoff | None = None,
        give_up_after: float | None = None,
        settings: dict[str, Any] | None = None,
        on_wait: Callable[[StreamState | None], None] | None = None,
        owner: str | None = None,
        replay_from: str | None = None,
    ) -> None:
        if not 1 <= batch_size <= 100_000:
            raise ValueError("batch_size must be between 1 and 100000")
        self.store = store
        self.destination = destination
        self.format = format or NativeFormat()
        self.filter = filter or EventFilter()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff()
        self.give_up_after = give_up_after
        self.settings = settings or {
            "destination": destination.describe(),
            "format": self.format.name,
            "filter": self.filter.to_params(),
        }
        self.on_wait = on_wait
        self.replay_from = replay_from  # done once, when the lease is first taken
        self.cursor = StreamCursor(store.backend, name, owner=owner, lease_seconds=lease_seconds)
        self.delivered = 0  # events delivered by this forwarder (duplicates included)
        self._open = False

    @property
    def name(self) -> str:
        return self.cursor.name

    async def run_once(self) -> int:
        """Deliver every event committed now, then release the stream."""
        before = self.delivered
        try:
            await self._hold()
            await self._deliver_pending()
        finally:
            await self._stop()
        return self.delivered - before

    async def run(self) -> None:
        """Deliver, then follow new commits, until cancelled (or a permanent error).

        A store that becomes unavailable (its server down, a lock held too long) is
        waited for, as a lost lease is: the forwarder starts again from the cursor."""
        waiter = AppendWaiter(self.store.backend, self.poll_interval)
        try:
            while True:
                pause = 0.0
                try:
                    await self._hold()
                    while True:
                        await self._deliver_pending()
                        await waiter.wait(self.cursor.lease_seconds / 3)
                        await self.cursor.renew_if_due()
                except StreamLeaseLostError:
                    logger.warning("auditmw stream %r: lease lost; waiting to take it", self.name)
                except StoreUnavailableError as exc:
                    logger.warning("auditmw stream %r: %s; trying again", self.name, exc)
                    pause = self.backoff.delay(STORE_RETRY_ATTEMPT)
                finally:
                    await self._stop()
                await asyncio.sleep(pause)
        finally:
            await waiter.close()

    async def _hold(self) -> None:
        """Take the stream's lease, waiting while another forwarder holds it."""
        told = False
        while not await self.cursor.claim():
            if not told and self.on_wait is not None:
                self.on_wait(await self.cursor.holder())
            told = True
            await asyncio.sleep(min(1.0, self.cursor.lease_seconds / 3))
        if self.settings and self.settings != self.cursor.state.settings:
            await self.cursor.save(settings=self.settings)
        if self.replay_from is not None:
            cursors = await replay_cursors(self.store, self.replay_from)
            await reset_stream(self.store, self.cursor, cursors, self.replay_from)
            self.replay_from = None

    async def _stop(self) -> None:
        try:
            await self._close_destination()
        finally:
            try:
                await self.cursor.release()
            except Exception as exc:
                logger.warning("auditmw stream %r: cannot release the lease: %s", self.name, exc)

    async def _close_destination(self) -> None:
        if self._open:
            self._open = False
            await self.destination.close()

    async def _deliver_pending(self) -> None:
        """Deliver, log by log, every event after the cursor up to the heads read now."""
        backend = self.store.backend
        for log in await backend.logs():
            while True:
                after = self.cursor.seq(log)
                head = await backend.last_seq(log)
                if head <= after:
                    break
                events = await backend.events_after(log, after, head, self.batch_size, self.filter)
                # A full batch: more may match before the head; else none does up to it.
                through = events[-1].seq if len(events) == self.batch_size else head
                if events and events[0].seq > after + 1 and not self.filter.to_params():
                    # Only a prune (retention) removes entries: they were never delivered.
                    logger.warning(
                        "auditmw stream %r: log %r seq %d to %d are no longer in the store "
                        "(removed before this stream delivered them)",
                        self.name,
                        log,
                        after + 1,
                        events[0].seq - 1,
                    )
                if events:
                    records = [self.format.encode(event) for event in events]
                    await self._deliver(DeliveryBatch(log, events, records))
                    self.delivered += len(events)
                await self.cursor.advance(log, through, delivered=bool(events))

    async def _deliver(self, batch: DeliveryBatch) -> None:
        """Deliver ``batch``, retrying temporary failures (see the module docstring)."""
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                if not self._open:
                    await self.destination.open()
                    self._open = True
                await self.destination.deliver(batch)
                return
            except PermanentDeliveryError as exc:
                await self.cursor.record_error(f"refused (stream stopped): {exc}")
                raise
            except TemporaryDeliveryError as exc:
                logger.warning("auditmw stream %r: %s (will retry)", self.name, exc)
                await self._close_destination()  # a fresh connection for the next try
                await self.cursor.record_error(f"temporary (retrying): {exc}")
                if (
                    self.give_up_after is not None
                    and time.monotonic() - started >= self.give_up_after
                ):
                    raise
            await self._sleep(self.backoff.delay(attempt))
            attempt += 1

    async def _sleep(self, seconds: float) -> None:
        """Sleep, renewing the lease meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.cursor.lease_seconds / 3))
            await self.cursor.renew_if_due()
