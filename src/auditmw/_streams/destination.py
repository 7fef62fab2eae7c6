"""Where a stream delivers: the ``Destination`` interface, its two errors, and the
registry from URL scheme to destination class.

A destination takes one ``DeliveryBatch`` at a time (events of one log, consecutive in the
stream's order) and returns from ``deliver`` only once the receiver has acknowledged the
whole batch: the forwarder moves the stream's cursor after that, never before. Failing,
it raises

- ``TemporaryDeliveryError``: the receiver is down, slow or said "not now"; the forwarder
  retries the same batch with backoff and jitter, for ever unless told to give up;
- ``PermanentDeliveryError``: the receiver refuses the batch and will again (bad
  credentials, a path that cannot be written, no such subject); the forwarder stops the
  stream and records the error, never skipping the batch.

A new destination subclasses ``Destination`` (``from_url`` parses its URL) and adds its
scheme to ``DESTINATIONS``: the module to import and the class, loaded only when used, so
an optional client library is needed only by the streams that use it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self
from urllib.parse import urlsplit, urlunsplit

from auditmw._errors import AuditError
from auditmw._event import Event

# URL scheme -> "module:Class" of its destination.
DESTINATIONS: dict[str, str] = {
    "file": "auditmw._streams.files:FileDestination",
    "nats": "auditmw._streams.nats:NatsDestination",
    "http": "auditmw._streams.webhook:WebhookDestination",
    "https": "auditmw._streams.webhook:WebhookDestination",
    "splunk+http": "auditmw._streams.splunk:SplunkDestination",
    "splunk+https": "auditmw._streams.splunk:SplunkDestination",
    "syslog+tcp": "auditmw._streams.syslog:SyslogDestination",
    "syslog+tls": "auditmw._streams.syslog:SyslogDestination",
}


class DeliveryError(AuditError):
    """A batch was not delivered."""


class TemporaryDeliveryError(DeliveryError):
    """Not delivered this time; the same batch is tried again later."""


class PermanentDeliveryError(DeliveryError):
    """The receiver refuses the batch for good: the stream stops with this error."""


@dataclass(frozen=True, slots=True)
class DeliveryBatch:
    """Events of one log, in seq order, and each one's record as the stream's format
    encoded it (``records[i]`` is ``events[i]``)."""

    log: str
    events: Sequence[Event]
    records: Sequence[bytes]

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq


class Destination(ABC):
    """A receiver of batches (see the module docstring)."""

    scheme: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, settings: Mapping[str, str]) -> Self:
        """The destination ``url`` names; ``settings`` are extra options given beside the
        URL (e.g. a secret's file). Bad URLs raise ``ValueError``."""

    def describe(self) -> str:
        """Where this destination delivers, without secrets (recorded in the stream's
        state for ``auditmw streams``)."""
        return f"{self.scheme}://"

    async def open(self) -> None:  # noqa: B027 (most destinations connect lazily or not at all)
        """Connect; ``TemporaryDeliveryError`` or ``PermanentDeliveryError`` as ``deliver``."""

    @abstractmethod
    async def deliver(self, batch: DeliveryBatch) -> None:
        """Deliver ``batch``; return once the receiver acknowledged all of it."""

    async def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release connections; safe to call when ``open`` failed or was never called."""


def destination_for(url: str, settings: Mapping[str, str] | None = None) -> Destination:
    """The destination of ``url``, by its scheme (``DESTINATIONS``); ``ValueError`` for an
    unknown scheme or a bad URL."""
    scheme = urlsplit(url).scheme
    target = DESTINATIONS.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(DESTINATIONS))
        raise ValueError(f"unsupported stream destination {url!r}: use one of {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{scheme}:// destinations need an optional extra: pip install 'auditmw[streams]' "
            f"({exc})"
        ) from None
    destination_class: type[Destination] = getattr(module, class_name)
    return destination_class.from_url(url, settings or {})


def display_url(url: str) -> str:
    """``url`` without a password or query (what may hold a secret), for display and
    the stream's recorded settings."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
