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

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditmw._capture import DEFAULT_REQUEST_ID_HEADER, RequestCapture, error_outcome
from auditmw._client_ip import X_FORWARDED_FOR
from auditmw._context import Actor, RequestInfo, user_from_scope
from auditmw._errors import EventRefusedError, StoreError
from auditmw._mask import DEFAULT_SENSITIVE_KEYS, Masker
from auditmw._record import AuditContext, FailurePolicy, Recorder, audit_context
from auditmw._stores.store import AuditStore

REQUEST_ACTION = "http.request"
REQUEST_RESOURCE = "http"
MAX_PATH_CHARS = 2048
AUDIT_UNAVAILABLE_BODY = (
    b'{"error":{"code":"audit_unavailable","message":"The audit log cannot record this '
    b'request right now, so it was not completed. Try again later."}}'
)
AUDIT_REFUSED_BODY = (
    b'{"error":{"code":"audit_event_refused","message":"The audit log refused the event of '
    b"this request (the database does not take its data), so it was not completed. "
    b'Sending it again will not help."}}'
)
# Seconds a client is told to wait (Retry-After) when the store is unavailable: every 503
# of the middleware, the Litestar plugin and the admin app.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class FailClosedAnswer:
    """What a client is told, under fail-closed, when its request's event was not stored."""

    status: int
    code: str  # the body's error code; a WebSocket's close reason
    body: bytes
    retry_after: bool  # whether trying again later can succeed
    close_code: int  # a WebSocket's close code once accepted


# The store is unreachable, slow or locked: the same request may succeed later.
UNAVAILABLE = FailClosedAnswer(503, "audit_unavailable", AUDIT_UNAVAILABLE_BODY, True, 1013)
# The database refused this event's data (EventRefusedError): the same request fails again.
REFUSED = FailClosedAnswer(422, "audit_event_refused", AUDIT_REFUSED_BODY, False, 1008)
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
        request_id_header: str = DEFAULT_REQUEST_ID_HEADER,
        resolve_user: Callable[[Scope], Actor | None] = user_from_scope,
        sensitive_keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        record_requests: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.failure_policy = failure_policy if failure_policy is not None else FailurePolicy()
        self.recorder = Recorder(store, self.failure_policy, Masker(sensitive_keys))
        self.capture = RequestCapture(
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            request_id_header=request_id_header,
            resolve_user=resolve_user,
        )
        self.record_requests = frozenset(method.upper() for method in record_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            await self.app(scope, receive, send)
            return
        request = self.capture.read(scope)
        context = AuditContext(self.recorder, request)
        token = audit_context.set(context)
        try:
            if scope_type == "http":
                await _Exchange(self, context, request, send).run(scope, receive)
            else:
                await _WebSocketSession(self, request, send).run(scope, receive)
        finally:
            audit_context.reset(token)


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
        self.request_id = middleware.capture.request_id_echo(request)
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
            if not self.recorder.policy.fail_open and has_store_error(exc):
                if self.replaced:
                    return
                if not self.started:
                    await self._send_fail_closed(fail_closed_answer(exc))
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
            await self._send_fail_closed(fail_closed_answer(self.request.store_error))
            return False
        assert self.start is not None
        self.started = True
        await self.downstream(self.start)
        return True

    async def _record_request(self) -> None:
        self.recorded = True
        duration_ms = round((time.perf_counter() - self.began) * 1000, 3)
        await record_request(self.recorder, self.context, self.status, duration_ms)

    async def _send_fail_closed(self, answer: FailClosedAnswer) -> None:
        self.replaced = True
        headers = fail_closed_headers(answer, self.request_id)
        start = {"type": "http.response.start", "status": answer.status, "headers": headers}
        await self.downstream(start)
        await self.downstream({"type": "http.response.body", "body": answer.body})


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
        self.request_id = middleware.capture.request_id_echo(request)
        self.downstream = send
        extensions = request.scope.get("extensions") or {}
        self.can_send_response = "websocket.http.response" in extensions
        self.accepted = False
        self.closed = False  # a close or a handshake response went downstream
        self.refusing = False  # the app's own refusal (error status) went downstream

    async def run(self, scope: Scope, receive: Receive) -> None:
        failed: BaseException | None = None  # a StoreError that escaped the app
        try:
            await self.app(scope, receive, self.send)
        except Exception as exc:
            if self.recorder.policy.fail_open or not has_store_error(exc):
                raise
            failed = exc
        finally:
            if self.request.deferred:  # e.g. a sync @audited call just before the end
                await self.recorder.flush(self.request)
        if failed is not None or self._event_missing():
            await self._close_fail_closed(failed or self.request.store_error)

    def _event_missing(self) -> bool:
        return self.request.store_error is not None and not self.recorder.policy.fail_open

    async def send(self, message: Message) -> None:
        if self.request.deferred:
            await self.recorder.flush(self.request)
        kind = message["type"]
        if self._event_missing() and not self._refusal(message):
            # An event of this connection is missing (the app may have swallowed the
            # error): stop the app rather than let it go on as if it were recorded.
            await self._close_fail_closed(self.request.store_error)
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

    async def _close_fail_closed(self, error: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        answer = fail_closed_answer(error)
        # The client may be gone already: then there is nobody left to tell.
        with suppress(OSError, RuntimeError):
            if self.accepted or not self.can_send_response:
                # Before the accept, a close makes the server refuse the handshake (403).
                await self.downstream(
                    {"type": "websocket.close", "code": answer.close_code, "reason": answer.code}
                )
                return
            headers = fail_closed_headers(answer, self.request_id)
            start = {
                "type": "websocket.http.response.start",
                "status": answer.status,
                "headers": headers,
            }
            await self.downstream(start)
            await self.downstream({"type": "websocket.http.response.body", "body": answer.body})


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
    outcome = error_outcome(status) or "success"
    event = recorder.event(
        context, REQUEST_ACTION, REQUEST_RESOURCE, details=details, outcome=outcome
    )
    await recorder.commit(event, request)


def fail_closed_answer(error: BaseException | None) -> FailClosedAnswer:
    """``REFUSED`` when the database refused the event's data (an ``EventRefusedError``
    is ``error``, its cause or context, or in its group), else ``UNAVAILABLE``."""
    return REFUSED if _errors_in(error, EventRefusedError) else UNAVAILABLE


def fail_closed_headers(
    answer: FailClosedAnswer, request_id: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer.body)).encode("ascii")),
        request_id,
    ]
    if answer.retry_after:
        headers.insert(2, (b"retry-after", str(RETRY_AFTER_SECONDS).encode("ascii")))
    return headers


def _with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    """``message`` with ``header`` added to its headers, unless the app set its own."""
    headers = list(message.get("headers", ()))
    for key, _ in headers:
        if bytes(key).lower() == header[0]:
            return message
    headers.append(header)
    return {**message, "headers": headers}


def has_store_error(exc: BaseException) -> bool:
    """Whether a StoreError is this exception, its cause or context, or in its group:
    frameworks wrap what a handler raised (Litestar: ``LitestarException from``)."""
    return _errors_in(exc, StoreError)


def _errors_in(exc: BaseException | None, kind: type[BaseException]) -> bool:
    pending: list[BaseException] = [] if exc is None else [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, kind):
            return True
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return False
