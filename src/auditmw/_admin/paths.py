"""Paths: the admin app is mounted the same way in every framework.

The client's own path (behind proxies and mount points), and the trailing-slash rules:
the mount point redirects to its slash form, other paths lose a trailing slash.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from auditmw._admin.mount import route_path


def client_path(scope: Scope) -> str:
    """The request's path as the client sent it, percent-encoded: ``raw_path``, which
    servers (uvicorn) prefix with the proxy's ``root_path``; without one, Starlette's
    ``path`` (which includes ``root_path``)."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1")
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    return quote(path if path.startswith(root) else root + path)


def query_part(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return "?" + query.decode("latin-1") if query else ""


def to_trailing_slash(scope: Scope) -> Response | None:
    """A redirect from the mount point without its slash (``/admin/audit``) to it with one:
    the dashboard's relative URLs (``static/...``, ``events``) need it. Relative, so it
    holds behind proxies that strip a prefix."""
    if scope["method"] not in ("GET", "HEAD") or route_path(scope) not in ("", "/"):
        return None
    path = client_path(scope)
    if path.endswith("/"):
        return None
    return RedirectResponse(path.rsplit("/", 1)[-1] + "/" + query_part(scope), 307)


def without_trailing_slash(scope: Scope) -> Scope:
    """``scope`` with ``/events/`` as ``/events`` (Litestar's mounts add the slash)."""
    route = route_path(scope)
    if len(route) > 1 and route.endswith("/"):
        return {**scope, "path": scope["path"].rstrip("/") or "/"}
    return scope
