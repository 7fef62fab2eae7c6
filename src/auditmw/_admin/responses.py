"""The admin app's responses: JSON bodies, JSON errors, and the errors' handlers.

Errors are ``{"error": {"code", "message"}}`` (plus ``param`` for a bad parameter). A
store that is closed or unavailable gets ``503 store_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from auditmw._errors import EventRefusedError, StoreClosedError, StoreError, StoreUnavailableError
from auditmw._middleware import RETRY_AFTER_SECONDS
from auditmw._stores.filters import QueryError

# Sent with every response: audit data must not be cached, sniffed or framed.
SECURITY_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
)


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


def http_error_response(exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail, headers=dict(exc.headers or {}))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return http_error_response(exc)


async def on_query_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueryError)
    return error_response(400, exc.code, str(exc), param=exc.param)


async def on_store_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreClosedError):
        return store_unavailable("the audit store is not open")
    if isinstance(exc, StoreUnavailableError):
        return store_unavailable(f"the audit store is unavailable, try again later: {exc}")
    if isinstance(exc, EventRefusedError):  # the admin app's own event (export.requested)
        return error_response(422, "audit_event_refused", f"the audit log refused: {exc}")
    return error_response(500, "store_error", str(exc))


def store_unavailable(message: str) -> Response:
    """503 ``store_unavailable``: nothing was done; the same request may succeed later."""
    headers = {"retry-after": str(RETRY_AFTER_SECONDS)}
    return error_response(503, "store_unavailable", message, headers=headers)


# The handlers of the errors routes raise, for the admin app's router.
EXCEPTION_HANDLERS = {
    HTTPException: on_http_error,
    QueryError: on_query_error,
    StoreError: on_store_error,
}
