"""Exceptions raised by auditmw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AuditError(Exception):
    """Base class of every error auditmw raises."""


class ValidationError(AuditError, ValueError):
    """An event field is missing, too long or not representable; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StoreError(AuditError):
    """The store could not do what was asked (locked, disk full, read-only, closed...).

    An append that raises this was not committed: the caller must treat the action
    it records as not audited.
    """


class EventRefusedError(StoreError):
    """The database refused this event's data, though the store works: a constraint, a
    trigger, a type or an encoding of the database does not accept one of its values.

    Only that append fails: the events committed with it are stored. Appending the same
    event again fails the same way.
    """

    def __init__(self, message: str, *, committed: Sequence[Any] = ()) -> None:
        super().__init__(message)
        # For the writer: the events (``Event``) at the start of a refused batch that were
        # committed before the refusal (a SQLite trigger's RAISE(FAIL) keeps them). Always
        # empty for an append's caller. Typed loosely: naming Event here would make the
        # errors, the lowest layer, import the event model that raises them.
        self.committed = list(committed)


class StoreUnavailableError(StoreError):
    """The store cannot do it now, but may later, with nothing fixed in data or code: the
    database is down, frozen, too slow or out of connections or space, or another process
    holds its lock too long, past the store's time limits (docs/failures.md). Retry later:
    the admin app answers 503 with ``Retry-After``."""


class StoreClosedError(StoreUnavailableError):
    """The store is closed (or was never opened)."""


class StorageDamagedError(StoreError):
    """The database reported damage to its own storage while reading (a SQLite file's
    page that is not what it should be, a PostgreSQL page or index it found corrupted)."""


class NotAStoreError(StoreError):
    """The target exists but is not an auditmw store, or cannot be opened as one."""


class PruneRefusedError(StoreError):
    """A prune was refused and nothing was deleted (docs/retention.md): an archive that
    does not cover exactly the prefix to delete, or is damaged (``damaged``); a legal hold;
    a date in the future; another prune that ran meanwhile (run it again)."""

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged
