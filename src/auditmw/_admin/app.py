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
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from auditmw._admin.access import (
    AdminAuth,
    denied_page,
    is_browser_script,
    is_page_load,
    sign_in_redirect,
)
from auditmw._admin.export import MEDIA_TYPES, Format, export_chunks, export_filename
from auditmw._admin.mount import route_path
from auditmw._admin.parameters import (
    BUCKETS,
    FILTER_NAMES,
    FILTERS,
    MAX_AGE,
    PAGE_PARAMS,
    PAGING,
    check_params,
    parse_buckets,
    parse_filter,
    parse_limit,
    parse_max_age,
    parse_page,
)
from auditmw._capture import DEFAULT_REQUEST_ID_HEADER, RequestCapture
from auditmw._client_ip import X_FORWARDED_FOR
from auditmw._context import Actor
from auditmw._errors import StoreClosedError, StoreError, StoreUnavailableError, ValidationError
from auditmw._event import NewEvent, utc_timestamp
from auditmw._mask import Masker
from auditmw._middleware import RETRY_AFTER_SECONDS
from auditmw._record import AuditContext, Recorder, audit_context
from auditmw._stores.query import EventFilter, QueryError
from auditmw._stores.store import AuditStore
from auditmw._transparency.proofs import prove_inclusion

DASHBOARD_DIR = Path(__file__).with_name("dashboard")
ADMIN_KEY = "auditmw.admin"  # the scope key holding the Actor of a granted request
REQUEST_KEY = "auditmw.request"  # the scope key holding the request as captured
EXPORT_ACTION = "export.requested"
EXPORT_RESOURCE = "audit_log"
OPENAPI_PATH = "/openapi.json"
MAX_EVENT_ID_CHARS = 256
# Sent with every response: audit data must not be cached, sniffed or framed.
SECURITY_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
)
# The dashboard runs only its own files: nothing inline, nothing from elsewhere.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def checked_admin(actor: Actor) -> Actor:
    """The actor ``authorize`` granted access to; an error for one that names nobody."""
    for name in ("user_id", "user_email"):
        value = getattr(actor, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"authorize() returned an Actor whose {name} is not a string")
    if not (actor.user_id or actor.user_email):
        raise ValueError("authorize() returned an Actor without a user_id or a user_email")
    return actor


def export_event(recorder: Recorder, scope: Scope, format: Format, filter: EventFilter) -> NewEvent:
    """The ``export.requested`` event of an export: the granted admin as its actor, and
    the request as captured (client IP, user agent, request id) like every event."""
    context = AuditContext(recorder, scope[REQUEST_KEY], actor=scope[ADMIN_KEY])
    details = {"format": format, "filters": filter.to_params()}
    return recorder.event(context, EXPORT_ACTION, EXPORT_RESOURCE, details=details)


AuthorizeResult: TypeAlias = Actor | Literal[False] | None
Authorize: TypeAlias = Callable[[Request], AuthorizeResult | Awaitable[AuthorizeResult]]


