"""Request helpers both example apps share (Starlette's and Litestar's requests alike)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from . import payloads
from .auth import AppUser
from .db import Database


class AnyRequest(Protocol):
    """What these helpers use of a request; Starlette's and Litestar's both have it."""

    @property
    def app(self) -> Any: ...

    @property
    def scope(self) -> Any: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def body(self) -> bytes: ...


def db_of(request: AnyRequest) -> Database:
    database: Database = request.app.state.db
    return database


def current_user(request: AnyRequest) -> AppUser:
    """The signed-in user, or a 401 (read from the scope: see ``auth``)."""
    user = request.scope.get("user")
    if not isinstance(user, AppUser):
        raise payloads.unauthenticated()
    return user


def is_form(request: AnyRequest) -> bool:
    """A browser's form post (answered with pages and redirects, not JSON)."""
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


async def json_body(request: AnyRequest) -> dict[str, Any]:
    return payloads.json_object(await request.body())
