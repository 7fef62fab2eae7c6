"""Django integration: hand Django's signed-in user to auditmw; read it for the admin app.

Serve the project's ASGI application (``get_asgi_application()``) wrapped in
``AuditMiddleware``, which gives every event its IP, user agent and request id. Django
sets ``request.user`` inside its own middleware, where no ASGI middleware can see it;
``AuditUserMiddleware``, listed after ``AuthenticationMiddleware``, names that user as the
actor of the request's events and answers a ``StoreError`` raised in a view with the
fail-closed ``503 audit_unavailable``. ``session_user()`` finds the user of a request
that does not go through Django — the admin app's — from Django's session cookie.

The actor's id is the user's primary key, as a string (usernames can change, the key
does not); the email is the field the user model names (``get_email_field_name()``),
when it is not empty.

This module imports Django (the ``django`` extra); ``import auditmw`` does not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib import auth
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from starlette.requests import Request

from auditmw._context import Actor
from auditmw._middleware import RETRY_AFTER_SECONDS, fail_closed_answer, has_store_error
from auditmw._record import AuditContext, audit_context

__all__ = ["AuditUserMiddleware", "session_user"]

GetResponse = Callable[[HttpRequest], HttpResponse]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponse]]


class AuditUserMiddleware:
    """Names Django's signed-in user as the actor of the request's audit events.

    List it in ``MIDDLEWARE`` after ``django.contrib.auth.middleware.AuthenticationMiddleware``.
    It runs sync or async, as the chain around it does (Django picks): async, it reads
    the user with ``await request.auser()``; sync (in Django's worker thread), with
    ``request.user``. The user is read once, as the request passes: a view that signs
    someone in names them in its own event (``actions.user_signed_in`` does).

    A ``StoreError`` a view raises (fail-closed ``audit()``) becomes the middleware's
    JSON answer (``503 audit_unavailable``, or ``422 audit_event_refused`` when the
    database refused the event's data) instead of Django's 500.

    Outside a request handled by ``AuditMiddleware`` (a WSGI server, Django's test
    client) it does nothing; ``audit()`` there says what is missing.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        context = audit_context.get()
        if context is not None:
            _name_actor(context, _user_of(request, "user"))
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        context = audit_context.get()
        if context is not None:
            _name_actor(context, await _user_of(request, "auser")())
        return await cast(AsyncGetResponse, self.get_response)(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Called by Django (in its sync mode) for an exception a view raised."""
        if not has_store_error(exception):
            return None
        context = audit_context.get()
        recorder = context.recorder if context is not None else None
        if recorder is not None and recorder.policy.fail_open:
            return None
        answer = fail_closed_answer(exception)
        response = HttpResponse(answer.body, status=answer.status, content_type="application/json")
        if answer.retry_after:
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def _user_of(request: HttpRequest, attribute: str) -> Any:
    try:
        return getattr(request, attribute)
    except AttributeError:
        raise ImproperlyConfigured(
            "auditmw.django.AuditUserMiddleware reads the user that Django's "
            "AuthenticationMiddleware sets: list "
            "'django.contrib.auth.middleware.AuthenticationMiddleware' before it in MIDDLEWARE"
        ) from None


def _name_actor(context: AuditContext, user: Any) -> None:
    actor = _actor_of(user)
    if actor is not None:
        # Mutate the request's context: Django runs sync middleware and views in a copy
        # of it (asgiref's sync_to_async), where ContextVar.set would not be seen.
        context.actor = actor


def _actor_of(user: Any) -> Actor | None:
    """The actor for a Django user: None for an anonymous (or inactive) one."""
    if user is None or not user.is_authenticated or user.pk is None:
        return None
    email = getattr(user, user.get_email_field_name(), None)
    if not isinstance(email, str) or not email:
        email = None
    return Actor(user_id=str(user.pk), user_email=email)


async def session_user(request: Request) -> Any:
    """The Django user signed in by the session cookie of ``request`` (a Starlette
    request, as the admin app's ``authorize`` gets), else an ``AnonymousUser``.

    Django's own ``get_user()`` does the work, so expired sessions, logged-out users,
    changed passwords and inactive users count as nobody, as they do in Django. It runs
    in Django's thread for sync code, with Django's stale-connection cleanup around it
    (this request never passes Django's request_started/finished signals).
    """
    session_key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        # Imported here: models cannot be imported before Django is set up, and asgi.py
        # imports this module before get_asgi_application() has run.
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser()
    return await sync_to_async(_user_of_session, thread_sensitive=True)(session_key)


def _user_of_session(session_key: str) -> Any:
    close_old_connections()
    try:
        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        return auth.get_user(request)
    finally:
        close_old_connections()