class AdminApp:
    """The admin app for ``store``, granting access through ``authorize`` (see module)."""

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
        if not callable(authorize):
            raise TypeError("authorize must be a callable: (request) -> Actor | None | False")
        if auth is not None and not isinstance(auth, AdminAuth):
            raise TypeError("auth must be an AdminAuth")
        self.store = store
        self.auth = auth or AdminAuth()
        # Reads requests that no AuditMiddleware captured before (see _request_info).
        self.capture = RequestCapture(
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            request_id_header=request_id_header,
        )
        # The admin app's own events: its store, no masking (the details are filters).
        self.recorder = Recorder(store, masker=Masker(()))
        self._authorize = authorize
        self._openapi_document = openapi_document(self.auth)
        self._verifying: asyncio.Future[dict[str, Any]] | None = None
        self._last_verified: tuple[float, dict[str, Any]] | None = None  # (monotonic, body)
        self._app = Starlette(
            routes=[
                Route("/", self._dashboard, methods=["GET"]),
                Route("/events", self._events, methods=["GET"]),
                Route("/events/{event_id}", self._event, methods=["GET"]),
                Route("/events/{event_id}/proof", self._proof, methods=["GET"]),
                Route("/facets", self._facets, methods=["GET"]),
                Route("/histogram", self._histogram, methods=["GET"]),
                Route("/export.csv", self._export_csv, methods=["GET"]),
                Route("/export.jsonl", self._export_jsonl, methods=["GET"]),
                Route("/verify", self._verify, methods=["GET"]),
                Route(OPENAPI_PATH, self._openapi, methods=["GET"]),
                Mount("/static", StaticFiles(directory=DASHBOARD_DIR, check_dir=False)),
            ],
            exception_handlers={
                HTTPException: _http_error,
                QueryError: _query_error,
                StoreError: _store_error,
            },
        )
        # Trailing slashes are handled in __call__, the same way under every framework.
        self._app.router.redirect_slashes = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)  # lifespan: nothing to do
            return

        echo = self._request_info(scope)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (*SECURITY_HEADERS, *echo):
                    headers.setdefault(name, value)
            await send(message)

        denied = await self._check_access(scope, receive)
        if denied is not None:
            await denied(scope, receive, send_secured)
            return
        redirect = _to_trailing_slash(scope)
        if redirect is not None:
            await redirect(scope, receive, send_secured)
            return
        await self._app(_without_trailing_slash(scope), receive, send_secured)

    def _request_info(self, scope: Scope) -> tuple[tuple[str, str], ...]:
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

    async def _check_access(self, scope: Scope, receive: Receive) -> Response | None:
        """None when ``authorize`` grants access (and its Actor is in the scope)."""
        try:
            result = self._authorize(Request(scope, receive))
            if inspect.isawaitable(result):
                result = await result
        except HTTPException as exc:
            return _http_error_response(exc)
        if isinstance(result, Actor):
            scope[ADMIN_KEY] = checked_admin(result)
            return None
        if result is None:
            return self._denied(scope, 401, "unauthenticated", "sign in to use the audit log")
        if result is False:
            return self._denied(scope, 403, "forbidden", "you may not use the audit log")
        raise TypeError(
            f"authorize() returned {result!r}: return an Actor to allow, None when "
            "nobody is signed in (401), False for someone not allowed (403)"
        )

    def _denied(self, scope: Scope, status_code: int, code: str, message: str) -> Response:
        """401/403: JSON for API clients; a browser's page load gets the sign-in page
        (401, when there is one) or a small HTML page."""
        request_headers = Headers(scope=scope)
        headers = {}
        if (
            status_code == 401
            and self.auth.challenge is not None
            and not is_browser_script(request_headers)
        ):
            headers["www-authenticate"] = self.auth.challenge
        if not is_page_load(scope["method"], request_headers):
            return error_response(status_code, code, message, headers=headers)
        if status_code == 401 and self.auth.sign_in_url is not None:
            return sign_in_redirect(self.auth, _client_path(scope) + _query_part(scope))
        # The host app's home: Starlette keeps it in app_root_path, Litestar in root_path.
        home = scope.get("app_root_path", scope.get("root_path", "")) + "/"
        return denied_page(status_code, home, headers)

    # --- routes ---------------------------------------------------------------------------

    async def _dashboard(self, request: Request) -> Response:
        index = DASHBOARD_DIR / "index.html"
        if not index.is_file():
            return error_response(404, "not_found", "the dashboard is not installed")
        return FileResponse(index, headers={"content-security-policy": DASHBOARD_CSP})

    async def _events(self, request: Request) -> Response:
        params = check_params(request.query_params.multi_items(), [*FILTER_NAMES, *PAGE_PARAMS])
        filter = parse_filter(params)
        limit = parse_limit(params.get("limit"))
        page = parse_page(params.get("page"))
        cursor = params.get("cursor")
        if page is not None and cursor is not None:
            raise QueryError("page", "cannot be combined with cursor; use one or the other")
        offset = (page - 1) * limit if page is not None else 0
        result = await self.store.query(filter, limit=limit, cursor=cursor, offset=offset)
        body: dict[str, Any] = {
            "events": [event.to_dict() for event in result.events],
            "next_cursor": result.next_cursor,
            "limit": limit,
        }
        if page is not None:
            body["page"] = page
        return json_response(body)

    async def _event(self, request: Request) -> Response:
        check_params(request.query_params.multi_items(), ())
        event_id: str = request.path_params["event_id"]
        event = None
        if len(event_id) <= MAX_EVENT_ID_CHARS:
            event = await self.store.get(event_id)
        if event is None:
            return error_response(404, "not_found", "no event has this id")
        return json_response(event.to_dict())

    async def _proof(self, request: Request) -> Response:
        """The event's Merkle inclusion proof: anchored in the newest stored checkpoint
        that covers it, else against its log's current root."""
        check_params(request.query_params.multi_items(), ())
        event_id: str = request.path_params["event_id"]
        event = None
        if len(event_id) <= MAX_EVENT_ID_CHARS:
            event = await self.store.get(event_id)
        proof = None if event is None else await prove_inclusion(self.store, event.log, event.seq)
        if proof is None:
            return error_response(404, "not_found", "no event has this id")
        return json_response(proof.to_dict())

    async def _facets(self, request: Request) -> Response:
        check_params(request.query_params.multi_items(), ())
        return json_response(
            {
                "actions": await self.store.distinct_values("action"),
                "resources": await self.store.distinct_values("resource"),
                "outcomes": await self.store.distinct_values("outcome"),
            }
        )

    async def _histogram(self, request: Request) -> Response:
        params = check_params(request.query_params.multi_items(), [*FILTER_NAMES, BUCKETS.name])
        filter = parse_filter(params)
        buckets = parse_buckets(params.get("buckets"))
        histogram = await self.store.histogram(filter, buckets=buckets)
        return json_response(histogram.to_dict())

    async def _verify(self, request: Request) -> Response:
        params = check_params(request.query_params.multi_items(), (MAX_AGE.name,))
        max_age = parse_max_age(params.get("max_age"))
        last = self._last_verified
        if max_age is not None and last is not None and time.monotonic() - last[0] <= max_age:
            return json_response(last[1])  # recent enough for the caller
        # Requests that arrive while a verification runs share it (it reads every event).
        if self._verifying is None or self._verifying.done():
            self._verifying = asyncio.ensure_future(self._run_verification())
        return json_response(await asyncio.shield(self._verifying))

    async def _run_verification(self) -> dict[str, Any]:
        report = await self.store.verify()
        body = {**report.to_dict(), "checked_at": utc_timestamp()}
        self._last_verified = (time.monotonic(), body)
        return body

    async def _openapi(self, request: Request) -> Response:
        # Where this app is mounted, as the client sees it (behind any proxy prefix).
        path = _client_path(request.scope).rstrip("/")
        mount = path.removesuffix(OPENAPI_PATH) if path.endswith(OPENAPI_PATH) else None
        if mount is None:  # a server without raw_path: Starlette's mount point
            mount = request.scope.get("root_path", "")
        servers = [{"url": mount or "/", "description": "This admin app, where it is mounted"}]
        return json_response({**self._openapi_document, "servers": servers})

    async def _export_csv(self, request: Request) -> Response:
        return await self._export(request, "csv")

    async def _export_jsonl(self, request: Request) -> Response:
        return await self._export(request, "jsonl")

    async def _export(self, request: Request, format: Format) -> Response:
        params = check_params(request.query_params.multi_items(), FILTER_NAMES)
        filter = parse_filter(params)
        headers = {"content-disposition": f'attachment; filename="{export_filename(format)}"'}
        if request.method == "HEAD":  # no export happens: nothing to record
            return Response(media_type=MEDIA_TYPES[format], headers=headers)
        record = export_event(self.recorder, request.scope, format, filter)
        try:
            await self.store.append(record)  # returns once the event is committed
        except StoreUnavailableError as exc:
            return store_unavailable(f"nothing was exported: it could not be recorded ({exc})")
        except (StoreError, ValidationError) as exc:
            return error_response(
                500,
                "export_not_recorded",
                f"nothing was exported: it could not be recorded ({exc})",
            )
        return StreamingResponse(
            export_chunks(self.store.iter_events(filter), format),
            media_type=MEDIA_TYPES[format],
            headers=headers,
        )


