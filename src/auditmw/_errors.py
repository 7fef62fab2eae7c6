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


class StoreUnavailableError(StoreError):
    """The store cannot do it now, but may later, with nothing fixed in data or code: the
    database is down, frozen, too slow or out of connections or space, or another process
    holds its lock too long, past the store's time limits (docs/failures.md). Retry later:
    the admin app answers 503 with ``Retry-After``."""


class StoreClosedError(StoreUnavailableError):
    """The store is closed (or was never opened)."""


class NotAStoreError(StoreError):
    """The target exists but is not an auditmw store, or cannot be opened as one."""
