"""``@audited``: exactly one event per call of a handler, however the call ends.

The decorator keeps the handler's signature (``functools.wraps``), and keeps sync
handlers sync and async ones async, so FastAPI's and Litestar's dependency injection
see the same handler. While the handler runs, ``pending_event()`` is the event it
will record: the handler may add details, a diff (``changes``) or the id of the
resource it just created.

- returns normally: outcome ``success``, or ``failure``/``denied`` when it returns a
  response with a 4xx/5xx status (``denied`` for 401 and 403), or Quart's
  ``(body, status)`` tuple with one;
- raises: outcome ``failure`` (``denied`` for PermissionError and 401/403 HTTP
  exceptions: Starlette's, FastAPI's, Litestar's, Quart's ``abort()``, Django's
  ``PermissionDenied``), the exception's class in ``details["error"]``, and the
  exception is re-raised unchanged.

An async handler commits its event before it returns. A sync handler cannot wait for
the store, so its event is queued on the request and committed by ``AuditMiddleware``
before the response starts: the client never sees a response whose event was not
committed. A sync ``@audited`` function therefore only runs inside a request.

Bad values fail where the handler passes them: setting a field of ``pending_event()``
(or an item of its ``details``) to text that is not valid Unicode, a blank action, an
unknown outcome or, inside a request, text over the store's limits raises
``ValidationError`` at that line. What only the whole event can show (its size, a value
changed in place deep inside ``details``, an id from the decorator's ``resource_id``
that is too long) is checked when the call ends. The action has happened by then, so
the event is recorded all the same, with each invalid part left out and
``details["audit_errors"]`` naming what was left out; the error is logged, and the call
returns (or raises) as it would have.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar, cast
from uuid import UUID

from auditmw._canonical import check_text
from auditmw._capture import error_outcome
from auditmw._context import Actor
from auditmw._errors import StoreError, ValidationError
from auditmw._event import MAX_DETAILS_DEPTH, OUTCOMES, NewEvent, Outcome, prepare, text_field
from auditmw._record import (
    AuditContext,
    Recorder,
    ResourceId,
    audit_context,
    current_limits,
    recorder_for,
)

F = TypeVar("F", bound=Callable[..., Any])
ResourceIdSpec = str | Callable[[Mapping[str, Any]], object] | None
MAX_NOTE_CHARS = 300  # each note of details["audit_errors"]

logger = logging.getLogger("auditmw")


@dataclass(slots=True, eq=False)
class PendingEvent:
    """The event the current ``@audited`` call will record; change it freely.

    Each value is checked as it is set (``ValidationError`` naming the field). ``details``
    is a dict that checks each item set on it; assigning a dict stores a checking copy.
    """

    action: str
    resource: str
    resource_id: ResourceId | None = None  # None: found by the decorator's resource_id
    details: dict[str, Any] = field(default_factory=dict)
    changes: Mapping[str, Any] | None = None  # e.g. diff(before, after)
    outcome: Outcome | None = None  # None: decided by how the call ends

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("action", "resource"):
            text_field(name, value, _max_chars(), required=True)
        elif name == "resource_id" and value is not None:
            check_resource_id(value)
        elif name == "details":
            if not isinstance(value, Mapping):
                kind = type(value).__name__
                raise ValidationError("details", f"must be a dict, not {kind}")
            value = CheckedDetails(value)
        elif name == "changes" and value is not None:
            if not isinstance(value, Mapping):
                kind = type(value).__name__
                raise ValidationError("details.changes", f"must be a mapping, not {kind}")
            check_texts(value, "details.changes")
        elif name == "outcome" and value is not None and value not in OUTCOMES:
            raise ValidationError("outcome", f"must be one of {', '.join(OUTCOMES)} or None")
        object.__setattr__(self, name, value)


class CheckedDetails(dict[str, Any]):
    """``PendingEvent.details``: a dict that refuses keys that are not strings and text
    that is not valid Unicode as each item is set (nested values included)."""

    def __init__(self, items: Any = (), /, **more: Any) -> None:
        super().__init__()
        self.update(items, **more)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise ValidationError("details", f"key {key!r} is not a string")
        check_text(key, f"details key {key[:40]!r}")
        check_texts(value, f"details.{key}")
        super().__setitem__(key, value)

    def update(self, items: Any = (), /, **more: Any) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in [*pairs, *more.items()]:
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, items: Any) -> CheckedDetails:  # type: ignore[override,misc]
        self.update(items)
        return self


def check_texts(value: Any, path: str, depth: int = 0) -> None:
    """``ValidationError`` for text that is not valid Unicode anywhere in ``value``
    (strings, keys, items of mappings and collections). Everything else is checked when
    the event is recorded, after masking has turned dates, UUIDs... into JSON."""
    if isinstance(value, str):
        check_text(value, path)
    elif depth > MAX_DETAILS_DEPTH:
        return  # too deep for any event: the check of the whole event reports it
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                check_text(key, f"{path} key {key[:40]!r}")
            check_texts(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            check_texts(item, f"{path}[{index}]", depth + 1)


def check_resource_id(value: object) -> None:
    """``ValidationError`` unless ``value`` may be a resource id: a string, an int or a
    UUID, as text within the limits (when the store is known)."""
    if not isinstance(value, str | int | UUID) or isinstance(value, bool):
        kind = type(value).__name__
        raise ValidationError("resource_id", f"must be a string, an int or a UUID, not {kind}")
    text_field("resource_id", str(value), _max_chars())


def _max_chars() -> int | None:
    limits = current_limits()
    return None if limits is None else limits.max_chars


_pending: ContextVar[PendingEvent | None] = ContextVar("auditmw_pending_event", default=None)


def pending_event() -> PendingEvent:
    """The event of the innermost ``@audited`` call in progress (RuntimeError outside one)."""
    pending = _pending.get()
    if pending is None:
        raise RuntimeError("pending_event() is only available inside an @audited call")
    return pending


def audited(
    action: str,
    resource: str,
    *,
    resource_id: ResourceIdSpec = None,
    skip_if_unchanged: bool = False,
) -> Callable[[F], F]:
    """Record one ``action`` on ``resource`` per call of the decorated handler.

    ``resource_id`` is the *name* of a handler parameter or path parameter holding the
    id (``"project_id"``), or a callable given the call's arguments by name. With
    ``skip_if_unchanged=True`` a successful call whose ``changes`` stayed empty
    records nothing (as an update that changed nothing).
    """
    if not isinstance(action, str) or not action or not isinstance(resource, str) or not resource:
        raise ValueError("audited() needs a non-empty action and resource")
    PendingEvent(action, resource)  # ValidationError now for text that cannot be recorded

    def decorate(fn: F) -> F:
        call = _AuditedCall(action, resource, resource_id, skip_if_unchanged, fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_handler(*args: Any, **kwargs: Any) -> Any:
                return await call.run_async(*args, **kwargs)

            return cast(F, async_handler)

        @functools.wraps(fn)
        def sync_handler(*args: Any, **kwargs: Any) -> Any:
            return call.run_sync(*args, **kwargs)

        return cast(F, sync_handler)

    return decorate


class _AuditedCall:
    """What ``audited`` knows about one decorated function."""

    def __init__(
        self,
        action: str,
        resource: str,
        resource_id: ResourceIdSpec,
        skip_if_unchanged: bool,
        fn: Callable[..., Any],
    ) -> None:
        self.action = action
        self.resource = resource
        self.resource_id = resource_id
        self.skip_if_unchanged = skip_if_unchanged
        self.fn = fn
        self.signature = inspect.signature(fn)

    async def run_async(self, *args: Any, **kwargs: Any) -> Any:
        pending = PendingEvent(self.action, self.resource)
        token = _pending.set(pending)
        try:
            try:
                result = await self.fn(*args, **kwargs)
            except StoreError:
                raise  # the store is down: this call's failure cannot be recorded either
            except Exception as exc:
                _note_exception(pending, exc)
                try:
                    await self._record(pending, args, kwargs, exc)
                except (StoreError, ValidationError) as error:  # the handler's error wins
                    logger.error("audit event %s for a failed call lost: %r", self.action, error)
                raise
            _note_result(pending, result)
            await self._record(pending, args, kwargs, None)
            return result
        finally:
            _pending.reset(token)

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        context = audit_context.get()
        if context is None or context.request is None or context.recorder is None:
            raise RuntimeError(
                f"{self.fn.__qualname__} is a sync @audited function: it can only run while "
                "AuditMiddleware handles a request (make it async to use it elsewhere)"
            )
        pending = PendingEvent(self.action, self.resource)
        token = _pending.set(pending)
        try:
            try:
                result = self.fn(*args, **kwargs)
            except StoreError:
                raise
            except Exception as exc:
                _note_exception(pending, exc)
                try:
                    self._defer(context, pending, args, kwargs, exc)
                except ValidationError as error:
                    logger.error("audit event %s for a failed call lost: %r", self.action, error)
                raise
            _note_result(pending, result)
            self._defer(context, pending, args, kwargs, None)
            return result
        finally:
            _pending.reset(token)

    def _skipped(self, pending: PendingEvent) -> bool:
        return self.skip_if_unchanged and pending.outcome == "success" and not pending.changes

    async def _record(
        self, pending: PendingEvent, args: Any, kwargs: Any, error: Exception | None
    ) -> None:
        if self._skipped(pending):
            return
        context = audit_context.get()
        recorder = recorder_for(context, None)
        parts = self._parts(recorder, context, pending, args, kwargs, error)
        while True:
            try:
                # The store validates the event before it queues it: nothing half-done.
                request = context.request if context is not None else None
                await recorder.commit(parts.event(), request)
                return
            except ValidationError as invalid:
                parts.leave_out(invalid)

    def _defer(
        self,
        context: AuditContext,
        pending: PendingEvent,
        args: Any,
        kwargs: Any,
        error: Exception | None,
    ) -> None:
        if self._skipped(pending):
            return
        recorder, request = context.recorder, context.request
        assert recorder is not None and request is not None
        parts = self._parts(recorder, context, pending, args, kwargs, error)
        while True:
            try:
                event = parts.event()
                prepare(event, recorder.store.limits)  # the middleware commits it later
                break
            except ValidationError as invalid:
                parts.leave_out(invalid)
        request.deferred.append(event)

    def _parts(
        self,
        recorder: Recorder,
        context: AuditContext | None,
        pending: PendingEvent,
        args: Any,
        kwargs: Any,
        error: Exception | None,
    ) -> _EventParts:
        details = dict(pending.details)
        if pending.changes is not None:
            details["changes"] = pending.changes
        return _EventParts(
            recorder,
            context,
            self,
            action=pending.action,
            resource=pending.resource,
            resource_id=self._resource_id(pending, args, kwargs, context),
            details=details,
            outcome=pending.outcome or "success",
            actor=recorder.current_actor(context) or Actor(),  # resolved once
            error=error,
        )

    def _resource_id(
        self, pending: PendingEvent, args: Any, kwargs: Any, context: AuditContext | None
    ) -> Any:
        if pending.resource_id is not None:
            return pending.resource_id
        spec = self.resource_id
        if spec is None:
            return None
        if callable(spec):
            return spec(self._arguments(args, kwargs))
        if spec in kwargs:
            return kwargs[spec]
        arguments = self._arguments(args, kwargs)
        if spec in arguments:
            return arguments[spec]
        # A Starlette endpoint takes only the request: look in the route's path params.
        if context is not None and context.request is not None:
            path_params = context.request.scope.get("path_params")
            if isinstance(path_params, Mapping):
                return path_params.get(spec)
        return None

    def _arguments(self, args: Any, kwargs: Any) -> dict[str, Any]:
        try:
            return dict(self.signature.bind_partial(*args, **kwargs).arguments)
        except TypeError:
            return dict(kwargs)


class _EventParts:
    """What a call's event is made of, and what is left out when the event is invalid.

    The action has happened when the event is recorded: an invalid part (details too big
    or changed in place to something JSON cannot hold, an id over the length limit...)
    must not cost the event. ``leave_out`` drops the part the error names, keeps a note
    of it in ``details["audit_errors"]`` and logs it; a part it cannot drop re-raises.
    """

    def __init__(
        self,
        recorder: Recorder,
        context: AuditContext | None,
        call: _AuditedCall,
        *,
        action: str,
        resource: str,
        resource_id: Any,
        details: dict[str, Any],
        outcome: Outcome,
        actor: Actor,
        error: Exception | None,
    ) -> None:
        self.recorder = recorder
        self.context = context
        self.call = call
        self.action = action
        self.resource = resource
        self.resource_id = resource_id
        self.details = details
        self.outcome: Outcome = outcome
        self.actor = actor
        self.error = error  # what the call raised, if it did
        self.left_out: list[str] = []

    def event(self) -> NewEvent:
        details = self.details
        if self.left_out:
            details = {**details, "audit_errors": self.left_out}
        return self.recorder.event(
            self.context,
            self.action,
            self.resource,
            resource_id=self.resource_id,
            details=details or None,
            outcome=self.outcome,
            actor=self.actor,
        )

    def leave_out(self, invalid: ValidationError) -> None:
        name = invalid.field
        if name.startswith("details") and self.details != self._bare_details():
            self.details = self._bare_details()
        elif name == "resource_id" and self.resource_id is not None:
            self.resource_id = None
        elif name in ("user_id", "user_email") and getattr(self.actor, name) is not None:
            self.actor = dataclasses.replace(self.actor, **{name: None})
        else:
            raise invalid  # nothing left to leave out: a bug to fix, not an event to keep
        logger.error(
            "audit event %s: %s; recorded without it (the action happened)", self.action, invalid
        )
        self.left_out.append(str(invalid)[:MAX_NOTE_CHARS])

    def _bare_details(self) -> dict[str, Any]:
        """The details the call's ending alone gives (``_note_exception``), always valid."""
        if self.error is None:
            return {}
        bare = PendingEvent(self.call.action, self.call.resource)
        _note_exception(bare, self.error)
        return dict(bare.details)


