"""Request helpers both example apps share (Starlette's and Litestar's requests alike).

``in_transaction`` and ``transactional`` are how a handler changes data: the change and
its audit events commit together (see ``example_app.db``).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from auditmw import audit

from . import payloads
from .auth import AppUser
from .db import CommitFailed, Database, DatabaseBusy

P = ParamSpec("P")
R = TypeVar("R")

ROLLED_BACK_ACTION = "change.rolled_back"


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


# Changes and their audit events, committed together


@asynccontextmanager
async def in_transaction(request: AnyRequest) -> AsyncIterator[None]:
    """Change the app's data and record the change's audit events in the block::

        async with in_transaction(request):
            token = await db.create_session(user)
            await actions.user_signed_in(user.id, user.email)  # returns once committed

    The change commits when the block ends, after its events: if the audit store
    cannot take an event, ``audit()`` raises ``StoreError`` (fail-closed), the change
    is rolled back and the middleware's 503 (422 for refused data) says truthfully
    that nothing was done.

    The other way round, the events are committed and then the app's commit fails:
    the log would claim a change that never happened, so a ``change.rolled_back``
    event with the same request id says so, and the client gets a 503. (Only a crash
    between the two commits leaves the log's claim standing: README, "The example app".)
    A database too busy to start the change is a 503 too; nothing is recorded for it.
    """
    try:
        async with db_of(request).transaction():
            yield
    except DatabaseBusy:
        raise payloads.unavailable("busy", "The database is busy; nothing was changed.") from None
    except CommitFailed as failed:
        await audit(
            ROLLED_BACK_ACTION,
            "request",
            details={"error": type(failed.__cause__ or failed).__name__},
            outcome="failure",
        )
        message = "The change could not be saved; nothing was changed."
        raise payloads.unavailable("not_saved", message) from failed


def transactional(
    handler: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """``in_transaction`` around a whole handler, for ``@audited`` ones: put it *above*
    ``@audited``, so that the event ``@audited`` commits when the handler ends is inside
    the transaction too. The handler's request is its ``request`` argument (Litestar)
    or its first (Starlette)."""

    @functools.wraps(handler)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        request = cast(AnyRequest, kwargs["request"] if "request" in kwargs else args[0])
        async with in_transaction(request):
            return await handler(*args, **kwargs)

    return run
