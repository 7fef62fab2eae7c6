"""Who is calling: HTTP Basic (API clients), an API key, or the session cookie (browsers).

``authenticate`` is shared by both frameworks; each app wraps it in its own
authentication middleware, which puts the ``AppUser`` in ``scope["user"]``. That is
where ``AuditMiddleware`` finds the actor of every event (its default resolver reads
``identity``/``id`` and ``email``), and where the admin app's ``authorize`` looks.
``ADMIN_AUTH`` tells the admin app the same: browsers sign in on the home page, API
clients use HTTP Basic or an API key (its OpenAPI document lists all three).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.authentication import BaseUser
from starlette.requests import Request

from auditmw import Actor, AdminAuth, audit

from . import payloads
from .db import API_KEY_PREFIX, Database, User
from .payloads import ApiError

SESSION_COOKIE = "session"
CHALLENGE = 'Basic realm="auditmw example"'  # the WWW-Authenticate of every 401
MAX_RETURN_PATH = 2048

ADMIN_AUTH = AdminAuth(
    sign_in_url="/",  # the home page has the sign-in form; it keeps ?next= for afterwards
    challenge=CHALLENGE,
    security_schemes={
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": SESSION_COOKIE,
            "description": "The session cookie of a browser signed in on the home page.",
        },
        "basic": {"type": "http", "scheme": "basic", "description": "email:password"},
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (POST /api-keys), as `Authorization: Bearer ak_...`.",
        },
    },
)


class AppUser(BaseUser):
    """The signed-in user, as ``scope["user"]``."""

    def __init__(self, user: User, session_token: str | None = None) -> None:
        self.id = user.id
        self.email = user.email
        self.role = user.role
        self.session_token = session_token  # set when signed in by the session cookie

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.email

    @property
    def identity(self) -> str:
        return self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def bad_credentials() -> ApiError:
    return ApiError(401, "invalid_credentials", "Wrong email, password or API key.")


async def authenticate(
    db: Database, authorization: str | None, session_token: str | None
) -> AppUser | None:
    """The caller, None when anonymous; raises ``ApiError`` 401 for wrong credentials.

    An ``Authorization`` header wins over the cookie: ``Basic`` (email:password) or
    ``Bearer`` (an API key). A stale or unknown session cookie counts as anonymous.
    """
    if authorization:
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise bad_credentials() from None
            email, _, password = decoded.partition(":")
            user = await db.check_credentials(email.strip().lower(), password)
        elif scheme == "bearer" and value.startswith(API_KEY_PREFIX):
            user = await db.user_by_api_key(value.strip())
        else:
            raise bad_credentials()
        if user is None:
            raise bad_credentials()
        return AppUser(user)
    if session_token:
        user = await db.user_by_session(session_token)
        if user is not None:
            return AppUser(user, session_token)
    return None


async def check_sign_in(db: Database, data: dict[str, Any]) -> User | None:
    """The user a sign-in request names with the right password, else None.

    Every sign-in that names an email and fails is recorded as ``user.sign_in_failed``,
    also when the request itself is invalid (``credentials`` raises its 422 after the
    event is committed): nobody is signed in, so the attempted email goes in the details.
    The password is never passed to ``audit()`` (and a "password" key would be masked).
    """
    try:
        email, password = payloads.credentials(data)
    except ApiError:
        attempted = payloads.attempted_email(data)
        if attempted is not None:
            await _sign_in_failed(attempted)
        raise
    user = await db.check_credentials(email, password)
    if user is None:
        await _sign_in_failed(email)
    return user


async def _sign_in_failed(email: str) -> None:
    await audit("user.sign_in_failed", "session", details={"email": email}, outcome="failure")


def authorize_admin(request: Request) -> Actor | Literal[False] | None:
    """``AdminApp``'s gate: admins get in, other users 403, anonymous callers 401."""
    user = request.scope.get("user")  # never request.user: it asserts without auth middleware
    if not isinstance(user, AppUser):
        return None
    if not user.is_admin:
        return False
    return Actor(user_id=user.id, user_email=user.email)


def return_path(value: object) -> str | None:
    """``value`` when it is a path on this site to return to after signing in, else None.

    Only a local path is followed, or the sign-in page would be an open redirect: one
    leading ``/`` (browsers read ``//evil.example`` and ``///evil.example`` as a host),
    no ``\\`` (browsers read ``/\\evil`` as ``//evil``), printable ASCII only (no control
    characters or spaces, which browsers strip or fold), and nothing ``urlsplit`` reads as
    a scheme or host.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_RETURN_PATH:
        return None
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    if not all("!" <= char <= "~" for char in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value
