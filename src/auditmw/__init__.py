"""auditmw: tamper-evident audit logging for ASGI applications."""

from __future__ import annotations

import typing

from . import actions
from ._access import AdminAuth
from ._admin import AdminApp, AdminUser
from ._anchor import AnchorReport, CheckpointInput, check_anchors
from ._audited import PendingEvent, audited, pending_event
from ._checkpoint import SigningKey, VerifierKey, load_signing_key
from ._checkpointer import (
    KEY_ROTATED_ACTION,
    Checkpointing,
    CheckpointingError,
    CheckpointStats,
    signing_key_from_env,
)
from ._client_ip import trusted_proxies_from_env
from ._context import Actor, set_actor
from ._diff import diff
from ._errors import (
    AuditError,
    EventRefusedError,
    NotAStoreError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from ._event import GENESIS_HASH, OUTCOMES, Event, Limits, NewEvent, Outcome, entry_hash
from ._histogram import Histogram, HistogramBucket
from ._mask import DEFAULT_SENSITIVE_KEYS
from ._middleware import AuditMiddleware
from ._mount import mount
from ._open import open_store
from ._query import EventFilter, Page, QueryError
from ._record import FailurePolicy, acting_as, audit
from ._sink import DirectorySink, Sink, SinkConflictError, read_sink
from ._sqlite import SQLiteStore
from ._store import AuditStore, StoredCheckpoint
from ._verify import Finding, LogSummary, VerifyReport

if typing.TYPE_CHECKING:
    from ._litestar import AuditPlugin as AuditPlugin

__all__ = [
    "Actor",
    "AdminApp",
    "AdminAuth",
    "AdminUser",
    "AnchorReport",
    "AuditError",
    "AuditMiddleware",
    "AuditStore",
    "CheckpointInput",
    "CheckpointStats",
    "Checkpointing",
    "CheckpointingError",
    "DEFAULT_SENSITIVE_KEYS",
    "DirectorySink",
    "Event",
    "EventFilter",
    "EventRefusedError",
    "FailurePolicy",
    "Finding",
    "GENESIS_HASH",
    "Histogram",
    "HistogramBucket",
    "KEY_ROTATED_ACTION",
    "Limits",
    "LogSummary",
    "NewEvent",
    "NotAStoreError",
    "OUTCOMES",
    "Outcome",
    "Page",
    "PendingEvent",
    "QueryError",
    "SQLiteStore",
    "SigningKey",
    "Sink",
    "SinkConflictError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StoredCheckpoint",
    "ValidationError",
    "VerifierKey",
    "VerifyReport",
    "acting_as",
    "actions",
    "audit",
    "audited",
    "check_anchors",
    "diff",
    "entry_hash",
    "load_signing_key",
    "mount",
    "open_store",
    "pending_event",
    "read_sink",
    "set_actor",
    "signing_key_from_env",
    "trusted_proxies_from_env",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # AuditPlugin needs litestar, an optional extra: import it only when asked for.
    # (Not in __all__, so that ``from auditmw import *`` works without litestar.)
    if name == "AuditPlugin":
        from ._litestar import AuditPlugin

        return AuditPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
