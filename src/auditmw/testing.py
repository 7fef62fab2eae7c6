"""Helpers for testing an application that records audit events.

``MemoryStore`` is an audit store held in memory: the same chaining, validation, errors,
queries and checkpoints as ``SQLiteStore`` and ``PostgresStore`` (the library's own
contract tests run it beside them), without a file or a server. ``recorded(store, ...)``
lists the events a store holds that match a filter, so a test can assert what its app
recorded::

    import pytest
    from auditmw.testing import MemoryStore, recorded

    @pytest.fixture
    async def audit_store():
        async with MemoryStore() as store:
            yield store

    async def test_deleting_a_project_is_audited(audit_store):
        ...  # drive the app, built with AuditMiddleware(app, store=audit_store)
        [event] = await recorded(audit_store, action="project.deleted")
        assert event.resource_id == "p-1"

``store.events`` is every event a ``MemoryStore`` holds, in the order they were committed.

``append_at(store, [(event, timestamp), ...])`` appends backdated events (e.g. a year of
history for a test of searches or exports over time).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Unpack

from auditmw._errors import StoreClosedError
from auditmw._event import Event, NewEvent, prepare
from auditmw._stores.filters import EventFilter
from auditmw._stores.memory import MemoryBackend, MemoryTables
from auditmw._stores.store import AuditStore, StoreOptions

__all__ = ["MemoryStore", "append_at", "recorded"]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # as the store writes it
COMMIT_TIMEOUT = 30.0  # seconds: append_at's commit fails with StoreUnavailableError after


class MemoryStore(AuditStore):
    """An audit store held in memory (see the module docstring). Its events live as long
    as the object: closing and opening it again finds them.

    The options are those every store takes (``limits``, ``max_batch``, ``max_pending``,
    ``checkpointing``; ``append_timeout`` in seconds). ``shared_with`` makes this store a
    second view of another ``MemoryStore``'s log, as two processes open one database.
    """

    backend: MemoryBackend

    def __init__(
        self,
        *,
        shared_with: MemoryStore | None = None,
        append_timeout: float = 10.0,
        **options: Unpack[StoreOptions],
    ) -> None:
        tables = MemoryTables() if shared_with is None else shared_with.backend.tables
        super().__init__(MemoryBackend(tables), append_timeout=append_timeout, **options)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self.backend.tables.events)} events)"

    @property
    def events(self) -> list[Event]:
        """Every event held, over all logs, in the order they were committed (a copy)."""
        return self.backend.committed_events()


async def recorded(
    store: AuditStore,
    filter: EventFilter | None = None,
    **fields: str,
) -> list[Event]:
    """The events of an open ``store`` that match ``filter``, or the ``EventFilter`` made
    of ``fields`` (``action="user.signed_in"``, ``user_id="u1"``, ``action="project.*"``
    ...), in chain order: by log, then oldest first."""
    if filter is None:
        filter = EventFilter(**fields)
    elif fields:
        raise TypeError("pass either a filter or fields, not both")
    return [event async for event in store.iter_events(filter)]


async def append_at(
    store: AuditStore,
    events: Iterable[tuple[NewEvent, datetime | str]],
) -> list[Event]:
    """Append ``(event, timestamp)`` pairs to the open ``store`` in this order, as one
    transaction, each with exactly that timestamp: a timezone-aware ``datetime`` or a
    string as the store writes them (``2024-05-01T12:00:00.000000Z``). They are
    validated and chained as every append; returns them as stored.

    For tests only: the store's own appends go through its writer, which this bypasses,
    so call it while no other append is in flight.
    """
    if not store.is_open:
        raise StoreClosedError("the audit store is not open")
    batch = [prepare(new, store.limits, at=_moment(when)) for new, when in events]
    if not batch:
        return []
    return await store.backend.append_batch(batch, time.monotonic() + COMMIT_TIMEOUT)


def _moment(when: datetime | str) -> datetime:
    if isinstance(when, datetime):
        return when
    return datetime.strptime(when, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
