"""Capture: what a request says about itself, read once, the same way for every event.

``RequestCapture`` turns an ASGI scope into the ``RequestInfo`` every event of the request
is made from: the client IP (the trusted-proxy rule of ``ClientIPResolver``), the peer
IP, the user agent, the request id (the client's when valid, else a new one), the method
and the path, and how to find its user. ``AuditMiddleware``, the Litestar plugin (for
requests that match no route) and the admin app (for its own ``export.requested``
events, when no middleware captured the request before it) all read requests through
it. The user is resolved late, each time an event is recorded (``RequestInfo.user``),
because authentication middleware may run after the capture.

``error_outcome`` is the one rule from an HTTP status to an event's outcome.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from starlette.types import Scope

from auditmw._client_ip import X_FORWARDED_FOR, ClientIPResolver
from auditmw._context import RequestInfo, UserResolver, user_from_scope
from auditmw._event import Outcome
from auditmw._text import header_text

DEFAULT_REQUEST_ID_HEADER = "x-request-id"
# A request id we accept from the client: 1-128 RFC 9110 token characters (UUIDs too).
_VALID_REQUEST_ID = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")


class RequestCapture:
    """Reads requests with one configuration (see the module docstring).

    - ``trusted_proxies``: addresses/CIDRs of your reverse proxies. Empty (default): the
      client IP is the connecting peer and forwarding headers are ignored.
    - ``forwarded_header``: ``"x-forwarded-for"`` or ``"forwarded"`` (RFC 7239).
    - ``request_id_header``: read from the request when valid, else a new id is made.
    - ``resolve_user``: ``scope -> Actor | None``, called when an event is recorded;
      default: the authenticated ``scope["user"]``.
    """

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = X_FORWARDED_FOR,
        request_id_header: str = DEFAULT_REQUEST_ID_HEADER,
        resolve_user: UserResolver = user_from_scope,
    ) -> None:
        self.client_ip = ClientIPResolver(trusted_proxies, forwarded_header)
        self.request_id_header = request_id_header.lower().encode("latin-1")
        self.resolve_user = resolve_user

    def read(self, scope: Scope) -> RequestInfo:
        """Everything the request says about itself, in one pass over its headers."""
        user_agent: str | None = None
        request_id: str | None = None
        seen_request_id = False
        forwarded: list[bytes] = []
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                if user_agent is None:
                    user_agent = header_text(value)
            elif name == self.request_id_header:
                if not seen_request_id:
                    request_id = accepted_request_id(value)
                seen_request_id = True
            elif name == self.client_ip.header_name:
                forwarded.append(value)
        client_ip, peer_ip = self.client_ip.resolve(scope.get("client"), forwarded)
        method = scope.get("method")
        path = scope.get("path")
        return RequestInfo(
            scope=scope,
            client_ip=client_ip,
            peer_ip=peer_ip,
            user_agent=user_agent,
            request_id=request_id or new_request_id(),
            method=method if isinstance(method, str) else None,
            path=path if isinstance(path, str) else "",
            resolve_user=self.resolve_user,
        )

    def request_id_echo(self, request: RequestInfo) -> tuple[bytes, bytes]:
        """The response header that echoes the request id."""
        return (self.request_id_header, request.request_id.encode("ascii"))


def accepted_request_id(value: bytes) -> str | None:
    """A client's request id header value, if we take it (else one is generated)."""
    return value.decode("ascii") if _VALID_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    """A random (version 4) UUID. Request ids correlate, they protect nothing (a client
    may send its own), so the fast non-cryptographic generator is enough."""
    bits = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60) | (0x4000 << 64) | (0x8 << 60)
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def error_outcome(status: int) -> Outcome | None:
    """The outcome an HTTP error status means: ``denied`` for 401 and 403, ``failure``
    for any other status from 400 up; None below 400 (it says nothing went wrong)."""
    if status < 400:
        return None
    return "denied" if status in (401, 403) else "failure"
