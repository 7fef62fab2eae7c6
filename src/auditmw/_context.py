"""The request context: who is acting, and what the request said about itself.

``Actor`` is who performed an action (an admin of the admin app too); ``user_from_scope``
finds it in ``scope["user"]``. ``RequestInfo`` is what ``RequestCapture`` (``_capture``)
read from a request, plus the request's audit state. The current ``AuditContext`` that
holds them is in ``_record``, beside the recorder it names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from starlette.types import Scope

from auditmw._errors import StoreError
from auditmw._event import Limits, NewEvent, text_field


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performed an action: a user id, an email, or both."""

    user_id: str | None = None
    user_email: str | None = None


UserResolver = Callable[[Scope], "Actor | None"]


def checked_actor(user_id: object, user_email: object, limits: Limits | None) -> Actor:
    """The actor a caller names (``set_actor``, ``acting_as``), or ``ValidationError``
    naming the field: strings or None, valid Unicode, within ``limits`` when known."""
    max_chars = max_email_chars = None
    if limits is not None:
        max_chars, max_email_chars = limits.max_chars, limits.max_email_chars
    return Actor(
        text_field("user_id", user_id, max_chars),
        text_field("user_email", user_email, max_email_chars),
    )


# Attributes a user object may name its id by, in order of preference. ``identity``
# is Starlette's BaseUser; the others are what ORM models and Litestar users use.
_ID_ATTRIBUTES = ("identity", "id", "user_id", "pk", "username")


def user_from_scope(scope: Scope) -> Actor | None:
    """The default user resolver: the authenticated ``scope["user"]``, else None.

    Starlette's and Litestar's authentication middleware set ``scope["user"]``. A user
    whose ``is_authenticated`` is false is nobody. The id is the first of
    ``identity``, ``id``, ``user_id``, ``pk``, ``username`` that is a string, an int
    or a UUID (``id``/``user_id``/``sub`` keys for a mapping; a string user is its
    own id); the email is an ``email`` attribute or key. Never raises.
    """
    user = scope.get("user")
    if user is None:
        return None
    try:
        if getattr(user, "is_authenticated", True) is False:
            return None
        if isinstance(user, str):
            return Actor(user_id=user) if user else None
        if isinstance(user, Mapping):
            user_id = _first_id(user.get(key) for key in ("id", "user_id", "sub"))
            email = user.get("email")
        else:
            user_id = _first_id(_attribute(user, name) for name in _ID_ATTRIBUTES)
            email = _attribute(user, "email")
    except Exception:  # a broken user object must not break the request
        return None
    email = email if isinstance(email, str) and email else None
    if user_id is None and email is None:
        return None
    return Actor(user_id=user_id, user_email=email)


def _attribute(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # e.g. BaseUser.identity raises NotImplementedError
        return None


def _first_id(candidates: Any) -> str | None:
    for value in candidates:
        if isinstance(value, bool):
            continue
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | UUID):
            return str(value)
    return None


@dataclass(slots=True, eq=False)
class RequestInfo:
    """What a request says about itself, read once when it arrives, and its audit state."""

    scope: Scope  # kept to read the user late: auth middleware may run after ours
    client_ip: str | None
    peer_ip: str | None
    user_agent: str | None
    request_id: str
    method: str | None
    path: str
    # Events recorded by sync code, committed by the middleware before the response
    # starts (see ``audited``); appended from worker threads, hence a plain list.
    deferred: list[NewEvent] = field(default_factory=list)
    # Set when an event of this request could not be committed under the fail-closed
    # policy: the middleware then refuses to send a success response.
    store_error: StoreError | None = None
    resolve_user: UserResolver = user_from_scope

    def user(self) -> Actor | None:
        """The request's user as the resolver finds it now (``scope["user"]`` is set by
        authentication middleware that may run after the request was captured)."""
        return self.resolve_user(self.scope)
