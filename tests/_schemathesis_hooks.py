"""Schemathesis hooks for the admin API: the rules OpenAPI cannot state.

Three rules of ``/events`` and the exports tie query parameters together, and OpenAPI has
no way to say so (the parameter descriptions say them in words):

- a ``cursor`` is a ``next_cursor`` the API issued, valid with the filters of the page
  that issued it (anything else is ``invalid_cursor`` or ``foreign_cursor``);
- ``page`` and ``cursor`` exclude each other;
- ``to`` must be later than ``from``.

The schemathesis CLI loads this file (``SCHEMATHESIS_HOOKS``). A request generated to be
valid (positive mode) is made to follow these rules before it is sent, so it exercises the
API instead of a 400; a request generated to be invalid (negative mode) is sent as it is,
and must be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from auditmw._stores.filters import FILTER_PARAMS, QueryError, parse_time

# next_cursor -> the filters of the /events request that issued it
ISSUED: dict[str, dict[str, Any]] = {}


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.operation.path == "/events" and response.status_code == 200:
        cursor = response.json()["next_cursor"]
        if cursor:
            query = case.query or {}
            ISSUED[cursor] = {name: query[name] for name in FILTER_PARAMS if name in query}


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    query = case.query
    if not query or case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if query.get("cursor") not in (None, ""):
        filters = ISSUED.get(query["cursor"])
        if filters is None:
            del query["cursor"]  # made up: the API never issued it
        else:
            for name in FILTER_PARAMS:
                query.pop(name, None)
            query.update(filters)
            query.pop("page", None)
    since, until = query.get("from"), query.get("to")
    if isinstance(since, str) and isinstance(until, str) and since and until:
        try:
            empty = parse_time("from", since) >= parse_time("to", until, end=True)
        except QueryError:
            return  # a value the API refuses although the schema allows it: let it show
        if empty:
            del query["to"]
