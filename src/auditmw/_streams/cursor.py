"""A stream's durable position and lease, as one forwarder holds them: the store's row of
the stream (``auditmw._stores.stream_state``) behind a small API.

Only the lease holder writes the row: every write names the owner and fails when the
lease went to another forwarder (``StreamLeaseLostError``), so two forwarders never both
move one cursor. Every write renews the lease for ``lease_seconds``; a forwarder that
stops writing (killed, frozen, cut off) loses it once that passed, and a waiting one takes
over from the cursor it left: events after it are delivered again (at least once), none
is skipped.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from auditmw._errors import AuditError
from auditmw._event import utc_timestamp
from auditmw._stores.backend import StoreBackend
from auditmw._stores.stream_state import StreamState

DEFAULT_LEASE_SECONDS = 15.0
MAX_ERROR_CHARS = 2000


class StreamLeaseLostError(AuditError):
    """Another forwarder took the stream's lease: this one must stop delivering."""


def new_owner() -> str:
    """An owner id naming this process (host and pid) and, randomly, this forwarder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class StreamCursor:
    """Stream ``name``'s state in ``backend``, held by ``owner`` once ``claim`` succeeded."""

    def __init__(
        self,
        backend: StoreBackend,
        name: str,
        *,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not name or len(name) > 200 or not name.isprintable():
            raise ValueError("a stream name is 1 to 200 printable characters")
        if not lease_seconds > 0:
            raise ValueError("lease_seconds must be a positive number of seconds")
        self.backend = backend
        self.name = name
        self.owner = owner or new_owner()
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._state: StreamState | None = None
        self.saved_at = 0.0  # when the lease was last renewed (clock time)

    @property
    def state(self) -> StreamState:
        if self._state is None:
            raise StreamLeaseLostError(f"stream {self.name!r} is not claimed")
        return self._state

    def seq(self, log: str) -> int:
        """The last seq of ``log`` delivered (0: none)."""
        return self.state.cursors.get(log, 0)

    async def claim(self) -> bool:
        """Take the lease (creating the stream if new); False while another holds it."""
        now = self._clock()
        state = await self.backend.claim_stream(
            self.name, self.owner, now, now + self.lease_seconds, utc_timestamp()
        )
        if state is not None:
            self._state = state
            self.saved_at = now
        return state is not None

    async def holder(self) -> StreamState | None:
        """The stream's state as stored now (who holds it, until when)."""
        states = await self.backend.stream_states(self.name)
        return states[0] if states else None

    async def save(self, **changes: Any) -> None:
        """Write the state with ``changes`` (fields of ``StreamState``), renewing the lease."""
        now = self._clock()
        state = dataclasses.replace(
            self.state, **changes, lease_owner=self.owner, lease_expires=now + self.lease_seconds
        )
        if not await self.backend.save_stream(state, self.owner):
            self._state = None
            raise StreamLeaseLostError(f"stream {self.name!r}: another forwarder took the lease")
        self._state = state
        self.saved_at = now

    async def advance(self, log: str, seq: int, *, delivered: bool) -> None:
        """Move ``log``'s cursor to ``seq`` (after the destination acknowledged up to it)."""
        changes: dict[str, Any] = {"cursors": {**self.state.cursors, log: seq}}
        if delivered:
            changes.update(delivered_at=utc_timestamp(), last_error=None)
        await self.save(**changes)

    async def record_error(self, text: str) -> None:
        await self.save(last_error=text[:MAX_ERROR_CHARS])

    async def renew_if_due(self) -> None:
        """Renew the lease when a third of it has passed since the last write."""
        if self._clock() - self.saved_at >= self.lease_seconds / 3:
            await self.save()

    async def release(self) -> None:
        """Give the lease up (a stopping forwarder: the next one need not wait).

        The row is read back first and written unchanged but for the lease: a save
        cancelled in flight (the forwarder was stopped) may have been committed all the
        same, and the state held here would then move the cursor back."""
        if self._state is None:
            return
        self._state = None
        stored = await self.holder()
        if stored is not None and stored.lease_owner == self.owner:
            state = dataclasses.replace(stored, lease_owner=None, lease_expires=0.0)
            await self.backend.save_stream(state, self.owner)
