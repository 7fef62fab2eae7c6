"""The OpenAPI 3.1 document of the admin app, and the route that serves it.

Its query parameters come from the parameter table (``auditmw._admin.parameters``); what
every operation shares (an ``operationId``, security, the errors of access control and of
the store) is added in one place, ``_add_shared_parts``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auditmw._admin.access import AdminAuth
from auditmw._admin.pages import DASHBOARD_DIR
from auditmw._admin.parameters import BUCKETS, FILTERS, MAX_AGE, PAGING
from auditmw._admin.paths import client_path
from auditmw._admin.responses import json_response

OPENAPI_PATH = "/openapi.json"


class OpenAPIRoute:
    """``GET /openapi.json``: the document, with ``servers`` naming where it is mounted."""

    def __init__(self, auth: AdminAuth) -> None:
        self.document = openapi_document(auth)

    def routes(self) -> list[Route]:
        return [Route(OPENAPI_PATH, self.openapi, methods=["GET"])]

    async def openapi(self, request: Request) -> Response:
        # Where this app is mounted, as the client sees it (behind any proxy prefix).
        path = client_path(request.scope).rstrip("/")
        mount = path.removesuffix(OPENAPI_PATH) if path.endswith(OPENAPI_PATH) else None
        if mount is None:  # a server without raw_path: Starlette's mount point
            mount = request.scope.get("root_path", "")
        servers = [{"url": mount or "/", "description": "This admin app, where it is mounted"}]
        return json_response({**self.document, "servers": servers})


def openapi_document(auth: AdminAuth | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the admin app, with the security schemes of ``auth``
    (paths relative to its mount point; the app adds ``servers`` to each copy it serves)."""
    auth = auth or AdminAuth()
    nullable_text = {"type": ["string", "null"]}
    filters = [parameter.openapi() for parameter in FILTERS]
    paging = [parameter.openapi() for parameter in PAGING]
    event = {
        "type": "object",
        "required": [*_EVENT_TYPES],
        "properties": {
            **{
                name: {"type": kind if name not in _NULLABLE else [kind, "null"]}
                for name, kind in _EVENT_TYPES.items()
            },
            # Only when a personal value of the event was erased (docs/privacy.md).
            "erased": {
                "type": "array",
                "items": {"type": "string"},
                "description": "JSON Pointers of the erased personal values (each null)",
            },
        },
    }
    refs = {name: {"$ref": f"#/components/schemas/{name}"} for name in _SCHEMAS}

    def ok(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
        return {"description": "OK", "content": {media: {"schema": schema}}}

    def error(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": refs["Error"]}},
        }

    def get(summary: str, responses: dict[str, Any], parameters: list[Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}

    # Errors every operation can answer (401, 403), and those of the API routes; added
    # to each operation by _add_shared_parts.
    unauthenticated = error("`unauthenticated`: nobody is signed in.")
    if auth.challenge is not None:
        unauthenticated["headers"] = {
            "WWW-Authenticate": {
                "required": True,
                "schema": {"type": "string"},
                "description": f"How to authenticate: `{auth.challenge}`.",
            }
        }
    denied = {"401": unauthenticated, "403": error("`forbidden`: not allowed.")}
    bad = {
        "400": error(
            "A parameter is invalid (`invalid_parameter`, `unknown_parameter`, "
            "`invalid_cursor`, `foreign_cursor`); `error.param` names it."
        )
    }
    store_unavailable = error(
        "`store_unavailable`: the audit store is not open, cannot be reached, or did not "
        "answer within its time limits (a database down, frozen or locked); nothing was "
        "done. Try again after `Retry-After` seconds."
    )
    store_unavailable["headers"] = {
        "Retry-After": {
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "description": "Seconds to wait before trying again.",
        }
    }
    store_errors = {"500": error("`store_error`: the store failed."), "503": store_unavailable}

    export_headers = {
        "Content-Disposition": {
            "schema": {"type": "string"},
            "description": 'attachment; filename="audit-logs-YYYY-MM-DD.csv" (or .jsonl)',
        }
    }
    not_recorded = error(
        "`export_not_recorded`: the export could not be recorded, so nothing was exported "
        "(a store that is unavailable answers 503 instead); `store_error`: the store failed."
    )

    def export(summary: str, media: str) -> dict[str, Any]:
        response = {**ok({"type": "string"}, media), "headers": export_headers}
        refused = error(
            "`export_not_recorded`: the database refused the export's record (its data), so "
            "nothing was exported; the same export fails again."
        )
        return get(summary, {"200": response, "422": refused, "500": not_recorded}, filters)

    event_id = [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    files = sorted(file.name for file in DASHBOARD_DIR.glob("*") if file.is_file())
    file_name = {"type": "string", **({"enum": files} if files else {})}
    paths = {
        "/": get(
            "The dashboard page",
            {
                "200": ok({"type": "string"}, "text/html"),
                "404": error("The dashboard is not installed."),
            },
            [],
        ),
        "/static/{path}": get(
            "Files of the dashboard",
            {"200": {"description": "OK", "content": {"*/*": {}}}, "404": error("No such file.")},
            [{"name": "path", "in": "path", "required": True, "schema": file_name}],
        ),
        "/events": get(
            "Events matching the filters, newest first, one page",
            {"200": ok(refs["EventPage"])},
            [*filters, *paging],
        ),
        "/events/{event_id}": get(
            "One event", {"200": ok(refs["Event"]), "404": error("No event has this id.")}, event_id
        ),
        "/events/{event_id}/proof": get(
            "The event's Merkle inclusion proof (RFC 9162): in the tree of the newest "
            "signed checkpoint covering it (anchored), else of its log as it is now",
            {"200": ok(refs["InclusionProof"]), "404": error("No event has this id.")},
            event_id,
        ),
        "/facets": get(
            "Distinct actions, resources and outcomes in the log (for filter choices)",
            {"200": ok(refs["Facets"])},
            [],
        ),
        "/histogram": get(
            "How many events match the filters per interval of time (activity over "
            "time): counted in the database; the counts add up to the matches",
            {"200": ok(refs["Histogram"])},
            [
                *filters,
                BUCKETS.openapi(),
            ],
        ),
        "/export.csv": export(
            "All matching events as CSV (recorded as export.requested)", "text/csv"
        ),
        "/export.jsonl": export(
            "All matching events as JSON Lines, in chain order (recorded as export.requested)",
            "application/x-ndjson",
        ),
        "/streams": get(
            "Each log stream (auditmw stream): destination, whether a forwarder holds "
            "it, per log the last seq delivered and the lag, the last error",
            {"200": ok(refs["Streams"])},
            [],
        ),
        "/verify": get(
            "Verify the whole chain",
            {"200": ok(refs["VerifyReport"])},
            [MAX_AGE.openapi()],
        ),
        OPENAPI_PATH: get("This document", {"200": ok({"type": "object"})}, []),
    }
    _add_shared_parts(paths, auth, access_errors=denied, api_errors={**bad, **store_errors})
    if auth.security_schemes:
        how = "Authenticate with any one of the security schemes listed."
    else:
        how = (
            "How to authenticate is up to the host application, which does not describe "
            "it here (no security schemes are configured)."
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "auditmw admin API",
            "version": "1",
            "description": "Read, search, export and verify a tamper-evident audit log. "
            "Paths are relative to where the admin app is mounted (`servers`). Every route "
            "needs the host application's authorization (401: nobody signed in, 403: not "
            f"allowed). {how} Errors are JSON. (A browser opening a page without access "
            "is sent to the sign-in page or shown an HTML page instead, and a browser's "
            "own scripts get no `WWW-Authenticate`.) Methods other than GET and HEAD get "
            "405 with `Allow`.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Event": event,
                "EventPage": {
                    "type": "object",
                    "required": ["events", "next_cursor", "limit"],
                    "properties": {
                        "events": {"type": "array", "items": refs["Event"]},
                        "next_cursor": nullable_text,
                        "limit": {"type": "integer"},
                        "page": {"type": "integer"},
                    },
                },
                "InclusionProof": {
                    "type": "object",
                    "required": [
                        "log",
                        "seq",
                        "leaf_index",
                        "tree_size",
                        "leaf_hash",
                        "root",
                        "proof",
                        "anchored",
                        "checkpoint",
                    ],
                    "properties": {
                        "log": {"type": "string"},
                        "seq": {"type": "integer"},
                        "leaf_index": {"type": "integer"},
                        "tree_size": {"type": "integer"},
                        "leaf_hash": {"type": "string"},
                        "root": {"type": "string"},
                        "proof": {"type": "array", "items": {"type": "string"}},
                        "anchored": {"type": "boolean"},
                        "checkpoint": {
                            **nullable_text,
                            "description": "The signed note (C2SP tlog-checkpoint) whose "
                            "root the proof reaches, when anchored.",
                        },
                    },
                },
                "Facets": {
                    "type": "object",
                    "required": ["actions", "resources", "outcomes"],
                    "properties": {
                        name: {"type": "array", "items": {"type": "string"}}
                        for name in ("actions", "resources", "outcomes")
                    },
                },
                "Histogram": {
                    "type": "object",
                    "required": ["from", "to", "bucket_ms", "total", "buckets"],
                    "properties": {
                        "from": {
                            "anyOf": [_date_time(), {"type": "null"}],
                            "description": "Start of the first interval: the `from` filter, "
                            "else the first matching event's time; null when none matched.",
                        },
                        "to": {
                            "anyOf": [_date_time(), {"type": "null"}],
                            "description": "End of the last interval (exclusive): the `to` "
                            "filter, else just after the last matching event.",
                        },
                        "bucket_ms": {
                            "type": ["integer", "null"],
                            "description": "The intervals' width in milliseconds (the first "
                            "and last may be cut shorter by from and to).",
                        },
                        "total": {
                            "type": "integer",
                            "description": "How many events match: the sum of the counts.",
                        },
                        "buckets": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["start", "end", "count"],
                                "properties": {
                                    "start": _date_time(),
                                    "end": _date_time(),
                                    "count": {"type": "integer", "minimum": 0},
                                },
                            },
                        },
                    },
                },
                "Streams": {
                    "type": "object",
                    "required": ["streams"],
                    "properties": {
                        "streams": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "settings", "last_error", "logs"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "settings": {"type": "object"},
                                    "created_at": {"type": "string"},
                                    "delivered_at": {"type": ["string", "null"]},
                                    "last_error": {"type": ["string", "null"]},
                                    "lease_owner": {"type": ["string", "null"]},
                                    "lease_expires": {"type": ["number", "null"]},
                                    "logs": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": [
                                                "log",
                                                "cursor",
                                                "head",
                                                "lag_events",
                                                "lag_seconds",
                                            ],
                                            "properties": {
                                                "log": {"type": "string"},
                                                "cursor": {"type": "integer", "minimum": 0},
                                                "head": {"type": "integer", "minimum": 0},
                                                "lag_events": {"type": "integer", "minimum": 0},
                                                "lag_seconds": {"type": "number", "minimum": 0},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
                "VerifyReport": {
                    "type": "object",
                    "required": [
                        "ok",
                        "entries",
                        "logs",
                        "findings",
                        "total_findings",
                        "warnings",
                        "checked_at",
                    ],
                    "properties": {
                        "checked_at": {
                            **_date_time(),
                            "description": "When this verification finished (UTC).",
                        },
                        "ok": {"type": "boolean"},
                        "entries": {"type": "integer"},
                        "logs": {"type": "object"},
                        "findings": {"type": "array", "items": {"type": "object"}},
                        "total_findings": {"type": "integer"},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "param": {"type": "string"},
                            },
                        }
                    },
                },
            },
            "securitySchemes": auth.security_schemes,
        },
    }


