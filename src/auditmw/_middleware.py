"""``AuditMiddleware``: the request context of every audit event, for any ASGI app.

A pure ASGI middleware (no ``BaseHTTPMiddleware``: its task group would hide context
changes). For each ``http`` and ``websocket`` request it reads, once, the client IP,
the peer IP, the user agent and the request id, puts them in the audit context and
resets it when the request ends. It never reads the request body. ``lifespan`` and
unknown scope types pass straight through.

On the way out it
- echoes the request id in a response header;
- commits the events that sync ``@audited`` handlers queued, before the response
  starts;
- records the optional ``http.request`` event, before the response completes: the
  start of the response is held back until its first body message, so for an ordinary
  response the event is committed before the client sees anything;
- enforces the fail-closed policy: if an event of this request could not be
  committed, a success response is replaced by ``503 audit_unavailable``, and a
  ``StoreError`` that escapes the app becomes that 503 too (unless the response had
  started: then the connection is cut short rather than completed), with
  ``Retry-After``. A WebSocket is refused at the handshake or closed with 1013 instead
  (see ``_WebSocketSession``).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditmw._client_ip import X_FORWARDED_FOR, ClientIPResolver
from auditmw._context import Actor, AuditContext, RequestInfo, audit_context, user_from_scope
from auditmw._errors import StoreError
from auditmw._event import Outcome
from auditmw._mask import DEFAULT_SENSITIVE_KEYS, Masker
from auditmw._record import FailurePolicy, Recorder
from auditmw._stores.store import AuditStore
from auditmw._text import header_text

REQUEST_ACTION = "http.request"
REQUEST_RESOURCE = "http"
MAX_PATH_CHARS = 2048
AUDIT_UNAVAILABLE_BODY = (
    b'{"error":{"code":"audit_unavailable","message":"The audit log cannot record this '
    b'request right now, so it was not completed. Try again later."}}'
)
# Seconds a client is told to wait (Retry-After) when the store is unavailable: every 503
# of the middleware, the Litestar plugin and the admin app.
RETRY_AFTER_SECONDS = 5
# A request id we accept from the client: 1-128 RFC 9110 token characters (UUIDs too).
_VALID_REQUEST_ID = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
_BODY_MESSAGES = frozenset(
    {"http.response.body", "http.response.pathsend", "http.response.zerocopysend"}
)


class AuditMiddleware:
    """Gives every audit event of a request its context; see the module docstring.

    - ``store``: where events go (open it in the app's lifespan).
    - ``failure_policy``: fail-closed by default; ``FailurePolicy(fail_open=True)``
      logs and counts instead. Keep a reference to read its ``failures`` counter.
    - ``trusted_proxies``: addresses/CIDRs of your reverse proxies. Empty (default):
      the client IP is the connecting peer and forwarding headers are ignored.
    - ``forwarded_header``: ``"x-forwarded-for"`` or ``"forwarded"`` (RFC 7239).
    - ``request_id_header``: read from the request when valid, else generated; echoed.
    - ``resolve_user``: ``scope -> Actor | None``, called when an event is recorded;
      default: the authenticated ``scope["user"]``.
    - ``sensitive_keys``: detail keys whose values are masked (replaces the defaults;
      extend with ``(*auditmw.DEFAULT_SENSITIVE_KEYS, "ssn")``).
    - ``record_requests``: HTTP methods (e.g. ``("POST", "PUT", "PATCH", "DELETE")``)
      whose requests are each recorded as an ``http.request`` event. Off by default.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: AuditStore,
        failure_policy: FailurePolicy | None = None,
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = X_FORWARDED_FOR,
        request_id_header: str = "x-request-id",
        resolve_user: Callable[[Scope], Actor | None] = user_from_scope,
        sensitive_keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        record_requests: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.failure_policy = failure_policy if failure_policy is not None else FailurePolicy()
        self.recorder = Recorder(store, self.failure_policy, Masker(sensitive_keys), resolve_user)
        self.client_ip = ClientIPResolver(trusted_proxies, forwarded_header)
        self.request_id_header = request_id_header.lower().encode("latin-1")
        self.record_requests = frozenset(method.upper() for method in record_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            await self.app(scope, receive, send)
            return
        request = self._request_info(scope)
        context = AuditContext(self.recorder, request)
        token = audit_context.set(context)
        try:
            if scope_type == "http":
                await _Exchange(self, context, request, send).run(scope, receive)
            else:
                await _WebSocketSession(self, request, send).run(scope, receive)
        finally:
            audit_context.reset(token)

    def _request_info(self, scope: Scope) -> RequestInfo:
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
        )

    def _request_id_of(self, request: RequestInfo) -> tuple[bytes, bytes]:
        """The response header that echoes the request id."""
        return (self.request_id_header, request.request_id.encode("ascii"))


class _Exchange:
    """One HTTP request and its response through the middleware; one per call."""

    def __init__(
        self,
        middleware: AuditMiddleware,
        context: AuditContext,
        request: RequestInfo,
        send: Send,
    ) -> None:
        self.app = middleware.app
        self.recorder = middleware.recorder
        self.context = context
        self.request = request
        self.downstream = send
        self.request_id = middleware._request_id_of(request)
        self.record = request.method in middleware.record_requests
        self.began = time.perf_counter()
        self.start: Message | None = None  # the app's response start, until forwarded
        self.status = 500
        self.started = False  # the response start went downstream
        self.replaced = False  # we answered 503 in the app's place
        self.recorded = False  # the http.request event was attempted

    async def run(self, scope: Scope, receive: Receive) -> None:
        try:
            await self.app(scope, receive, self.send)
        except Exception as exc:
            if self.request.deferred:  # a failed sync @audited call: commit it before the 500
                await self.recorder.flush(self.request)
            if not self.recorder.policy.fail_open and _has_store_error(exc):
                if self.replaced:
                    return
                if not self.started:
                    await self._send_unavailable()
                    return
            elif self.record and not self.recorded and not self.started:
                # Starlette's ServerErrorMiddleware, outside us, will send the 500.
                self.status = 500
                with suppress(StoreError):
                    await self._record_request()
            raise
        if self.start is not None and not self.started and not self.replaced:
            await self._open(final=True)  # the app sent no body at all: still answer
        if self.request.deferred:  # queued after the response, e.g. by a background task
            await self.recorder.flush(self.request)

    async def send(self, message: Message) -> None:
        if self.replaced:
            return  # we answered in the app's place: drop what it still sends
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.start = _with_header(message, self.request_id)
            if not self.record:
                await self._open(final=False)
            return
        if kind in _BODY_MESSAGES and self.start is not None:
            final = kind == "http.response.pathsend" or not message.get("more_body", False)
            if not self.started:
                if not await self._open(final):
                    return
            elif final and self.record and not self.recorded:
                # A streamed response: too late for a 503. Under fail-closed this raises
                # and the response is cut short instead of completed.
                await self._record_request()
        await self.downstream(message)

    async def _open(self, final: bool) -> bool:
        """Commit what must precede the response, then start it; False if it became a 503."""
        if self.request.deferred:
            await self.recorder.flush(self.request)
        if final and self.record:
            with suppress(StoreError):  # fail-closed marked the request: checked below
                await self._record_request()
        if self.request.store_error is not None and self.status < 400:
            await self._send_unavailable()
            return False
        assert self.start is not None
        self.started = True
        await self.downstream(self.start)
        return True

    async def _record_request(self) -> None:
        self.recorded = True
        duration_ms = round((time.perf_counter() - self.began) * 1000, 3)
        await record_request(self.recorder, self.context, self.status, duration_ms)

    async def _send_unavailable(self) -> None:
        self.replaced = True
        headers = _unavailable_headers(self.request_id)
        await self.downstream({"type": "http.response.start", "status": 503, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": AUDIT_UNAVAILABLE_BODY})


class _WebSocketSession:
    """One WebSocket connection through the middleware; one per call.

    The handshake response carries the request id. Sync ``@audited`` events are
    committed before each message goes out. Under fail-closed, once an event of the
    connection could not be committed nothing more goes out as if it had been: the
    handshake is refused (503, or a close where the server cannot send an HTTP
    response), an accepted connection is closed with 1013 "try again later", and the
    app's ``StoreError`` ends there instead of in the server. The app's own refusal of
    the handshake (an error status, like an HTTP error response) claims nothing and goes
    out whole.
    """

    def __init__(self, middleware: AuditMiddleware, request: RequestInfo, send: Send) -> None:
        self.app = middleware.app
        self.recorder = middleware.recorder
        self.request = request
        self.request_id = middleware._request_id_of(request)
        self.downstream = send
        extensions = request.scope.get("extensions") or {}
        self.can_send_response = "websocket.http.response" in extensions
        self.accepted = False
        self.closed = False  # a close or a handshake response went downstream
        self.refusing = False  # the app's own refusal (error status) went downstream

    async def run(self, scope: Scope, receive: Receive) -> None:
        failed = False  # a StoreError escaped the app
        try:
            await self.app(scope, receive, self.send)
        except Exception as exc:
            if self.recorder.policy.fail_open or not _has_store_error(exc):
                raise
            failed = True
        finally:
            if self.request.deferred:  # e.g. a sync @audited call just before the end
                await self.recorder.flush(self.request)
        if failed or self._event_missing():
            await self._close_unavailable()

    def _event_missing(self) -> bool:
        return self.request.store_error is not None and not self.recorder.policy.fail_open

    async def send(self, message: Message) -> None:
        if self.request.deferred:
            await self.recorder.flush(self.request)
        kind = message["type"]
        if self._event_missing() and not self._refusal(message):
            # An event of this connection is missing (the app may have swallowed the
            # error): stop the app rather than let it go on as if it were recorded.
            await self._close_unavailable()
            raise StoreError("audit event not recorded") from self.request.store_error
        if kind in ("websocket.accept", "websocket.http.response.start"):
            message = _with_header(message, self.request_id)
            self.accepted = kind == "websocket.accept"
            self.closed = not self.accepted
            self.refusing = kind == "websocket.http.response.start" and self._refusal(message)
        elif kind == "websocket.close":
            self.closed = True
        await self.downstream(message)

    def _refusal(self, message: Message) -> bool:
        """Whether ``message`` is (part of) the app's own refusal of the handshake."""
        if message["type"] == "websocket.http.response.start":
            return int(message.get("status", 200)) >= 400
        return message["type"] == "websocket.http.response.body" and self.refusing

    async def _close_unavailable(self) -> None:
        if self.closed:
            return
        self.closed = True
        # The client may be gone already: then there is nobody left to tell.
        with suppress(OSError, RuntimeError):
            if self.accepted or not self.can_send_response:
                # Before the accept, a close makes the server refuse the handshake (403).
                await self.downstream(
                    {"type": "websocket.close", "code": 1013, "reason": "audit_unavailable"}
                )
                return
            headers = _unavailable_headers(self.request_id)
            start = {"type": "websocket.http.response.start", "status": 503, "headers": headers}
            await self.downstream(start)
            await self.downstream(
                {"type": "websocket.http.response.body", "body": AUDIT_UNAVAILABLE_BODY}
            )


async def record_request(
    recorder: Recorder, context: AuditContext, status: int, duration_ms: float | None
) -> None:
    """Commit the ``http.request`` event of the context's request (``record_requests``);
    ``duration_ms`` is left out where it is not known."""
    request = context.request
    assert request is not None
    details: dict[str, object] = {
        "method": request.method,
        "path": request.path.encode("utf-8", "replace").decode("utf-8")[:MAX_PATH_CHARS],
        "status": status,
    }
    if duration_ms is not None:
        details["duration_ms"] = duration_ms
    outcome: Outcome = "success"
    if status >= 400:
        outcome = "denied" if status in (401, 403) else "failure"
    event = recorder.event(
        context, REQUEST_ACTION, REQUEST_RESOURCE, details=details, outcome=outcome
    )
    await recorder.commit(event, request)


def _unavailable_headers(request_id: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(AUDIT_UNAVAILABLE_BODY)).encode("ascii")),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode("ascii")),
        request_id,
    ]


def _with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    """``message`` with ``header`` added to its headers, unless the app set its own."""
    headers = list(message.get("headers", ()))
    for key, _ in headers:
        if bytes(key).lower() == header[0]:
            return message
    headers.append(header)
    return {**message, "headers": headers}


def accepted_request_id(value: bytes) -> str | None:
    """A client's request id header value, if we take it (else one is generated)."""
    return value.decode("ascii") if _VALID_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    """A random (version 4) UUID. Request ids correlate, they protect nothing (a client
    may send its own), so the fast non-cryptographic generator is enough."""
    bits = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60) | (0x4000 << 64) | (0x8 << 60)
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _has_store_error(exc: BaseException) -> bool:
    """Whether a StoreError is this exception, its cause or context, or in its group:
    frameworks wrap what a handler raised (Litestar: ``LitestarException from``)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, StoreError):
            return True
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return False
