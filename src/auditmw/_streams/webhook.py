"""The HTTP(S) webhook destination, ``https://host/path`` (or ``http://``; ``pip install
'auditmw[streams]'``, httpx).

Each batch is one ``POST`` of a JSON document ``{"log", "first_seq", "last_seq",
"events": [record, ...]}`` (the records exactly as the format encoded them), signed with
a shared secret (``--secret-file``): the header

    auditmw-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">

lets the receiver check that the body came from a holder of the secret and is recent
(docs/streams.md has the receiver's check). A 2xx answer acknowledges the batch; 408,
429, 5xx and connection failures are temporary; any other answer is a refusal for good,
and so is a server certificate that does not verify (``--ca-file`` names the CA bundle
to trust instead of the system's).

The HTTP plumbing here (``read_secret``, ``server_trust``, ``http_client``, ``post``) is
shared with the Splunk HEC destination.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import httpx
import orjson

from auditmw._streams.destination import (
    DeliveryBatch,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    display_url,
)

DEFAULT_TIMEOUT = 30.0
SIGNATURE_HEADER = "auditmw-signature"
MAX_SECRET_BYTES = 4096
MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer, read (the rest is not)
# Statuses that mean "not now": the same batch is tried again.
RETRY_STATUSES = frozenset({408, 425, 429})


def read_secret(settings: Mapping[str, str], what: str) -> bytes:
    """The secret in the file ``settings["secret_file"]`` names, without its line end;
    ``ValueError`` when there is none, it cannot be read or is empty."""
    path = settings.get("secret_file")
    if not path:
        raise ValueError(f"a {what} destination needs --secret-file (the shared secret)")
    try:
        secret = Path(path).read_bytes()[: MAX_SECRET_BYTES + 1]
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    secret = secret.rstrip(b"\r\n")
    if not secret or len(secret) > MAX_SECRET_BYTES:
        raise ValueError(f"the secret file {path} must hold 1 to {MAX_SECRET_BYTES} bytes")
    return secret


def server_trust(settings: Mapping[str, str]) -> ssl.SSLContext | bool:
    """How to verify servers: the CAs of ``settings["ca_file"]`` (a PEM bundle) when
    given, else the system's (``True``); ``ValueError`` when that file cannot be loaded."""
    ca_file = settings.get("ca_file")
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA file {ca_file}: {exc}") from None


def http_client(trust: ssl.SSLContext | bool, timeout: float) -> httpx.AsyncClient:
    """A client verifying servers by ``trust`` (``server_trust``)."""
    return httpx.AsyncClient(verify=trust, timeout=timeout, follow_redirects=False)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A receiver's 2xx answer: its status and the start of its body."""

    status: int
    body: bytes


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]
) -> HttpAnswer:
    """``POST`` ``body`` to ``url``; the answer when 2xx, else the delivery error its
    status (or the failure to get one) means. Reads at most ``MAX_ANSWER_BYTES`` of the
    answer, all within the client's timeout: a receiver cannot hold the stream with an
    endless or slow answer."""
    shown = display_url(url)
    try:
        async with asyncio.timeout(_total_timeout(client)):
            async with client.stream("POST", url, content=body, headers=dict(headers)) as response:
                status = response.status_code
                answer = bytearray()
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) >= MAX_ANSWER_BYTES:
                        break
    except httpx.ConnectError as exc:
        if _certificate_failed(exc):
            raise PermanentDeliveryError(f"{shown}: the server's certificate: {exc}") from exc
        raise TemporaryDeliveryError(f"{shown}: {_text(exc)}") from exc
    except (httpx.HTTPError, TimeoutError) as exc:
        raise TemporaryDeliveryError(f"{shown}: {_text(exc)}") from exc
    if 200 <= status < 300:
        return HttpAnswer(status, bytes(answer[:MAX_ANSWER_BYTES]))
    said = f"{shown} answered {status}: {bytes(answer[:200]).decode(errors='replace')!r}"
    if status in RETRY_STATUSES or status >= 500:
        raise TemporaryDeliveryError(said)
    raise PermanentDeliveryError(said)


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``auditmw-signature`` header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def batch_body(batch: DeliveryBatch) -> bytes:
    """The webhook's JSON document of ``batch``, its records embedded as they are."""
    head = orjson.dumps(
        {"log": batch.log, "first_seq": batch.first_seq, "last_seq": batch.last_seq}
    )
    return head[:-1] + b',"events":[' + b",".join(batch.records) + b"]}"


class WebhookDestination(Destination):
    """POSTs each batch, signed, to a URL (see the module docstring)."""

    scheme = "https"

    def __init__(
        self, url: str, secret: bytes, *, trust: ssl.SSLContext | bool = True, timeout: float
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.trust = trust
        self._secret = secret
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_url(cls, url: str, settings: Mapping[str, str]) -> Self:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook destination is https://host[:port]/path, not {url!r}")
        secret = read_secret(settings, "webhook")
        return cls(url, secret, trust=server_trust(settings), timeout=DEFAULT_TIMEOUT)

    def describe(self) -> str:
        """The URL without credentials or query (recorded in the stream's state)."""
        return display_url(self.url)

    async def open(self) -> None:
        self._client = http_client(self.trust, self.timeout)

    async def deliver(self, batch: DeliveryBatch) -> None:
        client = self._client
        if client is None:
            raise TemporaryDeliveryError("webhook: not open")
        body = batch_body(batch)
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, body, int(time.time())),
        }
        await post(client, self.url, body, headers)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _total_timeout(client: httpx.AsyncClient) -> float:
    """The bound of a whole request: twice the client's per-step timeout."""
    return 2 * (client.timeout.read or DEFAULT_TIMEOUT)


def _certificate_failed(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
