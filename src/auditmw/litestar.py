"""Litestar integration: ``AuditPlugin``, an ``InitPlugin``.

Litestar builds a middleware stack per route, after routing, and converts a handler's
exceptions into responses *inside* that stack, so an outer middleware never sees a
``StoreError`` raised by a handler. The plugin therefore does two things:

- adds ``AuditMiddleware`` as the app's first (outermost) middleware, with one shared
  ``FailurePolicy`` and client IP resolver for every route's instance, so it runs
  before the app's authentication middleware and reads ``scope["user"]`` after it;
- registers an exception handler turning ``StoreError`` into the same
  ``503 audit_unavailable`` JSON response the middleware sends elsewhere (unless the
  app registered its own).

Requests that match no route (404, 405) never reach route middleware in Litestar; a
``before_send`` hook gives their response a request id all the same (the client's
when valid, else a new one) and records their ``http.request`` event when their method
is in ``record_requests`` (without ``duration_ms``: nothing saw the request begin).

This module imports litestar (an optional extra); ``import auditmw`` does not:
``from auditmw.litestar import AuditPlugin`` (``auditmw.AuditPlugin`` imports it when
first named).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, cast

from litestar import Request, Response
from litestar.config.app import AppConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin
from starlette.types import ASGIApp, Message, Scope

from auditmw._capture import DEFAULT_REQUEST_ID_HEADER
from auditmw._client_ip import X_FORWARDED_FOR
from auditmw._context import Actor, user_from_scope
from auditmw._errors import StoreError
from auditmw._mask import DEFAULT_SENSITIVE_KEYS
from auditmw._middleware import (
    RETRY_AFTER_SECONDS,
    AuditMiddleware,
    fail_closed_answer,
    record_request,
)
from auditmw._record import AuditContext, FailurePolicy
from auditmw._stores.store import AuditStore

__all__ = ["AuditPlugin", "audit_unavailable"]


class AuditPlugin(InitPlugin):
    """Audit a Litestar app: ``Litestar(..., plugins=[AuditPlugin(store=store)])``.

    Takes the options of ``AuditMiddleware``. ``failure_policy`` (created when not
    given) is shared by every route and exposed for monitoring.
    """

    def __init__(
        self,
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
        self.failure_policy = failure_policy if failure_policy is not None else FailurePolicy()
        options: dict[str, Any] = {
            "store": store,
            "failure_policy": self.failure_policy,
            "trusted_proxies": tuple(trusted_proxies),
            "forwarded_header": forwarded_header,
            "request_id_header": request_id_header,
            "resolve_user": resolve_user,
            "sensitive_keys": tuple(sensitive_keys),
            "record_requests": tuple(record_requests),
        }
        self._options = options
        # Never called as an app: it reads the requests no route middleware sees.
        self._unrouted = AuditMiddleware(_no_app, **options)
        # Litestar types ASGI apps with its own TypedDict scopes; the protocol is the same.
        self.middleware = DefineMiddleware(cast(Any, self._route_middleware))

    def _route_middleware(self, app: ASGIApp) -> AuditMiddleware:
        """The middleware of one route (Litestar builds one per route)."""
        middleware = AuditMiddleware(app, **self._options)
        # One capture for the whole app: a server that rewrites the client is reported
        # once, not once per route.
        middleware.capture = self._unrouted.capture
        return middleware

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.middleware.insert(0, self.middleware)
        app_config.exception_handlers.setdefault(StoreError, audit_unavailable)
        # Litestar types messages and scopes with its own TypedDicts; the protocol is the same.
        app_config.before_send.append(cast(Any, self._answer_unrouted))
        return app_config

    async def _answer_unrouted(self, message: Message, scope: Scope) -> None:
        """Do for a response without a request id what the middleware would have: only
        responses to requests that matched no route lack one."""
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(cast(Any, message))
        middleware = self._unrouted
        name = middleware.capture.request_id_header.decode("latin-1")
        if name in headers:
            return  # the middleware (or the app) set it
        request = middleware.capture.read(scope)
        headers[name] = request.request_id
        if request.method in middleware.record_requests:
            # Committed before the response starts. A 404 or 405 claims nothing, so a
            # lost event does not replace it (as under the middleware); it is counted.
            with suppress(StoreError):
                context = AuditContext(middleware.recorder, request)
                await record_request(middleware.recorder, context, message["status"], None)


async def _no_app(scope: Scope, receive: Any, send: Any) -> None:
    raise RuntimeError("AuditPlugin's reader of unrouted requests is not an app")


def audit_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The response to a ``StoreError`` under the fail-closed policy: ``503
    audit_unavailable``, or ``422 audit_event_refused`` when the database refused the
    event's data (the middleware's answers)."""
    answer = fail_closed_answer(exc)
    retry = {"retry-after": str(RETRY_AFTER_SECONDS)} if answer.retry_after else {}
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type="application/json",
        headers=retry,
    )
