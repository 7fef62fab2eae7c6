"""A database that refuses some rows, as an operator's trigger or constraint might, and an
app shaped like the README's whose clients choose what those rows hold.

``refuse_marked_rows(store)`` installs, through a connection of its own (as the
database's owner would, where the store's role may not create triggers), a trigger that
refuses every event whose ``resource_id`` starts with ``REFUSED_PREFIX``. The stores'
own triggers are named ``auditmw_*``; this one is not, so nothing collides or is
reported missing.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import auditmw
from auditmw import AuditStore, Event, EventRefusedError, FailurePolicy, SQLiteStore
from auditmw._event import PreparedEvent
from auditmw._stores.postgres import PostgresStore

REFUSED_PREFIX = "refuse-"
TRIGGER = "test_refuses_marked_rows"
REFUSAL_MESSAGE = "refused by the test trigger"


async def refuse_marked_rows(store: AuditStore, *, sqlite_raise: str = "ABORT") -> None:
    """From now on the database refuses events whose resource_id starts with
    ``REFUSED_PREFIX``. ``sqlite_raise``: how a SQLite trigger refuses (ABORT undoes
    the statement; FAIL keeps the rows it inserted before; ROLLBACK ends the
    transaction)."""
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
            conn.execute(
                f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON auditmw_events "
                f"WHEN substr(new.resource_id, 1, {len(REFUSED_PREFIX)}) = '{REFUSED_PREFIX}' "
                f"BEGIN SELECT RAISE({sqlite_raise}, '{REFUSAL_MESSAGE}'); END"
            )
        return
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(store.dsn)  # the store's server, as its owner
    try:
        await conn.execute(
            f"""
            CREATE FUNCTION "{store.schema}".{TRIGGER}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF starts_with(NEW.resource_id, '{REFUSED_PREFIX}') THEN
                    RAISE EXCEPTION '{REFUSAL_MESSAGE}: %', NEW.resource_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER {TRIGGER} BEFORE INSERT ON "{store.schema}".auditmw_events
                FOR EACH ROW EXECUTE FUNCTION "{store.schema}".{TRIGGER}();
            """
        )
    finally:
        await conn.close()


@dataclass
class Commits:
    """The batches a store's writer tried to commit: every size, and the sizes of those
    the database refused."""

    sizes: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)


def watch_commits(store: AuditStore) -> Commits:
    """What the store's writer tries to commit from now on, seen at the backend's seam
    (which events shared a transaction is not visible from outside)."""
    commits = Commits()
    append_batch = store.backend.append_batch

    async def watched(batch: list[PreparedEvent], deadline: float) -> list[Event]:
        commits.sizes.append(len(batch))
        try:
            return await append_batch(batch, deadline)
        except EventRefusedError:
            commits.refused.append(len(batch))
            raise

    store.backend.append_batch = watched  # type: ignore[method-assign]
    return commits


def items_app(store: AuditStore, policy: FailurePolicy) -> Starlette:
    """``POST /items/{rid}`` records ``item.created`` for ``rid`` and answers 201
    ``{"recorded": true}`` (false: fail-open lost the event). It validates what the
    client sent as docs/capture.md advises: an id no event can hold is a 422."""

    async def create_item(request: Request) -> JSONResponse:
        try:
            event = await auditmw.audit("item.created", "item", request.path_params["rid"])
        except auditmw.ValidationError as exc:
            error = {"code": "invalid_request", "message": str(exc)}
            return JSONResponse({"error": error}, status_code=422)
        return JSONResponse({"recorded": event is not None}, status_code=201)

    return Starlette(
        routes=[Route("/items/{rid}", create_item, methods=["POST"])],
        middleware=[Middleware(auditmw.AuditMiddleware, store=store, failure_policy=policy)],
    )
