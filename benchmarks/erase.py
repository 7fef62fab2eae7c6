"""Erasure: the time to erase one person among N events (default 1,000,000), SQLite and
PostgreSQL.

The data set is the query benchmark's (``benchmarks/query.py``: N events of 20,000 users
over a year, built once and cached); each run erases from a fresh copy. The person is a
user of the data set (about N / 20,000 entries as the actor). On SQLite the time covers
``store.erase`` as an application calls it: reading the person's rows through the
user_id and resource_id indexes, appending the ``audit.erased`` record, the UPDATE with
``secure_delete`` and the WAL truncation. On PostgreSQL (when the server of
``--postgres`` answers) the same rows are copied into a fresh schema first (not timed);
its time includes the ``VACUUM`` of the events table that erase runs. Each store is verified
afterwards (not timed): erasure leaves every entry and proof intact.

    .venv/bin/python benchmarks/erase.py [--events N] [--quick] [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from _common import machine_description, print_facts, print_table
from auditmw import SQLiteStore
from auditmw._stores.postgres import PostgresStore
from auditmw._stores.postgres_schema import create_schema
from auditmw._stores.sqlite_sql import ROW_COLUMNS
from query import ensure_dataset, user_of

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PERSON = 4_242  # a user of the data set (user_of numbers them)
COPY_ROWS = 20_000


async def erase_sqlite(source: Path, user_id: str) -> tuple[float, int, bool]:
    with tempfile.TemporaryDirectory(prefix="auditmw-erase-") as directory:
        path = Path(directory) / "audit.db"
        shutil.copyfile(source, path)
        async with SQLiteStore(path) as store:
            started = time.perf_counter()
            report = await store.erase(user_id=user_id, reason="benchmark")
            seconds = time.perf_counter() - started
            ok = (await store.verify()).ok
    return seconds, report.entries, ok


async def copy_to_postgres(source: Path, dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema(conn, schema)
        rows = sqlite3.connect(source)
        try:
            cursor = rows.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM auditmw_events")  # noqa: S608
            while chunk := cursor.fetchmany(COPY_ROWS):
                await conn.copy_records_to_table(
                    "auditmw_events", schema_name=schema, records=chunk, columns=ROW_COLUMNS
                )
        finally:
            rows.close()
        await conn.execute(f'ANALYZE "{schema}".auditmw_events')
    finally:
        await conn.close()


async def erase_postgres(source: Path, dsn: str, user_id: str) -> tuple[float, int, bool]:
    schema = f"auditmw_bench_erase_{secrets.token_hex(4)}"
    try:
        await copy_to_postgres(source, dsn, schema)
        async with PostgresStore(dsn, schema=schema, command_timeout=600) as store:
            started = time.perf_counter()
            report = await store.erase(user_id=user_id, reason="benchmark")
            seconds = time.perf_counter() - started
            ok = (await store.verify()).ok
        return seconds, report.entries, ok
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def postgres_answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the store")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --events 100,000")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("AUDITMW_BENCH_POSTGRES", DEFAULT_POSTGRES),
        help="server for the PostgreSQL row (default: $AUDITMW_BENCH_POSTGRES or %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    events = 100_000 if args.quick else args.events
    print_facts("auditmw erase benchmark", machine_description(None, ["auditmw", "asyncpg"]))
    source = ensure_dataset(events)
    user_id, _ = user_of(PERSON)
    rows = []
    seconds, erased, ok = asyncio.run(erase_sqlite(source, user_id))
    rows.append(["SQLite", f"{events:,}", f"{erased:,}", f"{seconds:.2f} s", str(ok)])
    if not args.no_postgres and asyncio.run(postgres_answers(args.postgres)):
        seconds, erased, ok = asyncio.run(erase_postgres(source, args.postgres, user_id))
        rows.append(["PostgreSQL", f"{events:,}", f"{erased:,}", f"{seconds:.2f} s", str(ok)])
    elif not args.no_postgres:
        print(f"(PostgreSQL at {args.postgres} does not answer: SQLite only)\n")
    print(f"Erasing user {user_id!r} (its entries as actor and subject):")
    print_table(["store", "events", "entries erased", "erase (wall)", "verify ok"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