def _status_outcome(status: object) -> Outcome | None:
    return error_outcome(status) if _is_status(status) else None


def _note_exception(pending: PendingEvent, exc: Exception) -> None:
    status = _exception_status(exc)
    if pending.outcome is None:
        denied = isinstance(exc, PermissionError)
        pending.outcome = "denied" if denied else (_status_outcome(status) or "failure")
    pending.details.setdefault("error", type(exc).__name__)
    if status is not None:
        pending.details.setdefault("status_code", status)


def _note_result(pending: PendingEvent, result: object) -> None:
    if pending.outcome is None:
        pending.outcome = _status_outcome(_result_status(result)) or "success"


# Exceptions that frameworks answer with an HTTP error but that carry no ``status_code``
# (Starlette's, FastAPI's and Litestar's do): (module, class, status). They are looked up
# in sys.modules: a framework that was never imported raised none of them.
_FRAMEWORK_ERRORS = (
    ("django.core.exceptions", "PermissionDenied", 403),
    ("django.core.exceptions", "BadRequest", 400),
    ("django.core.exceptions", "SuspiciousOperation", 400),
    ("django.http", "Http404", 404),
)


def _exception_status(exc: Exception) -> int | None:
    """The HTTP status the framework answers ``exc`` with, where it says."""
    status = getattr(exc, "status_code", None)
    if _is_status(status):
        return status
    werkzeug = sys.modules.get("werkzeug.exceptions")  # Quart's abort() and HTTP errors
    if werkzeug is not None and isinstance(exc, werkzeug.HTTPException):
        return exc.code if _is_status(exc.code) else None
    for module_name, class_name, error_status in _FRAMEWORK_ERRORS:
        error_class = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(error_class, type) and isinstance(exc, error_class):
            return error_status
    return None


def _result_status(result: object) -> object:
    """The status of what a handler returned: a response's ``status_code``, or the
    status of Quart's ``(body, status)`` and ``(body, status, headers)`` tuples."""
    if isinstance(result, tuple) and len(result) in (2, 3) and _is_status(result[1]):
        return result[1]
    return getattr(result, "status_code", None)


def _is_status(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
