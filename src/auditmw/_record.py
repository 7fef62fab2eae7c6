"""Recording events: the current context, ``audit()``, ``acting_as()`` and the failure policy.

One ``AuditContext`` is current at a time, in a contextvar. ``AuditMiddleware`` makes
one per request (and resets it when the request ends, so nothing leaks into the next
request on a keep-alive connection); ``acting_as()`` makes one for code outside
requests, or for a stretch of code inside one. The context is mutable on purpose:
FastAPI runs sync dependencies in a copy of the context, where ``ContextVar.set`` would
be lost, but a change to the object the contextvar holds is seen by everyone
(``set_actor`` relies on it).

Where an event goes: ``audit(store=...)`` if given, else the store of the current
context, which is the request's ``AuditMiddleware`` or the nearest enclosing
``acting_as(..., store=...)``. There is no process-wide default store: code outside
requests says which store it writes to, once, with ``acting_as``.

Who acted: the ``user_id``/``user_email`` given to the call, else the actor named by
``set_actor()`` or ``acting_as()``, else the request's user as the middleware's
resolver finds it when the event is recorded (``scope["user"]`` by default).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from auditmw._context import Actor, RequestInfo, checked_actor
from auditmw._errors import StoreError
from auditmw._event import Event, Limits, NewEvent, Outcome
from auditmw._mask import Masker
from auditmw._retention.prune import ACTOR_LOOKUPS
from auditmw._stores.store import AuditStore

logger = logging.getLogger("auditmw")

ResourceId = str | int | UUID


class FailurePolicy:
    """What happens when the store cannot commit an event (it raised ``StoreError``).

    Fail-closed (the default): ``audit()`` raises, and ``AuditMiddleware`` answers the
    request with ``503 {"error": {"code": "audit_unavailable", ...}}`` instead of any
    success response, so nothing claims success without its audit event.

    Fail-open (``FailurePolicy(fail_open=True)``): the error is logged (logger
    ``auditmw``), counted, and the request goes on; ``audit()`` returns None.

    ``failures`` counts the events that could not be committed, under either policy:
    expose it to monitoring. Share one instance per application (hand it to the
    middleware or the Litestar plugin and keep a reference to read the counter).
    """

    def __init__(self, *, fail_open: bool = False) -> None:
        self.fail_open = fail_open
        self.failures = 0

    def __repr__(self) -> str:
        return f"FailurePolicy(fail_open={self.fail_open}, failures={self.failures})"


@dataclass(frozen=True, slots=True)
class Recorder:
    """Turns audit calls into committed events: one store, masking and policy."""

    store: AuditStore
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    masker: Masker = field(default_factory=Masker)

    def event(
        self,
        context: AuditContext | None,
        action: str,
        resource: str,
        *,
        resource_id: ResourceId | None = None,
        details: Mapping[str, Any] | None = None,
        outcome: Outcome = "success",
        actor: Actor | None = None,
    ) -> NewEvent:
        """The event to append, with the request's facts and the actor filled in."""
        request = context.request if context is not None else None
        if actor is None:
            actor = self.current_actor(context)
        user_agent = request.user_agent if request is not None else None
        if user_agent is not None:  # a client's header must not make the event invalid
            user_agent = user_agent[: self.store.limits.max_user_agent_chars]
        return NewEvent(
            action=action,
            resource=resource,
            resource_id=None if resource_id is None else str(resource_id),
            outcome=outcome,
            details=None if details is None else self.masker(details),
            user_id=actor.user_id if actor is not None else None,
            user_email=actor.user_email if actor is not None else None,
            ip_address=request.client_ip if request is not None else None,
            user_agent=user_agent,
            request_id=request.request_id if request is not None else None,
        )

    def current_actor(self, context: AuditContext | None) -> Actor | None:
        if context is None:
            return None
        if context.actor is not None:
            return context.actor
        if context.request is not None:
            return context.request.user()
        return None

    async def commit(self, event: NewEvent, request: RequestInfo | None) -> Event | None:
        """Append ``event``; on a store error apply the failure policy.

        Fail-open returns None; fail-closed marks the request (so the middleware will
        not send a success response even if the caller swallows the error) and raises.
        ``ValidationError`` always raises: a bad event is a bug, not an outage.
        """
        try:
            return await self.store.append(event)
        except StoreError as exc:
            self.policy.failures += 1
            if self.policy.fail_open:
                logger.error(
                    "audit event %s on %s was not recorded (fail-open, request goes on): %s",
                    event.action,
                    event.resource,
                    exc,
                )
                return None
            logger.error(
                "audit event %s on %s was not recorded (fail-closed, request fails): %s",
                event.action,
                event.resource,
                exc,
            )
            if request is not None:
                request.store_error = exc
            raise

    async def flush(self, request: RequestInfo) -> None:
        """Commit the events sync code queued on ``request``; errors follow the policy
        (fail-closed marks the request, it does not raise here)."""
        # Take what is queued without swapping the list: a worker thread may be appending.
        events = request.deferred[:]
        del request.deferred[: len(events)]
        results = await asyncio.gather(
            *(self.commit(event, request) for event in events), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StoreError):
                logger.error("audit event not recorded: %r", result)
                if request.store_error is None and not self.policy.fail_open:
                    request.store_error = StoreError(f"audit event not recorded: {result!r}")


