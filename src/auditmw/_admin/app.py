"""The admin app: one mountable ASGI app to read, search, export and verify the log.

    admin = AdminApp(store, authorize=is_admin)
    app = Starlette(routes=[Mount("/admin/audit", app=admin)], middleware=[...])

Access is denied unless ``authorize(request)`` grants it. It runs first for every HTTP
request — the dashboard, its static files, the API, the exports, even unknown paths —
and answers (sync or async):

- an ``Actor`` (with a user id or email): allowed; it is the actor of each export;
- ``None``: nobody is signed in → 401;
- ``False``: signed in, but not allowed → 403;
- or raises Starlette's ``HTTPException``: that status and detail.

``auth=AdminAuth(...)`` says how the host signs people in (see ``_access``): a browser
opening a page without access is sent to the sign-in page or gets a small HTML page
instead of JSON, and the OpenAPI document lists the security schemes.

Anything else is a programming error (``TypeError``): access is never granted by
accident. ``request.scope.get("user")`` holds what the host's authentication middleware
found (``request.user`` raises when there is none).

Every export records an ``export.requested`` event (format and filters, actor = the
admin, the request as ``AuditMiddleware`` captured it, else as the admin app's own
``RequestCapture`` does), committed before the first byte of the export is sent; if it
cannot be recorded, nothing is exported. Errors are JSON: ``{"error": {"code", "message"}}``
(plus ``param`` for a bad parameter) — only a browser's page load without access gets
HTML. A store that is closed or unavailable (``StoreUnavailableError``: its database is
down, frozen or locked past the store's time limits) gets ``503 store_unavailable`` with
``Retry-After``, from every route that uses it, exports included. The store's lifetime
belongs to the host app (open it in its lifespan): a mounted app gets no lifespan events.

This module puts the app together; each concept has its module in ``auditmw._admin``:
``authorization`` (``authorize`` and the answers to those denied, with ``access``),
``reading`` (events, facets, histogram), ``verification`` (``/verify``, proofs),
``exporting`` (the export routes; the formats are ``export``), ``pages`` (the dashboard),
``openapi``, ``parameters`` (the query parameters), ``responses`` and ``paths``.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from auditmw._admin.access import AdminAuth
from auditmw._admin.authorization import REQUEST_KEY, Authorize, Gate
from auditmw._admin.exporting import ExportRoutes
from auditmw._admin.openapi import OpenAPIRoute, openapi_document
from auditmw._admin.pages import dashboard_routes
from auditmw._admin.paths import to_trailing_slash, without_trailing_slash
from auditmw._admin.reading import ReadingRoutes
from auditmw._admin.responses import EXCEPTION_HANDLERS, SECURITY_HEADERS
from auditmw._admin.streaming import StreamRoutes
from auditmw._admin.verification import VerificationRoutes
from auditmw._capture import DEFAULT_REQUEST_ID_HEADER, RequestCapture
from auditmw._client_ip import X_FORWARDED_FOR
from auditmw._record import audit_context
from auditmw._stores.store import AuditStore

__all__ = ["AdminApp", "openapi_document"]


class AdminApp:
    """The admin app for ``store``, granting access through ``authorize`` (see module).

    ``trusted_proxies``, ``forwarded_header`` and ``request_id_header`` say how to read a
    request that no ``AuditMiddleware`` read before the admin app (as the middleware's
    options do): its export events carry the client IP and request id they find.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        authorize: Authorize,
        auth: AdminAuth | None = None,
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = X_FORWARDED_FOR,
        request_id_header: str = DEFAULT_REQUEST_ID_HEADER,
    ) -> None:
        if auth is not None and not isinstance(auth, AdminAuth):
            raise TypeError("auth must be an AdminAuth")
        self.store = store
        self.auth = auth or AdminAuth()
        self.gate = Gate(authorize, self.auth)
        self.capture = RequestCapture(
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            request_id_header=request_id_header,
        )
        routes: list[BaseRoute] = [
            *dashboard_routes(),
            *ReadingRoutes(store).routes(),
            *VerificationRoutes(store).routes(),
            *StreamRoutes(store).routes(),
            *ExportRoutes(store).routes(),
            *OpenAPIRoute(self.auth).routes(),
        ]
        self.router = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
        # Trailing slashes are handled in __call__, the same way under every framework.
        self.router.router.redirect_slashes = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.router(scope, receive, send)  # lifespan: nothing to do
            return

        echo = self._capture(scope)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (*SECURITY_HEADERS, *echo):
                    headers.setdefault(name, value)
            await send(message)

        denied = await self.gate.check(scope, receive)
        if denied is not None:
            await denied(scope, receive, send_secured)
            return
        redirect = to_trailing_slash(scope)
        if redirect is not None:
            await redirect(scope, receive, send_secured)
            return
        await self.router(without_trailing_slash(scope), receive, send_secured)

    def _capture(self, scope: Scope) -> tuple[tuple[str, str], ...]:
        """Put the request as captured in ``scope[REQUEST_KEY]``; the response header that
        echoes its request id when the admin app captured it itself.

        Under ``AuditMiddleware`` the request was captured (and its id is echoed) there,
        with the host's trusted proxies and request-id header: the admin app's events use
        that capture, as every other event of the request does."""
        context = audit_context.get()
        if context is not None and context.request is not None:
            scope[REQUEST_KEY] = context.request
            return ()
        request = self.capture.read(scope)
        scope[REQUEST_KEY] = request
        name, value = self.capture.request_id_echo(request)
        return ((name.decode("latin-1"), value.decode("ascii")),)
