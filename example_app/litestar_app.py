"""The same example app in Litestar: ``python -m example_app --framework litestar``.

It shares the database, authentication and validation with the Starlette app
(``example_app.app``); what differs is the Litestar wiring of auditmw:

1. ``auditmw.AuditPlugin(store=store)`` in ``plugins``: it puts ``AuditMiddleware`` first
   (outermost) in every route's middleware stack, before ``AuthMiddleware`` below, and
   answers a ``StoreError`` raised in a handler with the 503 of the fail-closed policy.
2. ``@audited`` sits under the route decorator; it keeps the handler's signature, so
   Litestar still injects ``request`` and the ``project_id`` path parameter.
   ``@transactional`` goes between them, as in the Starlette app: the change commits
   only after the event ``@audited`` records (``example_app.requests``).
3. ``AdminApp`` is mounted with ``@asgi(path, is_mount=True, copy_scope=True)``; route
   middleware runs for it too, so ``authorize_admin`` sees ``scope["user"]``; ``ADMIN_AUTH``
   as in the Starlette app.
4. The stores are opened and closed by the app's ``lifespan``.

(Requests that match no route never reach Litestar's route middleware, so their 404
responses carry no ``X-Request-ID``: a documented auditmw limitation under Litestar.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, asgi, delete, get, patch, post, put
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.types import ASGIApp, Receive, Scope, Send

from auditmw import AdminApp, AuditPlugin, actions, audited, diff, open_store, pending_event

from . import payloads
from .auth import (
    ADMIN_AUTH,
    CHALLENGE,
    SESSION_COOKIE,
    AppUser,
    authenticate,
    authorize_admin,
    check_sign_in,
    return_path,
)
from .db import SESSION_LIFETIME, Database
from .pages import ADMIN_PATH, home_page
from .payloads import ApiError
from .requests import current_user, db_of, in_transaction, is_form, json_body, transactional
from .settings import Settings

AnyRequest = Request[Any, Any, Any]

# Helpers


def html(page: str, status_code: int = 200) -> Response[str]:
    return Response(page, media_type=MediaType.HTML, status_code=status_code)


# Sessions


@get("/")
async def home(request: AnyRequest) -> Response[str]:
    user = request.scope.get("user")
    if isinstance(user, AppUser):
        return html(home_page(user.email, user.role))
    next_path = return_path(request.query_params.get("next"))
    return html(home_page(None, None, next_path=next_path))


@post("/auth/sign-in")
async def sign_in(request: AnyRequest) -> Response[Any]:
    data = payloads.form_or_json(request.headers.get("content-type", ""), await request.body())
    next_path = return_path(data.get("next"))  # None unless a local path
    user = await check_sign_in(db_of(request), data)  # records user.sign_in_failed
    if user is None:
        if is_form(request):
            return html(home_page(None, None, "Wrong email or password.", next_path), 401)
        raise ApiError(401, "invalid_credentials", "Wrong email or password.")

    async with in_transaction(request):  # the session and its event commit together
        token = await db_of(request).create_session(user)
        await actions.user_signed_in(user.id, user.email)
    response: Response[Any]
    if is_form(request):
        response = Redirect(next_path or "/", status_code=303)
    else:
        user_out = {"id": user.id, "email": user.email, "role": user.role}
        response = Response({"user": user_out}, status_code=200)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@post("/auth/sign-out")
async def sign_out(request: AnyRequest) -> Response[Any]:
    user = current_user(request)
    async with in_transaction(request):
        if user.session_token:
            await db_of(request).delete_session(user.session_token)
        await actions.user_signed_out()
    response: Response[Any] = (
        Redirect("/", status_code=303) if is_form(request) else Response(None, status_code=204)
    )
    response.delete_cookie(SESSION_COOKIE)
    return response


# Projects


@post("/projects")
@transactional  # above @audited: the project commits only after its event
@audited("project.created", "project")
async def create_project(request: AnyRequest) -> Response[dict[str, Any]]:
    user = current_user(request)
    name, description = payloads.new_project(await json_body(request))
    project = await db_of(request).create_project(user.id, name, description)
    event = pending_event()
    event.resource_id = project.id
    event.details.update(name=project.name, description=project.description)
    return Response(project.to_dict(), status_code=201)


@get("/projects/{project_id:int}")
async def get_project(request: AnyRequest, project_id: FromPath[int]) -> dict[str, Any]:
    current_user(request)
    project = await db_of(request).get_project(project_id)
    if project is None:
        raise payloads.not_found("project")
    return project.to_dict()


@patch("/projects/{project_id:int}")
@transactional
@audited("project.updated", "project", resource_id="project_id", skip_if_unchanged=True)
async def update_project(request: AnyRequest, project_id: FromPath[int]) -> dict[str, Any]:
    current_user(request)
    changes_requested = payloads.project_patch(await json_body(request))
    db = db_of(request)
    before = await db.get_project(project_id)
    if before is None:
        raise payloads.not_found("project")
    after = dataclasses.replace(
        before,
        name=changes_requested.get("name", before.name),
        description=changes_requested.get("description", before.description),
    )
    changes = diff(before, after, fields=payloads.PROJECT_FIELDS)
    if changes:
        await db.update_project(after)
    pending_event().changes = changes
    return after.to_dict()


@delete("/projects/{project_id:int}")
@transactional
@audited("project.deleted", "project", resource_id="project_id")
async def delete_project(request: AnyRequest, project_id: FromPath[int]) -> None:
    current_user(request)
    if not await db_of(request).delete_project(project_id):
        raise payloads.not_found("project")


# Users and API keys


@put("/users/{email:str}/role")
@transactional
@audited("permission.changed", "user", skip_if_unchanged=True)
async def set_role(request: AnyRequest, email: FromPath[str]) -> dict[str, Any]:
    user = current_user(request)
    email = email.strip().lower()
    event = pending_event()
    event.details["email"] = email
    if not user.is_admin:
        raise payloads.forbidden("Only admins can change roles.")
    new_role = payloads.role(await json_body(request))
    changed = await db_of(request).set_role(email, new_role)
    if changed is None:
        raise payloads.not_found("user")
    target, old_role = changed
    event.resource_id = target.id
    event.details.update(old_role=old_role, new_role=new_role)
    event.changes = diff({"role": old_role}, {"role": new_role})
    return {"id": target.id, "email": target.email, "role": target.role}


@post("/api-keys")
async def create_api_key(request: AnyRequest) -> Response[dict[str, Any]]:
    user = current_user(request)
    body = await request.body()
    name = payloads.api_key_name(payloads.json_object(body) if body.strip() else {})
    async with in_transaction(request):
        key, secret = await db_of(request).create_api_key(user.id, name)
        await actions.api_key_created(key.id)
    body_out = {"id": key.id, "name": key.name, "created_at": key.created_at, "key": secret}
    return Response(body_out, status_code=201)


# Authentication and errors


class AuthMiddleware(ASGIMiddleware):
    """Sets ``scope["user"]``: an ``AppUser``, or None for anonymous callers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
        scope["user"] = await authenticate(  # raises ApiError 401 for wrong credentials
            self.db,
            connection.headers.get("authorization"),
            connection.cookies.get(SESSION_COOKIE),
        )
        await next_app(scope, receive, send)


