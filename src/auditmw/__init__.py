"""auditmw: tamper-evident audit logging for ASGI applications."""

from __future__ import annotations

from ._errors import AuditError, NotAStoreError, StoreClosedError, StoreError, ValidationError
from ._event import GENESIS_HASH, OUTCOMES, Event, Limits, NewEvent, Outcome, entry_hash
from ._open import open_store
from ._sqlite import SQLiteStore
from ._store import AuditStore
from ._verify import Finding, LogSummary, VerifyReport

__all__ = [
    "AuditError",
    "AuditStore",
    "Event",
    "Finding",
    "GENESIS_HASH",
    "Limits",
    "LogSummary",
    "NewEvent",
    "NotAStoreError",
    "OUTCOMES",
    "Outcome",
    "SQLiteStore",
    "StoreClosedError",
    "StoreError",
    "ValidationError",
    "VerifyReport",
    "entry_hash",
    "open_store",
]
__version__ = "0.1.0"
