"""The protections of a PostgreSQL store: its append-only triggers and their functions.

``protection_warnings`` says what is missing or altered (``StoreBackend.schema_warnings``):
a trigger dropped or disabled, one that does not fire in replica sessions, a trigger
function rewritten to let changes through.
"""

from __future__ import annotations

from asyncpg.pool import PoolConnectionProxy

from auditmw._stores.postgres_retention import cut_function_warnings
from auditmw._stores.postgres_schema import (
    CHECKPOINT_TRIGGERS,
    CUT_TRIGGERS,
    REJECT_ALL_CHANGES_BODY,
    REJECT_CHANGE_BODY,
    REJECT_CHECKPOINT_CHANGE_BODY,
    TRIGGERS,
)

FUNCTION_SOURCE = (
    "SELECT prosrc FROM pg_proc WHERE proname = $1 "
    "AND pronamespace = current_schema()::regnamespace"
)


async def protection_warnings(
    conn: PoolConnectionProxy, schema: str, writes_format_2: bool, has_checkpoints: bool
) -> list[str]:
    """What is wrong with the protections of the store in ``schema`` (its tables'
    append-only triggers and their functions); empty when nothing."""
    warnings = await trigger_warnings(conn, "auditmw_events", TRIGGERS)
    source = await conn.fetchval(FUNCTION_SOURCE, "auditmw_reject_change")
    # A store not migrated yet (opened with create=False) has the body that refuses all.
    older = not writes_format_2 and source is not None
    if source is None or (
        source.split() != REJECT_CHANGE_BODY.split()
        and not (older and source.split() == REJECT_ALL_CHANGES_BODY.split())
    ):
        # A trigger that stays enabled but calls a neutered function protects nothing.
        warnings.append("trigger function auditmw_reject_change is missing or altered")
    if has_checkpoints:
        warnings += await trigger_warnings(conn, "auditmw_checkpoints", CHECKPOINT_TRIGGERS)
        source = await conn.fetchval(FUNCTION_SOURCE, "auditmw_reject_checkpoint_change")
        if source is None or source.split() != REJECT_CHECKPOINT_CHANGE_BODY.split():
            warnings.append(
                "trigger function auditmw_reject_checkpoint_change is missing or altered"
            )
    if await conn.fetchval("SELECT to_regclass('auditmw_cuts') IS NOT NULL"):
        warnings += await trigger_warnings(conn, "auditmw_cuts", CUT_TRIGGERS)
        warnings += await cut_function_warnings(conn, schema)
    return warnings


async def trigger_warnings(
    conn: PoolConnectionProxy, table: str, names: tuple[str, ...]
) -> list[str]:
    """What is wrong with the append-only triggers ``names`` of ``table``."""
    # tgenabled: 'A' fires always (as created); 'O' (the default) not in sessions with
    # session_replication_role = replica; 'R' only in those; 'D' never.
    states = {
        record["tgname"]: record["tgenabled"]
        for record in await conn.fetch(
            "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass",
            table,
        )
    }
    warnings = []
    for name in names:
        state = states.get(name)
        if state == "O":
            warnings.append(
                f"append-only trigger {name} does not fire in sessions with "
                f"session_replication_role = replica: {table} accepts changes there "
                "(open the store as its owner to upgrade it)"
            )
        elif state != "A":
            warnings.append(
                f"append-only trigger {name} is missing or disabled: {table} accepts changes"
            )
    return warnings
