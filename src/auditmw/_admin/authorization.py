"""Who may use the admin app: ``authorize`` asked first, for every HTTP request.

``authorize(request)`` (sync or async) answers an ``Actor`` (allowed; it is the actor
of each export), ``None`` (nobody signed in: 401), ``False`` (not allowed: 403), or raises
Starlette's ``HTTPException`` (that status and detail). Anything else, and an ``Actor``
that names nobody, is a programming error: access is never granted by accident.

A granted request carries, in its scope, the admin (``ADMIN_KEY``) and the request as
captured (``REQUEST_KEY``), for the routes that record events.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Literal, TypeAlias

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from auditmw._admin.access import (
    AdminAuth,
    denied_page,
    is_browser_script,
    is_page_load,
    sign_in_redirect,
)
from auditmw._admin.paths import client_path, query_part
from auditmw._admin.responses import error_response, http_error_response
from auditmw._context import Actor

ADMIN_KEY = "auditmw.admin"  # the scope key holding the Actor of a granted request
REQUEST_KEY = "auditmw.request"  # the scope key holding the request as captured

AuthorizeResult: TypeAlias = Actor | Literal[False] | None
Authorize: TypeAlias = Callable[[Request], AuthorizeResult | Awaitable[AuthorizeResult]]


def checked_admin(actor: Actor) -> Actor:
    """The actor ``authorize`` granted access to; an error for one that names nobody."""
    for name in ("user_id", "user_email"):
        value = getattr(actor, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"authorize() returned an Actor whose {name} is not a string")
    if not (actor.user_id or actor.user_email):
        raise ValueError("authorize() returned an Actor without a user_id or a user_email")
    return actor


class Gate:
    """Asks ``authorize`` and answers those it does not let in, as ``auth`` says."""

    def __init__(self, authorize: Authorize, auth: AdminAuth) -> None:
        if not callable(authorize):
            raise TypeError("authorize must be a callable: (request) -> Actor | None | False")
        self.authorize = authorize
        self.auth = auth

    async def check(self, scope: Scope, receive: Receive) -> Response | None:
        """None when ``authorize`` grants access (and its Actor is in the scope)."""
        try:
            result = self.authorize(Request(scope, receive))
            if inspect.isawaitable(result):
                result = await result
        except HTTPException as exc:
            return http_error_response(exc)
        if isinstance(result, Actor):
            scope[ADMIN_KEY] = checked_admin(result)
            return None
        if result is None:
            return self.denied(scope, 401, "unauthenticated", "sign in to use the audit log")
        if result is False:
            return self.denied(scope, 403, "forbidden", "you may not use the audit log")
        raise TypeError(
            f"authorize() returned {result!r}: return an Actor to allow, None when "
            "nobody is signed in (401), False for someone not allowed (403)"
        )

    def denied(self, scope: Scope, status_code: int, code: str, message: str) -> Response:
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
            return sign_in_redirect(self.auth, client_path(scope) + query_part(scope))
        # The host app's home: Starlette keeps it in app_root_path, Litestar in root_path.
        home = scope.get("app_root_path", scope.get("root_path", "")) + "/"
        return denied_page(status_code, home, headers)
