"""The syslog destination, ``syslog+tcp://host:port`` or ``syslog+tls://host:port``.

Each event is one RFC 5424 message, framed by RFC 6587 octet counting (``LEN SP MSG``):

    <PRI>1 TIMESTAMP HOSTNAME auditmw - MSGID [auditmw@32473 id="…" log="…" seq="…" hash="…"] RECORD

PRI is facility 13 (log audit) * 8 + a severity from the outcome (success 6
informational, failure 5 notice, denied 4 warning); TIMESTAMP is the event's; MSGID
its action, each character outside printable ASCII made ``_``, cut to 32 characters; the
structured data carries what a receiver de-duplicates by and checks the chain with (its
values escaped: ``"``, ``\\`` and ``]`` get a backslash); the message is the record of the
stream's format, UTF-8 JSON without a BOM.

Syslog over TCP has no acknowledgement. A batch counts as delivered once it is written,
the socket's buffer drained to the kernel, and the server has not closed the connection;
so delivery is at least once for what a server that stays up receives, but a server that
dies with the batch in its socket buffers (or a network that drops the connection
silently) loses it though the cursor has moved (docs/streams.md).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlsplit

from auditmw._event import Event
from auditmw._streams.destination import (
    DeliveryBatch,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)

FACILITY_LOG_AUDIT = 13
SEVERITIES = {"success": 6, "failure": 5, "denied": 4}  # informational, notice, warning
SD_ID = "auditmw@32473"
APP_NAME = "auditmw"
DEFAULT_TIMEOUT = 10.0
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_SD_ESCAPE = re.compile(r'(["\\\]])')


def header_field(value: str, limit: int) -> str:
    """``value`` as an RFC 5424 header field: each character outside printable US-ASCII
    replaced by ``_``, at most ``limit`` characters, ``-`` when empty."""
    cleaned = _UNPRINTABLE.sub("_", value)[:limit]
    return cleaned or "-"


def sd_value(value: str) -> str:
    """``value`` escaped as an SD-PARAM value (RFC 5424 section 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", value)


def syslog_message(event: Event, record: bytes, hostname: str) -> bytes:
    """The RFC 5424 message of ``event`` (without framing)."""
    pri = FACILITY_LOG_AUDIT * 8 + SEVERITIES.get(event.outcome, 5)
    params = {"id": event.id, "log": event.log, "seq": str(event.seq), "hash": event.hash}
    data = " ".join(f'{name}="{sd_value(value)}"' for name, value in params.items())
    head = (
        f"<{pri}>1 {event.timestamp} {header_field(hostname, 255)} {APP_NAME} - "
        f"{header_field(event.action, 32)} [{SD_ID} {data}] "
    )
    return head.encode() + record


def octet_counted(message: bytes) -> bytes:
    """``message`` framed as RFC 6587 octet counting."""
    return b"%d " % len(message) + message


class SyslogDestination(Destination):
    """Writes each event to a syslog server over TCP or TLS (see the module docstring)."""

    scheme = "syslog+tcp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        hostname: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.hostname = hostname or socket.gethostname()
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    def from_url(cls, url: str, settings: Mapping[str, str]) -> Self:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if (
            parts.scheme not in ("syslog+tcp", "syslog+tls")
            or not parts.hostname
            or port is None
            or parts.path not in ("", "/")
            or parts.query
        ):
            raise ValueError(f"a syslog destination is syslog+tcp://host:port, not {url!r}")
        tls = None
        if parts.scheme == "syslog+tls":
            ca_file = settings.get("ca_file")
            try:
                tls = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the CA file {ca_file}: {exc}") from None
        return cls(parts.hostname, port, tls=tls)

    def describe(self) -> str:
        """The server's URL (recorded in the stream's state)."""
        scheme = "syslog+tls" if self.tls is not None else "syslog+tcp"
        return f"{scheme}://{self.host}:{self.port}"

    async def open(self) -> None:
        where = f"syslog {self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls
                )
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(f"{where}: the server's certificate: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise TemporaryDeliveryError(f"{where}: {_text(exc)}") from exc

    async def deliver(self, batch: DeliveryBatch) -> None:
        reader, writer = self._reader, self._writer
        where = f"syslog {self.host}:{self.port}"
        if reader is None or writer is None:
            raise TemporaryDeliveryError(f"{where}: not connected")
        frames = b"".join(
            octet_counted(syslog_message(event, record, self.hostname))
            for event, record in zip(batch.events, batch.records, strict=True)
        )
        try:
            async with asyncio.timeout(self.timeout):
                await self._check_open(reader)  # closed since the last batch: never sent
                writer.write(frames)
                await writer.drain()
                await self._check_open(reader)
        except (OSError, TimeoutError) as exc:
            raise TemporaryDeliveryError(f"{where}: {_text(exc)}") from exc

    @staticmethod
    async def _check_open(reader: asyncio.StreamReader) -> None:
        """``ConnectionResetError`` when the server has closed the connection, as far as
        the loop has heard: a few turns of it let the socket's end (and TLS's close)
        reach the reader."""
        for _ in range(4):
            await asyncio.sleep(0)
        if reader.at_eof() or reader.exception() is not None:
            raise ConnectionResetError("the server closed the connection")

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                async with asyncio.timeout(self.timeout):
                    await writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass  # closing a connection that failed: nothing more to do


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