# --- responses -------------------------------------------------------------------------------


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json")


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, str] = {"code": code, "message": message}
    if param is not None:
        error["param"] = param
    response = json_response({"error": error}, status_code)
    response.headers.update(headers or {})
    return response


_HTTP_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
}


def _http_error_response(exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail, headers=dict(exc.headers or {}))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _http_error_response(exc)


async def _query_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueryError)
    return error_response(400, exc.code, str(exc), param=exc.param)


async def _store_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreClosedError):
        return store_unavailable("the audit store is not open")
    if isinstance(exc, StoreUnavailableError):
        return store_unavailable(f"the audit store is unavailable, try again later: {exc}")
    return error_response(500, "store_error", str(exc))


def store_unavailable(message: str) -> Response:
    """503 ``store_unavailable``: nothing was done; the same request may succeed later."""
    headers = {"retry-after": str(RETRY_AFTER_SECONDS)}
    return error_response(503, "store_unavailable", message, headers=headers)


# --- paths: mounted the same way in every framework ---------------------------------------


def _client_path(scope: Scope) -> str:
    """The request's path as the client sent it, percent-encoded: ``raw_path``, which
    servers (uvicorn) prefix with the proxy's ``root_path``; without one, Starlette's
    ``path`` (which includes ``root_path``)."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1")
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    return quote(path if path.startswith(root) else root + path)


def _query_part(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return "?" + query.decode("latin-1") if query else ""


def _to_trailing_slash(scope: Scope) -> Response | None:
    """A redirect from the mount point without its slash (``/admin/audit``) to it with one:
    the dashboard's relative URLs (``static/...``, ``events``) need it. Relative, so it
    holds behind proxies that strip a prefix."""
    if scope["method"] not in ("GET", "HEAD") or route_path(scope) not in ("", "/"):
        return None
    path = _client_path(scope)
    if path.endswith("/"):
        return None
    return RedirectResponse(path.rsplit("/", 1)[-1] + "/" + _query_part(scope), 307)


def _without_trailing_slash(scope: Scope) -> Scope:
    """``scope`` with ``/events/`` as ``/events`` (Litestar's mounts add the slash)."""
    route = route_path(scope)
    if len(route) > 1 and route.endswith("/"):
        return {**scope, "path": scope["path"].rstrip("/") or "/"}
    return scope


# --- OpenAPI ---------------------------------------------------------------------------------


def openapi_document(auth: AdminAuth | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the admin app, with the security schemes of ``auth``
    (paths relative to its mount point; the app adds ``servers`` to each copy it serves)."""
    auth = auth or AdminAuth()
    nullable_text = {"type": ["string", "null"]}
    filters = [parameter.openapi() for parameter in FILTERS]
    paging = [parameter.openapi() for parameter in PAGING]
    event = {
        "type": "object",
        "required": [*_EVENT_TYPES],
        "properties": {
            name: {"type": kind if name not in _NULLABLE else [kind, "null"]}
            for name, kind in _EVENT_TYPES.items()
        },
    }
    refs = {name: {"$ref": f"#/components/schemas/{name}"} for name in _SCHEMAS}

    def ok(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
        return {"description": "OK", "content": {media: {"schema": schema}}}

    def error(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": refs["Error"]}},
        }

    def get(summary: str, responses: dict[str, Any], parameters: list[Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}

    # Errors every operation can answer (401, 403), and those of the API routes; added
    # to each operation by _add_shared_parts.
    unauthenticated = error("`unauthenticated`: nobody is signed in.")
    if auth.challenge is not None:
        unauthenticated["headers"] = {
            "WWW-Authenticate": {
                "required": True,
                "schema": {"type": "string"},
                "description": f"How to authenticate: `{auth.challenge}`.",
            }
        }
    denied = {"401": unauthenticated, "403": error("`forbidden`: not allowed.")}
    bad = {
        "400": error(
            "A parameter is invalid (`invalid_parameter`, `unknown_parameter`, "
            "`invalid_cursor`, `foreign_cursor`); `error.param` names it."
        )
    }
    store_unavailable = error(
        "`store_unavailable`: the audit store is not open, cannot be reached, or did not "
        "answer within its time limits (a database down, frozen or locked); nothing was "
        "done. Try again after `Retry-After` seconds."
    )
    store_unavailable["headers"] = {
        "Retry-After": {
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "description": "Seconds to wait before trying again.",
        }
    }
    store_errors = {"500": error("`store_error`: the store failed."), "503": store_unavailable}

    export_headers = {
        "Content-Disposition": {
            "schema": {"type": "string"},
            "description": 'attachment; filename="audit-logs-YYYY-MM-DD.csv" (or .jsonl)',
        }
    }
    not_recorded = error(
        "`export_not_recorded`: the export could not be recorded, so nothing was exported "
        "(a store that is unavailable answers 503 instead); `store_error`: the store failed."
    )

    def export(summary: str, media: str) -> dict[str, Any]:
        response = {**ok({"type": "string"}, media), "headers": export_headers}
        return get(summary, {"200": response, "500": not_recorded}, filters)

    event_id = [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    files = sorted(file.name for file in DASHBOARD_DIR.glob("*") if file.is_file())
    file_name = {"type": "string", **({"enum": files} if files else {})}
    paths = {
        "/": get(
            "The dashboard page",
            {
                "200": ok({"type": "string"}, "text/html"),
                "404": error("The dashboard is not installed."),
            },
            [],
        ),
        "/static/{path}": get(
            "Files of the dashboard",
            {"200": {"description": "OK", "content": {"*/*": {}}}, "404": error("No such file.")},
            [{"name": "path", "in": "path", "required": True, "schema": file_name}],
        ),
        "/events": get(
            "Events matching the filters, newest first, one page",
            {"200": ok(refs["EventPage"])},
            [*filters, *paging],
        ),
        "/events/{event_id}": get(
            "One event", {"200": ok(refs["Event"]), "404": error("No event has this id.")}, event_id
        ),
        "/events/{event_id}/proof": get(
            "The event's Merkle inclusion proof (RFC 9162): in the tree of the newest "
            "signed checkpoint covering it (anchored), else of its log as it is now",
            {"200": ok(refs["InclusionProof"]), "404": error("No event has this id.")},
            event_id,
        ),
        "/facets": get(
            "Distinct actions, resources and outcomes in the log (for filter choices)",
            {"200": ok(refs["Facets"])},
            [],
        ),
        "/histogram": get(
            "How many events match the filters per interval of time (activity over "
            "time): counted in the database; the counts add up to the matches",
            {"200": ok(refs["Histogram"])},
            [
                *filters,
                BUCKETS.openapi(),
            ],
        ),
        "/export.csv": export(
            "All matching events as CSV (recorded as export.requested)", "text/csv"
        ),
        "/export.jsonl": export(
            "All matching events as JSON Lines, in chain order (recorded as export.requested)",
            "application/x-ndjson",
        ),
        "/verify": get(
            "Verify the whole chain",
            {"200": ok(refs["VerifyReport"])},
            [MAX_AGE.openapi()],
        ),
        OPENAPI_PATH: get("This document", {"200": ok({"type": "object"})}, []),
    }
    _add_shared_parts(paths, auth, access_errors=denied, api_errors={**bad, **store_errors})
    if auth.security_schemes:
        how = "Authenticate with any one of the security schemes listed."
    else:
        how = (
            "How to authenticate is up to the host application, which does not describe "
            "it here (no security schemes are configured)."
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "auditmw admin API",
            "version": "1",
            "description": "Read, search, export and verify a tamper-evident audit log. "
            "Paths are relative to where the admin app is mounted (`servers`). Every route "
            "needs the host application's authorization (401: nobody signed in, 403: not "
            f"allowed). {how} Errors are JSON. (A browser opening a page without access "
            "is sent to the sign-in page or shown an HTML page instead, and a browser's "
            "own scripts get no `WWW-Authenticate`.) Methods other than GET and HEAD get "
            "405 with `Allow`.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Event": event,
                "EventPage": {
                    "type": "object",
                    "required": ["events", "next_cursor", "limit"],
                    "properties": {
                        "events": {"type": "array", "items": refs["Event"]},
                        "next_cursor": nullable_text,
                        "limit": {"type": "integer"},
                        "page": {"type": "integer"},
                    },
                },
                "InclusionProof": {
                    "type": "object",
                    "required": [
                        "log",
                        "seq",
                        "leaf_index",
                        "tree_size",
                        "leaf_hash",
                        "root",
                        "proof",
                        "anchored",
                        "checkpoint",
                    ],
                    "properties": {
                        "log": {"type": "string"},
                        "seq": {"type": "integer"},
                        "leaf_index": {"type": "integer"},
                        "tree_size": {"type": "integer"},
                        "leaf_hash": {"type": "string"},
                        "root": {"type": "string"},
                        "proof": {"type": "array", "items": {"type": "string"}},
                        "anchored": {"type": "boolean"},
                        "checkpoint": {
                            **nullable_text,
                            "description": "The signed note (C2SP tlog-checkpoint) whose "
                            "root the proof reaches, when anchored.",
                        },
                    },
                },
                "Facets": {
                    "type": "object",
                    "required": ["actions", "resources", "outcomes"],
                    "properties": {
                        name: {"type": "array", "items": {"type": "string"}}
                        for name in ("actions", "resources", "outcomes")
                    },
                },
                "Histogram": {
                    "type": "object",
                    "required": ["from", "to", "bucket_ms", "total", "buckets"],
                    "properties": {
                        "from": {
                            "anyOf": [_date_time(), {"type": "null"}],
                            "description": "Start of the first interval: the `from` filter, "
                            "else the first matching event's time; null when none matched.",
                        },
                        "to": {
                            "anyOf": [_date_time(), {"type": "null"}],
                            "description": "End of the last interval (exclusive): the `to` "
                            "filter, else just after the last matching event.",
                        },
                        "bucket_ms": {
                            "type": ["integer", "null"],
                            "description": "The intervals' width in milliseconds (the first "
                            "and last may be cut shorter by from and to).",
                        },
                        "total": {
                            "type": "integer",
                            "description": "How many events match: the sum of the counts.",
                        },
                        "buckets": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["start", "end", "count"],
                                "properties": {
                                    "start": _date_time(),
                                    "end": _date_time(),
                                    "count": {"type": "integer", "minimum": 0},
                                },
                            },
                        },
                    },
                },
                "VerifyReport": {
                    "type": "object",
                    "required": [
                        "ok",
                        "entries",
                        "logs",
                        "findings",
                        "total_findings",
                        "warnings",
                        "checked_at",
                    ],
                    "properties": {
                        "checked_at": {
                            **_date_time(),
                            "description": "When this verification finished (UTC).",
                        },
                        "ok": {"type": "boolean"},
                        "entries": {"type": "integer"},
                        "logs": {"type": "object"},
                        "findings": {"type": "array", "items": {"type": "object"}},
                        "total_findings": {"type": "integer"},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "param": {"type": "string"},
                            },
                        }
                    },
                },
            },
            "securitySchemes": auth.security_schemes,
        },
    }


# The page, its files and this document ignore query parameters and do not read the store;
# every other route is an API route.
_NOT_API_PATHS = ("/", "/static/{path}", OPENAPI_PATH)


def _add_shared_parts(
    paths: dict[str, Any],
    auth: AdminAuth,
    access_errors: dict[str, Any],
    api_errors: dict[str, Any],
) -> None:
    """Give every operation, in one place, what they all share: an ``operationId``, the
    security requirement and the errors of access control; API routes also the errors of
    parameter checking and of the store (an operation's own entries win)."""
    for path, item in paths.items():
        for method, operation in item.items():
            operation["operationId"] = operation_id(method, path)
            if auth.security_schemes:
                operation["security"] = auth.security()
            shared = access_errors if path in _NOT_API_PATHS else {**access_errors, **api_errors}
            operation["responses"] = dict(sorted({**shared, **operation["responses"]}.items()))


def operation_id(method: str, path: str) -> str:
    """The method and the path's words in snake_case, a ``{parameter}`` read as
    ``by_parameter``: ``GET /events/{event_id}/proof`` is ``get_events_by_event_id_proof``;
    ``GET /`` (the page) is ``get_dashboard``."""
    words = []
    for segment in path.strip("/").split("/"):
        if segment.startswith("{"):
            words += ["by", segment.strip("{}")]
        elif segment:
            words.append(segment)
    return re.sub(r"[^a-z0-9]+", "_", "_".join([method, *(words or ["dashboard"])]).lower())


def _date_time() -> dict[str, Any]:
    return {"type": "string", "format": "date-time"}


_SCHEMAS = (
    "Event",
    "EventPage",
    "InclusionProof",
    "Facets",
    "Histogram",
    "VerifyReport",
    "Error",
)
_EVENT_TYPES = {
    "id": "string",
    "log": "string",
    "seq": "integer",
    "timestamp": "string",
    "action": "string",
    "resource": "string",
    "resource_id": "string",
    "outcome": "string",
    "details": "object",
    "user_id": "string",
    "user_email": "string",
    "ip_address": "string",
    "user_agent": "string",
    "request_id": "string",
    "prev_hash": "string",
    "hash": "string",
}
_NULLABLE = {
    "resource_id",
    "details",
    "user_id",
    "user_email",
    "ip_address",
    "user_agent",
    "request_id",
}
