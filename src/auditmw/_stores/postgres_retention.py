"""A prune on PostgreSQL (docs/retention.md), and the head of a log, which a prune can
leave with no entry.

Recording is one short transaction (``record_prune``): under the prune lock, the cut
table is checked unchanged since the plan, the ``audit.pruned`` event is chained after
its log's head (the append lock of that log, as every batch takes) and inserted with the
cut rows. The rows at or below the cuts are then deleted a batch per transaction
(``delete_batch``), oldest first, so no transaction holds the live table long; a prune
interrupted between batches is finished by the next one. The events table's trigger
function lets exactly those rows go.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auditmw._errors import PruneRefusedError
from auditmw._event import GENESIS_HASH, Event, PreparedEvent, chain, entry_hash
from auditmw._retention.cuts import CUT_COLUMNS, CutRecord
from auditmw._stores.postgres_schema import REJECT_CHANGE_BODY, REJECT_CUT_CHANGE_BODY

Connection = asyncpg.Connection | PoolConnectionProxy

INSERT_CUT = (
    f"INSERT INTO auditmw_cuts ({', '.join(CUT_COLUMNS)}) "  # noqa: S608 (constant names)
    "VALUES ($1, $2, $3, $4, $5, $6)"
)
CUT_ROWS = f"SELECT {', '.join(CUT_COLUMNS)} FROM auditmw_cuts ORDER BY id"  # noqa: S608
RECORDED_CUTS = "SELECT log, max(last_seq) AS last_seq FROM auditmw_cuts GROUP BY log"
# Each batch deletes the oldest rows of a log up to its cut: a range of the primary key.
DELETE_BATCH = (
    "DELETE FROM auditmw_events WHERE log = $1 AND seq <= least($2, "
    "(SELECT min(seq) FROM auditmw_events WHERE log = $1) + $3 - 1)"
)


async def lock_head(conn: Connection, log: str) -> tuple[int, str]:
    """Lock the log until commit, then read its head from the stored bytes (for a log
    whose every entry was pruned, its cut)."""
    # Keyed by schema and log: stores in other schemas of the database never wait on it.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext($1))", log
    )
    record = await conn.fetchrow(
        "SELECT seq, entry FROM auditmw_events WHERE log = $1 ORDER BY seq DESC LIMIT 1", log
    )
    if record is not None:
        return int(record["seq"]), entry_hash(bytes(record["entry"]))
    if await conn.fetchval("SELECT to_regclass('auditmw_cuts') IS NOT NULL"):
        cut = await conn.fetchrow(
            "SELECT last_seq, head FROM auditmw_cuts WHERE log = $1 ORDER BY last_seq DESC LIMIT 1",
            log,
        )
        if cut is not None:
            return int(cut["last_seq"]), str(cut["head"])
    return 0, GENESIS_HASH


async def record_prune(
    conn: Connection,
    event: PreparedEvent,
    records: list[CutRecord],
    recorded: dict[str, int],
    insert_event: str,
) -> Event:
    """The prune's first transaction (see the module docstring)."""
    async with conn.transaction():
        # One prune at a time per store, across processes and hosts.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext('auditmw prune'))"
        )
        now = {row["log"]: int(row["last_seq"]) for row in await conn.fetch(RECORDED_CUTS)}
        if now != recorded:
            raise PruneRefusedError("another prune ran meanwhile; nothing was pruned: run it again")
        for record in records:
            cut = record.cut
            if recorded.get(record.log) == cut.last_seq:
                continue  # restated from an earlier prune
            entry = await conn.fetchval(
                "SELECT entry FROM auditmw_events WHERE log = $1 AND seq = $2",
                record.log,
                cut.last_seq,
            )
            if entry is None or entry_hash(bytes(entry)) != cut.head:
                raise PruneRefusedError(
                    f"log {record.log!r}: the entry at the cut (seq {cut.last_seq}) is not "
                    "the one planned; nothing was pruned"
                )
        heads = {event.log: await lock_head(conn, event.log)}
        rows, events = chain([event], heads)
        await conn.executemany(insert_event, rows)
        await conn.executemany(INSERT_CUT, [record.values() for record in records])
    return events[0]


async def delete_batch(conn: Connection, limit: int) -> int:
    """Delete up to ``limit`` rows at or below the recorded cuts, oldest first, in one
    transaction; how many."""
    if not await conn.fetchval("SELECT to_regclass('auditmw_cuts') IS NOT NULL"):
        return 0
    deleted = 0
    async with conn.transaction():
        for row in await conn.fetch(RECORDED_CUTS + " ORDER BY log"):
            if deleted >= limit:
                break
            status = await conn.execute(
                DELETE_BATCH, row["log"], int(row["last_seq"]), limit - deleted
            )
            deleted += int(status.split()[-1])
    return deleted


async def cut_function_warnings(conn: Connection, schema: str) -> list[str]:
    """What is wrong with the trigger functions of the narrow DELETE path."""
    warnings = []
    source = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'auditmw_reject_cut_change' "
        "AND pronamespace = current_schema()::regnamespace"
    )
    if source is None or source.split() != REJECT_CUT_CHANGE_BODY.split():
        warnings.append("trigger function auditmw_reject_cut_change is missing or altered")
    found = await conn.fetchrow(
        "SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'auditmw_reject_change' "
        "AND pronamespace = current_schema()::regnamespace"
    )
    if (
        found is not None
        and found["prosrc"].split() == REJECT_CHANGE_BODY.split()
        and f"search_path={schema}" not in (found["proconfig"] or [])
    ):
        warnings.append(
            "trigger function auditmw_reject_change does not run in the store's schema: "
            "a session could make it read another auditmw_cuts table"
        )
    return warnings
