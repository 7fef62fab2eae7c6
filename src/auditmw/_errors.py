"""Exceptions raised by auditmw."""

from __future__ import annotations


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


class StoreClosedError(StoreError):
    """The store is closed (or was never opened)."""


class StorageDamagedError(StoreError):
    """The database reported damage to its own storage while reading (a SQLite file's
    page that is not what it should be, a PostgreSQL page or index it found corrupted)."""


class NotAStoreError(StoreError):
    """The target exists but is not an auditmw store, or cannot be opened as one."""