# The page, its files and this document ignore query parameters and do not read the store;
# every other route is an API route.
_NOT_API_PATHS = ("/", "/static/{path}", OPENAPI_PATH)


def _add_shared_parts(
    paths: dict[str, Any],
    auth: AdminAuth,
    access_errors: dict[str, Any],
    api_errors: dict[str, Any],
) -> None:
    """Give every operation, in one place, what they all share: an ``operationId``, the
    security requirement and the errors of access control; API routes also the errors of
    parameter checking and of the store (an operation's own entries win)."""
    for path, item in paths.items():
        for method, operation in item.items():
            operation["operationId"] = operation_id(method, path)
            if auth.security_schemes:
                operation["security"] = auth.security()
            shared = access_errors if path in _NOT_API_PATHS else {**access_errors, **api_errors}
            operation["responses"] = dict(sorted({**shared, **operation["responses"]}.items()))


def operation_id(method: str, path: str) -> str:
    """The method and the path's words in snake_case, a ``{parameter}`` read as
    ``by_parameter``: ``GET /events/{event_id}/proof`` is ``get_events_by_event_id_proof``;
    ``GET /`` (the page) is ``get_dashboard``."""
    words = []
    for segment in path.strip("/").split("/"):
        if segment.startswith("{"):
            words += ["by", segment.strip("{}")]
        elif segment:
            words.append(segment)
    return re.sub(r"[^a-z0-9]+", "_", "_".join([method, *(words or ["dashboard"])]).lower())


def _date_time() -> dict[str, Any]:
    return {"type": "string", "format": "date-time"}


_SCHEMAS = (
    "Event",
    "EventPage",
    "InclusionProof",
    "Facets",
    "Histogram",
    "Streams",
    "VerifyReport",
    "Error",
)
_EVENT_TYPES = {
    "id": "string",
    "log": "string",
    "seq": "integer",
    "timestamp": "string",
    "action": "string",
    "resource": "string",
    "resource_id": "string",
    "outcome": "string",
    "details": "object",
    "user_id": "string",
    "user_email": "string",
    "ip_address": "string",
    "user_agent": "string",
    "request_id": "string",
    "prev_hash": "string",
    "hash": "string",
}
_NULLABLE = {
    "resource_id",
    "details",
    "user_id",
    "user_email",
    "ip_address",
    "user_agent",
    "request_id",
}
