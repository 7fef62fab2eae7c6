"""``/streams``: each log stream of the store (``auditmw._streams``), as ``auditmw streams
--json`` prints it: destination, whether a forwarder holds it, per log the cursor and the
lag in events and seconds, the last error."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auditmw._admin.parameters import check_params
from auditmw._admin.responses import json_response
from auditmw._stores.store import AuditStore
from auditmw._streams.status import stream_statuses


class StreamRoutes:
    """``/streams`` of ``store``."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [Route("/streams", self.streams, methods=["GET"])]

    async def streams(self, request: Request) -> Response:
        check_params(request.query_params.multi_items(), ())
        statuses = await stream_statuses(self.store)
        return json_response({"streams": [status.to_json() for status in statuses]})
