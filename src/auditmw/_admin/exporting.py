"""Exports over HTTP: ``/export.csv`` and ``/export.jsonl``, each recorded first.

Every export appends an ``export.requested`` event (``export_event``) and waits until it
is committed before the first byte is sent; if it cannot be recorded, nothing is exported
(503 ``store_unavailable`` when the store is unavailable, 422 ``export_not_recorded``
when the database refused the event's data, else 500 ``export_not_recorded``). A ``HEAD``
request exports nothing and records nothing. The formats themselves are in
``auditmw._admin.export``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Scope

from auditmw._admin.authorization import ADMIN_KEY, REQUEST_KEY
from auditmw._admin.export import MEDIA_TYPES, Format, export_chunks, export_filename
from auditmw._admin.parameters import FILTER_NAMES, check_params, parse_filter
from auditmw._admin.responses import error_response, store_unavailable
from auditmw._errors import EventRefusedError, StoreError, StoreUnavailableError, ValidationError
from auditmw._event import NewEvent
from auditmw._mask import Masker
from auditmw._record import AuditContext, Recorder
from auditmw._stores.filters import EventFilter
from auditmw._stores.store import AuditStore

EXPORT_ACTION = "export.requested"
EXPORT_RESOURCE = "audit_log"


def export_event(recorder: Recorder, scope: Scope, format: Format, filter: EventFilter) -> NewEvent:
    """The ``export.requested`` event of an export: the granted admin as its actor, and
    the request as captured (client IP, user agent, request id) like every event."""
    context = AuditContext(recorder, scope[REQUEST_KEY], actor=scope[ADMIN_KEY])
    details = {"format": format, "filters": filter.to_params()}
    return recorder.event(context, EXPORT_ACTION, EXPORT_RESOURCE, details=details)


class ExportRoutes:
    """``/export.csv`` and ``/export.jsonl`` of ``store``."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        # The admin app's own events: its store, no masking (the details are filters).
        self.recorder = Recorder(store, masker=Masker(()))

    def routes(self) -> list[Route]:
        return [
            Route("/export.csv", self.export_csv, methods=["GET"]),
            Route("/export.jsonl", self.export_jsonl, methods=["GET"]),
        ]

    async def export_csv(self, request: Request) -> Response:
        return await self.export(request, "csv")

    async def export_jsonl(self, request: Request) -> Response:
        return await self.export(request, "jsonl")

    async def export(self, request: Request, format: Format) -> Response:
        params = check_params(request.query_params.multi_items(), FILTER_NAMES)
        filter = parse_filter(params)
        headers = {"content-disposition": f'attachment; filename="{export_filename(format)}"'}
        if request.method == "HEAD":  # no export happens: nothing to record
            return Response(media_type=MEDIA_TYPES[format], headers=headers)
        record = export_event(self.recorder, request.scope, format, filter)
        try:
            await self.store.append(record)  # returns once the event is committed
        except StoreUnavailableError as exc:
            return store_unavailable(f"nothing was exported: it could not be recorded ({exc})")
        except EventRefusedError as exc:  # its data: the same export fails again
            return error_response(
                422, "export_not_recorded", f"nothing was exported: its record was refused ({exc})"
            )
        except (StoreError, ValidationError) as exc:
            return error_response(
                500,
                "export_not_recorded",
                f"nothing was exported: it could not be recorded ({exc})",
            )
        return StreamingResponse(
            export_chunks(self.store.iter_events(filter), format),
            media_type=MEDIA_TYPES[format],
            headers=headers,
        )