def error_response(
    status_code: int, code: str, message: str, extra_headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    headers = {"www-authenticate": CHALLENGE} if status_code == 401 else {}
    headers.update(extra_headers or {})
    body = {"error": {"code": code, "message": message}}
    return Response(body, status_code=status_code, headers=headers)


def api_error(request: AnyRequest, exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


def http_error(request: AnyRequest, exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail)


# The application


def create_app(settings: Settings | None = None) -> Litestar:
    """The app; without settings, they come from the environment (uvicorn workers)."""
    settings = settings or Settings.from_env()
    db = Database(settings.app_db)
    store = open_store(settings.audit_store_target, **settings.store_options())
    admin = AdminApp(store, authorize=authorize_admin, auth=ADMIN_AUTH)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        async with db, store:  # on shutdown, closing the store commits pending events
            yield

    @asgi(ADMIN_PATH, is_mount=True, copy_scope=True)
    async def audit_admin(scope: Scope, receive: Receive, send: Send) -> None:
        await admin(scope, receive, send)  # type: ignore[arg-type]

    app = Litestar(
        route_handlers=[
            home,
            sign_in,
            sign_out,
            create_project,
            get_project,
            update_project,
            delete_project,
            set_role,
            create_api_key,
            audit_admin,
        ],
        middleware=[AuthMiddleware(db)],
        # AuditMiddleware goes first (outermost); trusted_proxies as in the Starlette app.
        plugins=[AuditPlugin(store=store, trusted_proxies=settings.trusted_proxies)],
        exception_handlers={ApiError: api_error, HTTPException: http_error},
        lifespan=[lifespan],
    )
    app.state.db = db
    app.state.store = store
    return app
