"""The Splunk HTTP Event Collector destination, ``splunk+https://host:8088`` (or
``splunk+http://``; ``pip install 'auditmw[streams]'``, httpx).

Each batch is one ``POST`` to ``/services/collector/event`` (or the URL's own path, for
a collector behind a proxy) with ``Authorization: Splunk <token>``, the token read from
``--secret-file``. The body is the batch's HEC envelopes, concatenated:

    {"time": <epoch seconds>, "host": <this machine>, "source": "auditmw",
     "sourcetype": "auditmw:event", "event": <record>}

``?index=NAME`` adds ``"index"`` to each envelope. HEC acknowledges with HTTP 200 and
``{"code": 0}``; 5xx (503: the server is busy), 408, 429 and connection failures are
retried; any other answer (401/403: a bad token, 400: data refused) stops the stream.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from datetime import datetime
from typing import Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import orjson

from auditmw._streams.destination import (
    DeliveryBatch,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    display_url,
)
from auditmw._streams.webhook import (
    DEFAULT_TIMEOUT,
    http_client,
    post,
    read_secret,
    server_trust,
)

COLLECTOR_PATH = "/services/collector/event"
SOURCE = "auditmw"
SOURCETYPE = "auditmw:event"


def envelope_head(timestamp: str, host: str, index: str | None) -> bytes:
    """An HEC envelope up to its ``"event":`` value (the record follows, then ``}``)."""
    seconds = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    fields: dict[str, object] = {"time": round(seconds, 6), "host": host}
    fields.update(source=SOURCE, sourcetype=SOURCETYPE)
    if index is not None:
        fields["index"] = index
    return orjson.dumps(fields)[:-1] + b',"event":'


def hec_body(batch: DeliveryBatch, host: str, index: str | None) -> bytes:
    """The concatenated HEC envelopes of ``batch``'s records."""
    return b"".join(
        envelope_head(event.timestamp, host, index) + record + b"}"
        for event, record in zip(batch.events, batch.records, strict=True)
    )


class SplunkDestination(Destination):
    """Sends each batch to a Splunk HTTP Event Collector (see the module docstring)."""

    scheme = "splunk+https"

    def __init__(
        self,
        url: str,
        token: bytes,
        *,
        trust: ssl.SSLContext | bool = True,
        index: str | None = None,
        host: str | None = None,
    ) -> None:
        self.url = url
        self.index = index
        self.host = host or socket.gethostname()
        self.trust = trust
        self._token = token
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_url(cls, url: str, settings: Mapping[str, str]) -> Self:
        parts = urlsplit(url)
        scheme = parts.scheme.removeprefix("splunk+")
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a Splunk HEC destination is splunk+https://host:port, not {url!r}")
        index = None
        for key, value in parse_qsl(parts.query):
            if key != "index" or not value:
                raise ValueError(f"unknown Splunk destination option {key!r} (known: index)")
            index = value
        token = read_secret(settings, "Splunk HEC")
        if not token.isascii() or any(byte < 0x21 for byte in token):
            raise ValueError("the Splunk HEC token must be printable ASCII without spaces")
        collector = urlunsplit((scheme, parts.netloc, parts.path or COLLECTOR_PATH, "", ""))
        return cls(collector, token, trust=server_trust(settings), index=index)

    def describe(self) -> str:
        """The collector's URL without credentials (recorded in the stream's state)."""
        return "splunk+" + display_url(self.url)

    async def open(self) -> None:
        self._client = http_client(self.trust, DEFAULT_TIMEOUT)

    async def deliver(self, batch: DeliveryBatch) -> None:
        client = self._client
        if client is None:
            raise TemporaryDeliveryError("Splunk HEC: not open")
        headers = {
            "authorization": f"Splunk {self._token.decode()}",
            "content-type": "application/json",
        }
        answer = await post(client, self.url, hec_body(batch, self.host, self.index), headers)
        try:
            code = orjson.loads(answer.body).get("code")
        except (orjson.JSONDecodeError, AttributeError):
            code = None
        if answer.status != 200 or code != 0:
            said = answer.body[:200].decode(errors="replace")
            raise PermanentDeliveryError(
                f"Splunk HEC {self.url}: not an acknowledgement ({answer.status}, {said!r})"
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
