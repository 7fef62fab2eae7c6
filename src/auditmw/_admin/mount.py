"""``mount()``: serve ASGI apps (the admin app) beside an app that cannot mount them.

Starlette, FastAPI and Litestar mount ASGI apps themselves. Django's ASGI handler and
Quart cannot, so a dispatcher in front of them sends the requests under a path prefix
to the mounted app, the way Starlette's ``Mount`` does (``root_path`` grows by the
prefix, ``path`` stays whole), and everything else to the host app.

Lifespan events go to the host app (Quart opens and closes its resources there), or,
with ``lifespan=``, to that context manager instead: Django's ASGI handler has no
lifespan support, so the dispatcher is where its audit store is opened and closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def mount(
    app: ASGIApp, mounts: Mapping[str, ASGIApp], *, lifespan: Lifespan | None = None
) -> ASGIApp:
    """``app`` with each of ``mounts`` (``{"/admin/audit": admin}``) served under its prefix.

    A request goes to the mounted app when its path is the prefix or continues it with
    ``/`` (``/admin/audit``, ``/admin/audit/events``; not ``/admin/auditor``); the
    longest matching prefix wins. ``lifespan`` is a context manager factory, as
    Starlette's (``async with store: yield``); without it the host app gets the lifespan
    events.
    """
    return _Dispatcher(app, mounts, lifespan)


class _Dispatcher:
    def __init__(
        self, app: ASGIApp, mounts: Mapping[str, ASGIApp], lifespan: Lifespan | None
    ) -> None:
        prefixes: list[tuple[str, ASGIApp]] = []
        for prefix, mounted in mounts.items():
            stripped = prefix.rstrip("/")
            if not stripped.startswith("/"):
                raise ValueError(
                    f"mount prefix {prefix!r} must start with '/' and name a path below the root"
                )
            prefixes.append((stripped, mounted))
        self.app = app
        self.mounts = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)
        # Starlette's Router speaks the lifespan protocol (startup/shutdown, failures).
        self.lifespan = Router(lifespan=lifespan) if lifespan is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await (self.lifespan or self.app)(scope, receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            path = route_path(scope)
            for prefix, mounted in self.mounts:
                if path == prefix or path.startswith(prefix + "/"):
                    # In place, as Starlette's Router does: what the mounted app adds to
                    # the scope (e.g. a user) stays visible to the middleware outside.
                    root_path = scope.get("root_path", "")
                    scope.setdefault("app_root_path", root_path)
                    scope["root_path"] = root_path + prefix
                    await mounted(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path below the app's own root path (as Starlette's routing reads it): below the
    mount point, for a mounted app."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        return path[len(root_path) :]
    return path
