"""The example app in Starlette: every change to users, sessions, projects and API keys is
recorded in a tamper-evident audit log.

How auditmw is wired in (the parts to copy):

1. ``AuditMiddleware`` is the *outermost* middleware, outside authentication. It captures
   the client IP, user agent and request id of each request, and reads the user from
   ``scope["user"]`` when an event is recorded, after authentication has set it.
   Behind a reverse proxy it gets ``trusted_proxies`` (``--trusted-proxy``), and
   uvicorn runs with its own proxy headers off: the rule is applied once
   (docs/deployment.md).
2. Handlers record events with ``@audited`` (one event per call, whatever the outcome;
   ``pending_event()`` adds the id, details or ``diff`` of what changed) or with the
   convenience ``actions`` (sign-in, sign-out, API keys). Nothing writes to the store
   directly.
3. A change and its events succeed or fail together: the handler changes the app's
   database inside ``in_transaction(request)``, or under ``@transactional`` placed
   *above* ``@audited``, a transaction that commits only after its events are committed
   (``example_app.requests``, ``example_app.db``). When the store cannot take an event,
   the change is rolled back, so the middleware's 503 or 422 ("not completed") is true; when
   the app's own commit fails after the event, a ``change.rolled_back`` event says so.
4. The store is opened and closed in the lifespan: closing it commits pending events,
   which is what makes a SIGTERM safe.
5. ``AdminApp`` is mounted at ``/admin/audit`` behind ``authorize_admin``; ``ADMIN_AUTH``
   sends browsers to the sign-in form (which returns them afterwards) and describes the
   ways to authenticate in its OpenAPI document.

Events: ``user.signed_in``, ``user.sign_in_failed``, ``user.signed_out``,
``project.created``, ``project.updated`` (only real changes), ``project.deleted``,
``permission.changed`` and ``api_key.created``; ``change.rolled_back`` when a change whose
events were recorded could not be saved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from auditmw import (
    AdminApp,
    AuditMiddleware,
    actions,
    audited,
    diff,
    open_store,
    pending_event,
)

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

# Sessions


async def home(request: Request) -> HTMLResponse:
    user = request.scope.get("user")
    if isinstance(user, AppUser):
        return HTMLResponse(home_page(user.email, user.role))
    # The sign-in page: the admin app sends browsers here with the page to return to.
    next_path = return_path(request.query_params.get("next"))
    return HTMLResponse(home_page(None, None, next_path=next_path))


async def sign_in(request: Request) -> Response:
    data = payloads.form_or_json(request.headers.get("content-type", ""), await request.body())
    next_path = return_path(data.get("next"))  # None unless a local path
    user = await check_sign_in(db_of(request), data)  # records user.sign_in_failed
    if user is None:
        if is_form(request):
            page = home_page(None, None, "Wrong email or password.", next_path)
            return HTMLResponse(page, 401)
        raise ApiError(401, "invalid_credentials", "Wrong email or password.")

    async with in_transaction(request):  # the session and its event commit together
        token = await db_of(request).create_session(user)
        # The request is not authenticated yet: the action names the user explicitly.
        await actions.user_signed_in(user.id, user.email)
    response: Response
    if is_form(request):
        response = RedirectResponse(next_path or "/", status_code=303)
    else:
        response = JSONResponse({"user": {"id": user.id, "email": user.email, "role": user.role}})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def sign_out(request: Request) -> Response:
    user = current_user(request)
    async with in_transaction(request):
        if user.session_token:
            await db_of(request).delete_session(user.session_token)
        await actions.user_signed_out()  # the actor is the user in scope["user"]
    response = RedirectResponse("/", 303) if is_form(request) else Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax")
    return response


# Projects


@transactional  # above @audited: the project commits only after its event
@audited("project.created", "project")
async def create_project(request: Request) -> JSONResponse:
    user = current_user(request)
    name, description = payloads.new_project(await json_body(request))
    project = await db_of(request).create_project(user.id, name, description)
    event = pending_event()
    event.resource_id = project.id  # known only now
    event.details.update(name=project.name, description=project.description)
    return JSONResponse(project.to_dict(), status_code=201)


async def get_project(request: Request) -> JSONResponse:  # reading is not audited
    current_user(request)
    project = await db_of(request).get_project(request.path_params["project_id"])
    if project is None:
        raise payloads.not_found("project")
    return JSONResponse(project.to_dict())


# resource_id names the path parameter; skip_if_unchanged: no event when nothing changed.
@transactional
@audited("project.updated", "project", resource_id="project_id", skip_if_unchanged=True)
async def update_project(request: Request) -> JSONResponse:
    current_user(request)
    patch = payloads.project_patch(await json_body(request))
    db = db_of(request)
    before = await db.get_project(request.path_params["project_id"])
    if before is None:
        raise payloads.not_found("project")
    after = dataclasses.replace(
        before,
        name=patch.get("name", before.name),
        description=patch.get("description", before.description),
    )
    changes = diff(before, after, fields=payloads.PROJECT_FIELDS)  # {field: {from, to}}
    if changes:
        await db.update_project(after)
    pending_event().changes = changes
    return JSONResponse(after.to_dict())


@transactional
@audited("project.deleted", "project", resource_id="project_id")
async def delete_project(request: Request) -> Response:
    current_user(request)
    if not await db_of(request).delete_project(request.path_params["project_id"]):
        raise payloads.not_found("project")  # recorded: outcome failure, status_code 404
    return Response(status_code=204)


# Users and API keys


@transactional
@audited("permission.changed", "user", skip_if_unchanged=True)
async def set_role(request: Request) -> JSONResponse:
    user = current_user(request)
    email = request.path_params["email"].strip().lower()
    event = pending_event()
    event.details["email"] = email
    if not user.is_admin:
        raise payloads.forbidden("Only admins can change roles.")  # recorded: denied
    new_role = payloads.role(await json_body(request))
    changed = await db_of(request).set_role(email, new_role)
    if changed is None:
        raise payloads.not_found("user")
    target, old_role = changed
    event.resource_id = target.id
    event.details.update(old_role=old_role, new_role=new_role)
    event.changes = diff({"role": old_role}, {"role": new_role})  # empty: no event
    return JSONResponse({"id": target.id, "email": target.email, "role": target.role})


async def create_api_key(request: Request) -> JSONResponse:
    user = current_user(request)
    body = await request.body()
    name = payloads.api_key_name(payloads.json_object(body) if body.strip() else {})
    async with in_transaction(request):
        key, secret = await db_of(request).create_api_key(user.id, name)
        await actions.api_key_created(key.id)  # the key's id, never the key
    body_out = {"id": key.id, "name": key.name, "created_at": key.created_at, "key": secret}
    return JSONResponse(body_out, status_code=201)  # the only time the key is shown


# Authentication and errors


class AuthBackend(AuthenticationBackend):
    """Sets ``scope["user"]`` to an ``AppUser`` (Starlette's ``AuthenticationMiddleware``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, AppUser] | None:
        try:
            user = await authenticate(
                self.db, conn.headers.get("authorization"), conn.cookies.get(SESSION_COOKIE)
            )
        except ApiError as exc:
            raise AuthenticationError(exc.message) from None
        if user is None:
            return None
        return AuthCredentials(["authenticated", user.role]), user


def error_response(
    status_code: int, code: str, message: str, extra_headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = {"www-authenticate": CHALLENGE} if status_code == 401 else {}
    headers.update(extra_headers or {})
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def auth_failed(conn: HTTPConnection, exc: AuthenticationError) -> JSONResponse:
    return error_response(401, "invalid_credentials", str(exc))


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


# The application


def create_app(settings: Settings | None = None) -> Starlette:
    """The app; without settings, they come from the environment (uvicorn workers)."""
    settings = settings or Settings.from_env()
    db = Database(settings.app_db)
    store = open_store(settings.audit_store_target, **settings.store_options())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        async with db, store:  # on shutdown, closing the store commits pending events
            yield

    routes = [
        Route("/", home),
        Route("/auth/sign-in", sign_in, methods=["POST"]),
        Route("/auth/sign-out", sign_out, methods=["POST"]),
        Route("/projects", create_project, methods=["POST"]),
        Route("/projects/{project_id:int}", get_project, methods=["GET"]),
        Route("/projects/{project_id:int}", update_project, methods=["PATCH"]),
        Route("/projects/{project_id:int}", delete_project, methods=["DELETE"]),
        Route("/users/{email}/role", set_role, methods=["PUT"]),
        Route("/api-keys", create_api_key, methods=["POST"]),
        Mount(ADMIN_PATH, app=AdminApp(store, authorize=authorize_admin, auth=ADMIN_AUTH)),
    ]
    middleware = [
        # First in the list = outermost. Behind a reverse proxy, trusted_proxies lets it
        # take the client IP from X-Forwarded-For (the server's own proxy headers are off).
        Middleware(AuditMiddleware, store=store, trusted_proxies=settings.trusted_proxies),
        Middleware(AuthenticationMiddleware, backend=AuthBackend(db), on_error=auth_failed),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.store = store
    return app
