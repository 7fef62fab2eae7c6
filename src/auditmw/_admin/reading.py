"""Reading the log: events page by page, one event, facets and the histogram."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auditmw._admin.parameters import (
    BUCKETS,
    FILTER_NAMES,
    PAGE_PARAMS,
    check_params,
    parse_buckets,
    parse_filter,
    parse_limit,
    parse_page,
)
from auditmw._admin.responses import error_response, json_response
from auditmw._event import Event
from auditmw._stores.filters import QueryError
from auditmw._stores.store import AuditStore

MAX_EVENT_ID_CHARS = 256


async def event_by_id(store: AuditStore, event_id: str) -> Event | None:
    """The event with this id (None for an id no event can have)."""
    if len(event_id) > MAX_EVENT_ID_CHARS:
        return None
    return await store.get(event_id)


class ReadingRoutes:
    """``/events``, ``/events/{event_id}``, ``/facets`` and ``/histogram`` of ``store``."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            Route("/events", self.events, methods=["GET"]),
            Route("/events/{event_id}", self.event, methods=["GET"]),
            Route("/facets", self.facets, methods=["GET"]),
            Route("/histogram", self.histogram, methods=["GET"]),
        ]

    async def events(self, request: Request) -> Response:
        params = check_params(request.query_params.multi_items(), [*FILTER_NAMES, *PAGE_PARAMS])
        filter = parse_filter(params)
        limit = parse_limit(params.get("limit"))
        page = parse_page(params.get("page"))
        cursor = params.get("cursor")
        if page is not None and cursor is not None:
            raise QueryError("page", "cannot be combined with cursor; use one or the other")
        offset = (page - 1) * limit if page is not None else 0
        result = await self.store.query(filter, limit=limit, cursor=cursor, offset=offset)
        body: dict[str, Any] = {
            "events": [event.to_dict() for event in result.events],
            "next_cursor": result.next_cursor,
            "limit": limit,
        }
        if page is not None:
            body["page"] = page
        return json_response(body)

    async def event(self, request: Request) -> Response:
        check_params(request.query_params.multi_items(), ())
        event = await event_by_id(self.store, request.path_params["event_id"])
        if event is None:
            return error_response(404, "not_found", "no event has this id")
        return json_response(event.to_dict())

    async def facets(self, request: Request) -> Response:
        check_params(request.query_params.multi_items(), ())
        return json_response(
            {
                "actions": await self.store.distinct_values("action"),
                "resources": await self.store.distinct_values("resource"),
                "outcomes": await self.store.distinct_values("outcome"),
            }
        )

    async def histogram(self, request: Request) -> Response:
        params = check_params(request.query_params.multi_items(), [*FILTER_NAMES, BUCKETS.name])
        filter = parse_filter(params)
        buckets = parse_buckets(params.get("buckets"))
        histogram = await self.store.histogram(filter, buckets=buckets)
        return json_response(histogram.to_dict())
