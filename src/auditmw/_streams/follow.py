"""Waiting for new commits without busy polling.

PostgreSQL: a connection of its own LISTENs on ``auditmw_append``, which a trigger
NOTIFYs at every commit of an append (``auditmw._stores.stream_state``), so a forwarder
wakes within milliseconds; it still looks every ``POSTGRES_FALLBACK_SECONDS`` in case
a notification was lost (the listening connection dropped, the trigger could not be
created). Other stores: a look every ``poll_interval`` (0.25 s), one indexed read of each
log's head, so an idle follower costs about four small queries a second and sees a
commit within a quarter of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from auditmw._stores.backend import StoreBackend
from auditmw._stores.stream_state import APPEND_CHANNEL

DEFAULT_POLL_INTERVAL = 0.25
POSTGRES_FALLBACK_SECONDS = 5.0
LISTEN_CONNECT_TIMEOUT = 5.0
logger = logging.getLogger("auditmw")


def _postgres_target(backend: StoreBackend) -> tuple[str, str] | None:
    """(dsn, schema) when ``backend`` is PostgreSQL's."""
    try:
        from auditmw._stores.postgres import PostgresBackend
    except ImportError:  # asyncpg is an optional extra: then it is not PostgreSQL
        return None
    if isinstance(backend, PostgresBackend):
        return backend.dsn, backend.schema
    return None


class AppendWaiter:
    """``wait()`` returns soon after new events are committed (or after a while anyway)."""

    def __init__(self, backend: StoreBackend, poll_interval: float = DEFAULT_POLL_INTERVAL):
        self._postgres = _postgres_target(backend)
        self.poll_interval = poll_interval
        self._woken = asyncio.Event()
        self._connection: Any = None  # asyncpg.Connection listening, when there is one
        self.notifications = 0  # commits notified so far (PostgreSQL)

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def listen(self) -> None:
        """Start listening for notifications (PostgreSQL; nothing elsewhere, or when the
        listening connection cannot be opened: then ``wait`` polls)."""
        if self._postgres is None or self.listening:
            return
        import asyncpg

        dsn, schema = self._postgres

        def notified(*args: object) -> None:
            if args[-1] == schema:  # (connection, pid, channel, payload)
                self.notifications += 1
                self._woken.set()

        try:
            # Held at once, so that close() closes it even if cancelled in add_listener.
            self._connection = await asyncpg.connect(dsn, timeout=LISTEN_CONNECT_TIMEOUT)
            await self._connection.add_listener(APPEND_CHANNEL, notified)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            logger.warning("auditmw stream: cannot LISTEN for appends (polling): %s", exc)
            await self.close()

    async def wait(self, most: float = POSTGRES_FALLBACK_SECONDS) -> None:
        """Until a commit was notified, or the poll interval (with PostgreSQL listening,
        the fallback interval) passed."""
        await self.listen()
        timeout = min(most, POSTGRES_FALLBACK_SECONDS) if self.listening else self.poll_interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), LISTEN_CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                connection.terminate()
