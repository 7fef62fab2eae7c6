"""auditmw: tamper-evident audit logging for ASGI applications."""

from __future__ import annotations

import typing
import warnings

from auditmw import actions
from auditmw._admin.access import AdminAuth
from auditmw._admin.app import AdminApp
from auditmw._admin.mount import mount
from auditmw._audited import PendingEvent, audited, pending_event
from auditmw._client_ip import trusted_proxies_from_env
from auditmw._context import Actor
from auditmw._diff import diff
from auditmw._errors import (
    AuditError,
    EventRefusedError,
    NotAStoreError,
    PruneRefusedError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from auditmw._event import GENESIS_HASH, OUTCOMES, Event, Limits, NewEvent, Outcome, entry_hash
from auditmw._mask import DEFAULT_SENSITIVE_KEYS
from auditmw._middleware import AuditMiddleware
from auditmw._personal import DEFAULT_PERSONAL_KEYS
from auditmw._record import FailurePolicy, acting_as, audit, set_actor
from auditmw._retention.archive_format import ArchiveHeader
from auditmw._retention.erasure import ErasureReport
from auditmw._retention.holds import LegalHold
from auditmw._retention.policy import RetentionPolicy, RetentionStats
from auditmw._retention.prune import PruneReport
from auditmw._stores.filters import EventFilter, Page, QueryError
from auditmw._stores.histogram import Histogram, HistogramBucket
from auditmw._stores.open import open_store
from auditmw._stores.sqlite import SQLiteStore
from auditmw._stores.store import AuditStore, StoredCheckpoint
from auditmw._stores.verify_report import Finding, LogSummary, VerifyReport
from auditmw._streams.destination import (
    DeliveryBatch,
    DeliveryError,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    destination_for,
)
from auditmw._streams.forwarder import StreamForwarder
from auditmw._transparency.checkpoint_report import CheckpointReport
from auditmw._transparency.checkpoints import (
    Checkpointing,
    CheckpointingError,
    CheckpointStats,
    signing_key_from_env,
)
from auditmw._transparency.external import check_checkpoints
from auditmw._transparency.inputs import CheckpointInput
from auditmw._transparency.key_record import KEY_ROTATED_ACTION
from auditmw._transparency.notes import SigningKey, VerifierKey, load_signing_key
from auditmw._transparency.sinks import DirectorySink, Sink, SinkConflictError, read_sink

if typing.TYPE_CHECKING:
    from auditmw.litestar import AuditPlugin as AuditPlugin

__all__ = [
    "Actor",
    "AdminApp",
    "AdminAuth",
    "ArchiveHeader",
    "AuditError",
    "AuditMiddleware",
    "AuditStore",
    "CheckpointInput",
    "CheckpointReport",
    "CheckpointStats",
    "Checkpointing",
    "CheckpointingError",
    "DEFAULT_PERSONAL_KEYS",
    "DEFAULT_SENSITIVE_KEYS",
    "DeliveryBatch",
    "DeliveryError",
    "Destination",
    "DirectorySink",
    "ErasureReport",
    "Event",
    "EventFilter",
    "EventRefusedError",
    "FailurePolicy",
    "Finding",
    "GENESIS_HASH",
    "Histogram",
    "HistogramBucket",
    "KEY_ROTATED_ACTION",
    "LegalHold",
    "Limits",
    "LogSummary",
    "NewEvent",
    "NotAStoreError",
    "OUTCOMES",
    "Outcome",
    "Page",
    "PendingEvent",
    "PermanentDeliveryError",
    "PruneRefusedError",
    "PruneReport",
    "QueryError",
    "RetentionPolicy",
    "RetentionStats",
    "SQLiteStore",
    "SigningKey",
    "Sink",
    "SinkConflictError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StoredCheckpoint",
    "StreamForwarder",
    "TemporaryDeliveryError",
    "ValidationError",
    "VerifierKey",
    "VerifyReport",
    "acting_as",
    "actions",
    "audit",
    "audited",
    "check_checkpoints",
    "destination_for",
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

# Names from before the checkpoint vocabulary settled (docs/checkpoints.md): deprecated.
_RENAMED: dict[str, typing.Any] = {
    "AdminUser": Actor,
    "AnchorReport": CheckpointReport,
    "check_anchors": check_checkpoints,
}


def __getattr__(name: str) -> object:
    # AuditPlugin needs litestar, an optional extra: import it only when asked for.
    # (Not in __all__, so that ``from auditmw import *`` works without litestar.)
    if name == "AuditPlugin":
        from auditmw.litestar import AuditPlugin

        return AuditPlugin
    renamed = _RENAMED.get(name)
    if renamed is not None:
        warnings.warn(
            f"auditmw.{name} is deprecated; use auditmw.{renamed.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return renamed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
