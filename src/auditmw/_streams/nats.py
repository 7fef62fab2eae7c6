"""The NATS JetStream destination, ``nats://host:port/SUBJECT`` (``pip install
'auditmw[streams]'``, nats-py).

Each event is published to SUBJECT with the header ``Nats-Msg-Id`` set to its id, so
JetStream drops a copy delivered again within the stream's duplicate window (2 minutes
by default); the durable cursor is the real guard beyond it. A batch is published in
order, then every publish acknowledgement is awaited (``timeout`` seconds in all) before
``deliver`` returns. A JetStream stream must capture SUBJECT: without one the publish
has no responder, a permanent error. A server that is down, slow or out of space is a
temporary error; the next try opens a new connection.

User and password may be given in the URL (``nats://user:password@host:4222/audit``);
``?timeout=SECONDS`` sets the time limit of connecting and of a batch's acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Self
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from auditmw._streams.destination import (
    DeliveryBatch,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    display_url,
)

DEFAULT_TIMEOUT = 10.0
MSG_ID_HEADER = "Nats-Msg-Id"
_SUBJECT_FORBIDDEN = frozenset(" \t\r\n*>")


class NatsDestination(Destination):
    """Publishes each event to a JetStream subject (see the module docstring)."""

    scheme = "nats"

    def __init__(self, server: str, subject: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.server = server
        self.subject = subject
        self.timeout = timeout
        self._client: Client | None = None
        self._jetstream: JetStreamContext | None = None

    @classmethod
    def from_url(cls, url: str, settings: Mapping[str, str]) -> Self:
        parts = urlsplit(url)
        subject = unquote(parts.path.removeprefix("/"))
        if not parts.hostname or not subject or _SUBJECT_FORBIDDEN & set(subject):
            raise ValueError(
                f"a NATS destination is nats://host:port/SUBJECT (a subject without "
                f"wildcards or spaces), not {url!r}"
            )
        timeout = DEFAULT_TIMEOUT
        for key, value in parse_qsl(parts.query):
            if key != "timeout":
                raise ValueError(f"unknown NATS destination option {key!r} (known: timeout)")
            try:
                timeout = float(value)
            except ValueError:
                timeout = float("nan")
            if not 0 < timeout < 3600:
                raise ValueError("timeout of a NATS destination must be 0 to 3600 seconds")
        server = urlunsplit(("nats", parts.netloc, "", "", ""))
        return cls(server, subject, timeout=timeout)

    def describe(self) -> str:
        return display_url(f"{self.server}/{self.subject}")

    async def open(self) -> None:
        async def ignore(exc: Exception) -> None:
            pass  # each failure reaches deliver's caller as an exception anyway

        try:
            # Bounded here: nats-py's own loop over its server pool may retry for ever
            # (max_reconnect_attempts=0 does), and the forwarder retries anyway.
            async with asyncio.timeout(self.timeout):
                client = await nats.connect(
                    servers=[self.server],
                    connect_timeout=self.timeout,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    error_cb=ignore,
                    name="auditmw stream",
                )
        except nats.errors.AuthorizationError as exc:
            raise PermanentDeliveryError(f"NATS {self.subject}: not authorized: {exc}") from exc
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise TemporaryDeliveryError(f"NATS unreachable: {_text(exc)}") from exc
        self._client = client
        self._jetstream = client.jetstream(timeout=self.timeout)

    async def deliver(self, batch: DeliveryBatch) -> None:
        jetstream = self._jetstream
        if jetstream is None:
            raise TemporaryDeliveryError("NATS: not connected")
        acks: list[asyncio.Future[PubAck]] = []
        try:
            async with asyncio.timeout(self.timeout):
                for event, record in zip(batch.events, batch.records, strict=True):
                    ack = await jetstream.publish_async(
                        self.subject, record, headers={MSG_ID_HEADER: event.id}
                    )
                    acks.append(ack)
                await asyncio.gather(*acks)
        except nats.js.errors.NoStreamResponseError as exc:
            raise PermanentDeliveryError(
                f"NATS: no JetStream stream captures subject {self.subject!r}"
            ) from exc
        except nats.js.errors.APIError as exc:
            if exc.code is not None and exc.code < 500:
                raise PermanentDeliveryError(f"NATS {self.subject}: refused: {exc}") from exc
            raise TemporaryDeliveryError(f"NATS {self.subject}: {exc}") from exc
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise TemporaryDeliveryError(f"NATS {self.subject}: {_text(exc)}") from exc
        finally:
            for pending in acks:
                pending.cancel()  # (done ones ignore it) nothing waits for them any more

    async def close(self) -> None:
        client, self._client, self._jetstream = self._client, None, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(OSError, TimeoutError, nats.errors.Error):
                async with asyncio.timeout(self.timeout):
                    await client.close()


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