@dataclass(slots=True, eq=False)
class AuditContext:
    """What events recorded now are made with: where they go, the request, the actor."""

    recorder: Recorder | None
    request: RequestInfo | None
    actor: Actor | None = None  # set by set_actor() or acting_as(); wins over the resolver


audit_context: ContextVar[AuditContext | None] = ContextVar("auditmw_context", default=None)


def current_limits() -> Limits | None:
    """The limits of the store the current context records to; None when there is none."""
    context = audit_context.get()
    recorder = context.recorder if context is not None else None
    return recorder.store.limits if recorder is not None else None


def set_actor(user_id: str | None = None, user_email: str | None = None) -> None:
    """Name the user of the current request (or ``acting_as`` block) explicitly.

    It replaces what the user resolver would find in ``scope["user"]`` for every event
    recorded afterwards in this request. Works from FastAPI dependencies, sync ones
    (run in a worker thread) included. Raises RuntimeError outside a request handled
    by ``AuditMiddleware`` and outside ``acting_as``, and ``ValidationError`` for a
    value no event could hold (not a string, not valid Unicode, over the store's limits).
    """
    context = audit_context.get()
    if context is None:
        raise RuntimeError(
            "set_actor() needs a current request (AuditMiddleware) or an acting_as() block"
        )
    context.actor = checked_actor(user_id, user_email, current_limits())


def recorder_for(context: AuditContext | None, store: AuditStore | None) -> Recorder:
    """The recorder for a call: the given store with the context's settings, or the
    context's own recorder."""
    current = context.recorder if context is not None else None
    if store is not None:
        return Recorder(store) if current is None else dataclasses.replace(current, store=store)
    if current is None:
        raise RuntimeError(
            "no audit store here: call audit() while AuditMiddleware handles a request, "
            "pass store=..., or wrap the code in acting_as(..., store=...)"
        )
    return current


async def audit(
    action: str,
    resource: str,
    resource_id: ResourceId | None = None,
    details: Mapping[str, Any] | None = None,
    outcome: Outcome = "success",
    *,
    changes: Mapping[str, Any] | None = None,
    skip_if_unchanged: bool = False,
    user_id: str | None = None,
    user_email: str | None = None,
    store: AuditStore | None = None,
) -> Event | None:
    """Record one event and wait until it is committed; returns it.

    IP address, user agent, request id and user come from the current request (see
    the module docstring for who the actor is and which store is used). ``changes``
    (e.g. from ``diff()``) is stored as ``details["changes"]``; with
    ``skip_if_unchanged=True`` nothing is recorded when it is empty. Details and
    changes are masked before the event is hashed.

    Returns None when nothing was recorded: skipped, or a store error under the
    fail-open policy. Under fail-closed a store error raises ``StoreError``.
    """
    if skip_if_unchanged and not changes:
        return None
    context = audit_context.get()
    recorder = recorder_for(context, store)
    if changes is not None:
        details = {**(details or {}), "changes": changes}
    explicit = user_id is not None or user_email is not None
    event = recorder.event(
        context,
        action,
        resource,
        resource_id=resource_id,
        details=details,
        outcome=outcome,
        actor=Actor(user_id, user_email) if explicit else None,
    )
    return await recorder.commit(event, context.request if context is not None else None)


@contextmanager
def acting_as(
    user_id: str | None = None,
    user_email: str | None = None,
    *,
    store: AuditStore | None = None,
) -> Iterator[None]:
    """Record the events of the enclosed code as done by this user.

    Outside requests (jobs, scripts, tests) it also names the store events go to::

        async with SQLiteStore("audit.db") as store:
            with acting_as(user_id="nightly-cleanup", store=store):
                await audit("report.purged", "report", report_id)

    Inside a request it changes only the actor (e.g. a system action triggered by a
    user); events keep the request's IP, user agent and request id. Use it from async
    and sync code alike; it does not cross into new tasks or threads started before it.
    A user id or email no event could hold raises ``ValidationError`` here, at the
    ``with``, not at the first ``audit()`` inside.
    """
    outer = audit_context.get()
    if store is not None:
        recorder: Recorder | None = recorder_for(outer, store)
    else:
        recorder = outer.recorder if outer is not None else None
    actor = checked_actor(
        user_id, user_email, recorder.store.limits if recorder is not None else None
    )
    request = outer.request if outer is not None else None
    token = audit_context.set(AuditContext(recorder, request, actor))
    try:
        yield
    finally:
        audit_context.reset(token)


def _context_actor_id() -> str | None:
    """The user id of the current audit context (a request's user, ``acting_as``)."""
    context = audit_context.get()
    if context is None:
        return None
    actor = context.actor
    if actor is None and context.request is not None:
        actor = context.request.user()
    return None if actor is None else actor.user_id


# The actor of a prune or a legal hold made inside a request or ``acting_as`` block.
ACTOR_LOOKUPS.append(_context_actor_id)
