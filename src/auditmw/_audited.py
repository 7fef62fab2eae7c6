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
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar, cast

from ._context import AuditContext, audit_context
from ._errors import StoreError, ValidationError
from ._event import Outcome, prepare
from ._record import ResourceId, audit

F = TypeVar("F", bound=Callable[..., Any])
ResourceIdSpec = str | Callable[[Mapping[str, Any]], object] | None

logger = logging.getLogger("auditmw")


@dataclass(slots=True, eq=False)
class PendingEvent:
    """The event the current ``@audited`` call will record; change it freely."""

    action: str
    resource: str
    resource_id: ResourceId | None = None  # None: found by the decorator's resource_id
    details: dict[str, Any] = field(default_factory=dict)
    changes: Mapping[str, Any] | None = None  # e.g. diff(before, after)
    outcome: Outcome | None = None  # None: decided by how the call ends


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
                    await self._record(pending, args, kwargs)
                except (StoreError, ValidationError) as error:  # the handler's error wins
                    logger.error("audit event %s for a failed call lost: %r", self.action, error)
                raise
            _note_result(pending, result)
            await self._record(pending, args, kwargs)
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
                    self._defer(context, pending, args, kwargs)
                except ValidationError as error:
                    logger.error("audit event %s for a failed call lost: %r", self.action, error)
                raise
            _note_result(pending, result)
            self._defer(context, pending, args, kwargs)
            return result
        finally:
            _pending.reset(token)

    def _skipped(self, pending: PendingEvent) -> bool:
        return self.skip_if_unchanged and pending.outcome == "success" and not pending.changes

    async def _record(self, pending: PendingEvent, args: Any, kwargs: Any) -> None:
        if self._skipped(pending):
            return
        await audit(
            pending.action,
            pending.resource,
            self._resource_id(pending, args, kwargs, audit_context.get()),
            pending.details or None,
            pending.outcome or "success",
            changes=pending.changes,
        )

    def _defer(self, context: AuditContext, pending: PendingEvent, args: Any, kwargs: Any) -> None:
        if self._skipped(pending):
            return
        recorder, request = context.recorder, context.request
        assert recorder is not None and request is not None
        details = dict(pending.details)
        if pending.changes is not None:
            details["changes"] = pending.changes
        event = recorder.event(
            context,
            pending.action,
            pending.resource,
            resource_id=self._resource_id(pending, args, kwargs, context),
            details=details or None,
            outcome=pending.outcome or "success",
        )
        prepare(event, recorder.store.limits)  # raise a bad event here, in the handler
        request.deferred.append(event)

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


def _status_outcome(status: object) -> Outcome | None:
    if not _is_status(status) or status < 400:
        return None
    return "denied" if status in (401, 403) else "failure"


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
