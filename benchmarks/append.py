"""Append throughput: the public API against the floor of raw ``sqlite3``.

The API run is N concurrent ``store.append(NewEvent(...))`` calls (``asyncio.gather``)
on a fresh ``SQLiteStore``: validation, canonical JSON, ids, timestamps, group commit,
hash chain and durable commits, everything a caller pays for. The floor inserts the
very rows an API run produced (same columns, canonical entry bytes and hashes) with one
stdlib ``sqlite3`` ``executemany`` in one transaction, into the same schema with the
same pragmas. A stricter floor does the same with INSERTs of 1024 rows each, as the
store does: with the FTS5 search index, a statement per row costs several times more.

PostgreSQL rows (when the server of ``--postgres`` answers): the same API run on a
``postgresql://`` store opened with ``open_store`` (1 process, and P writer processes
sharing one log), against the floor of asyncpg writing the rows an API run produced
into the same schema (tables, indexes, triggers) in one transaction:
``copy_records_to_table`` (1 connection, and P concurrent connections writing a share
each) and, a second floor, one ``executemany`` of the INSERT the store uses. Every run
gets a fresh schema (``auditmw_bench_<random>_<n>``), dropped right after it.

All run side by side in one process, alternating over a few rounds; the table shows
medians and the ratio API / floor (goal: at least 0.5 with ``synchronous=FULL``). Every
API run's store is verified afterwards (not timed): all events there, chain intact.

    .venv/bin/python benchmarks/append.py [--events N] [--rounds R] [--processes P]
        [--postgres URL | --no-postgres] [--summary FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from _common import (
    DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    USER_AGENTS,
    Result,
    Stopwatch,
    Timing,
    add_summary_option,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    machine_description,
    median,
    print_facts,
    print_table,
    rate,
    write_summary,
)
from auditmw import NewEvent, SQLiteStore, open_store
from auditmw._stores.postgres import INSERT as PG_INSERT
from auditmw._stores.postgres import ROW_COLUMNS as PG_ROW_COLUMNS
from auditmw._stores.sqlite import SAFETY_PRAGMAS, WRITE_PRAGMAS
from auditmw._stores.sqlite_sql import INSERT, ROW_COLUMNS, SCHEMA

ACTIONS = (
    ("auth.login", "session"),
    ("auth.logout", "session"),
    ("document.create", "document"),
    ("document.update", "document"),
    ("document.delete", "document"),
    ("invoice.approve", "invoice"),
    ("user.role.grant", "user"),
    ("api_key.rotate", "api_key"),
)
OUTCOME_WEIGHTS = (("success", 90), ("failure", 7), ("denied", 3))


def make_events(count: int, seed: int) -> list[NewEvent]:
    """Realistic, varied events: users, emails, IPv4/IPv6, agents, request ids, details."""
    rng = random.Random(seed)
    outcomes = [name for name, _ in OUTCOME_WEIGHTS]
    weights = [weight for _, weight in OUTCOME_WEIGHTS]
    events = []
    for _ in range(count):
        action, resource = rng.choice(ACTIONS)
        user = rng.randrange(1, 5000)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        if rng.random() < 0.8:
            octets = (
                rng.randrange(1, 224),
                rng.randrange(256),
                rng.randrange(256),
                rng.randrange(1, 255),
            )
            ip = ".".join(map(str, octets))
        else:
            ip = f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
        resource_id = str(rng.randrange(1, 1_000_000))
        method = "POST" if action.endswith(("create", "login", "approve")) else "PUT"
        details: dict[str, Any] = {
            "method": method,
            "path": f"/api/{resource}s/{resource_id}",
            "status": 200 if rng.random() < 0.9 else 403,
            "duration_ms": rng.randrange(1, 900),
            "changes": {"title": f"Quarterly report {rng.randrange(100)}", "tags": ["q3", "ops"]},
            "tenant": f"t-{rng.randrange(50):03d}",
        }
        events.append(
            NewEvent(
                action=action,
                resource=resource,
                resource_id=resource_id,
                outcome=rng.choices(outcomes, weights)[0],  # type: ignore[arg-type]
                details=details,
                user_id=f"u_{user:06d}",
                user_email=f"{first}.{last}{user}@{rng.choice(DOMAINS)}",
                ip_address=ip,
                user_agent=rng.choice(USER_AGENTS),
                request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            )
        )
    return events


# --- the API ------------------------------------------------------------------------


async def _append_all(path: Path, events: Sequence[NewEvent], synchronous: str) -> Timing:
    async with SQLiteStore(path, synchronous=synchronous) as store:
        with Stopwatch() as watch:
            await asyncio.gather(*(store.append(event) for event in events))
    return watch.timing


def api_run(path: Path, events: Sequence[NewEvent], synchronous: str) -> Timing:
    """Time for all appends of ``events`` to return (the store is opened beforehand)."""
    timing = asyncio.run(_append_all(path, events, synchronous))
    asyncio.run(check_store(path, len(events)))
    return timing


def _process_worker(
    path: Path, count: int, seed: int, synchronous: str, barrier: Barrier, results: Any
) -> None:
    events = make_events(count, seed)

    async def run() -> tuple[float, float, float]:
        async with SQLiteStore(path, synchronous=synchronous, busy_timeout=60) as store:
            barrier.wait()  # everyone has imported, built events and opened the store
            start, cpu = time.monotonic(), time.process_time()  # monotonic: system-wide
            await asyncio.gather(*(store.append(event) for event in events))
            return start, time.monotonic(), time.process_time() - cpu

    results.put(asyncio.run(run()))


def multiprocess_run(path: Path, count: int, processes: int, synchronous: str) -> Timing:
    """From the first process starting its appends to the last one finishing."""
    asyncio.run(_create(path))  # the schema exists before the workers race to open it
    context = multiprocessing.get_context("spawn")  # no fork of threads or event loops
    barrier = context.Barrier(processes)
    results = context.Queue()
    shares = [count // processes + (index < count % processes) for index in range(processes)]
    workers = [
        context.Process(
            target=_process_worker,
            args=(path, share, 1000 + index, synchronous, barrier, results),
        )
        for index, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    spans: list[tuple[float, float, float]] = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {worker.exitcode}")
    asyncio.run(check_store(path, count))
    wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    return Timing(wall, sum(cpu for _, _, cpu in spans))


async def _create(path: Path) -> None:
    async with SQLiteStore(path):
        pass


async def check_store(path: Path, expected: int) -> None:
    """Every append is there exactly once and the chain verifies (not timed)."""
    async with SQLiteStore(path, create=False) as store:
        report = await store.verify()
        if not report.ok or report.entries != expected:
            raise RuntimeError(f"{path}: {report.entries} entries, findings {report.findings}")


# --- the floor ----------------------------------------------------------------------


def stored_rows(path: Path) -> list[tuple[Any, ...]]:
    """The rows an API run stored, every column, in chain order."""
    conn = sqlite3.connect(path)
    try:
        # Constant column names only.
        query = f"SELECT {', '.join(ROW_COLUMNS)} FROM auditmw_events ORDER BY log, seq"  # noqa: S608
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _multirow_insert(rows: int) -> str:
    one = "(" + ", ".join("?" * len(ROW_COLUMNS)) + ")"
    return f"INSERT INTO auditmw_events ({', '.join(ROW_COLUMNS)}) VALUES " + ", ".join(  # noqa: S608
        [one] * rows
    )


def floor_run(
    path: Path, rows: Sequence[tuple[Any, ...]], synchronous: str, *, multirow: bool = False
) -> Timing:
    """One ``executemany`` of ``rows`` in one committed transaction.

    ``multirow``: INSERTs of up to 1024 rows each instead (fewer statements; the store
    inserts that way), a stricter floor.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        for pragma in WRITE_PRAGMAS + SAFETY_PRAGMAS:  # the store's connection settings
            conn.execute(pragma)
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        chunk = 1024
        statements = {size: _multirow_insert(size) for size in (chunk, len(rows) % chunk)}
        with Stopwatch() as watch:
            conn.execute("BEGIN IMMEDIATE")
            if multirow:
                for start in range(0, len(rows), chunk):
                    part = rows[start : start + chunk]
                    conn.execute(statements[len(part)], [value for row in part for value in row])
            else:
                conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
        return watch.timing
    finally:
        conn.close()


# --- PostgreSQL ---------------------------------------------------------------------

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


class PgSchemas:
    """Fresh schemas on the benchmark's server, one per run, dropped after it.

    Only schemas this object created (``CREATE SCHEMA`` without ``IF NOT EXISTS``, so a
    name clash fails instead of reusing someone else's) are ever dropped.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"auditmw_bench_{secrets.token_hex(4)}"
        self.created: list[str] = []
        self.runs = 0

    async def _execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def fresh(self) -> str:
        """A new empty schema; the store creates its tables there on first open."""
        self.runs += 1
        name = f"{self.prefix}_{self.runs}"
        asyncio.run(self._execute(f'CREATE SCHEMA "{name}"'))  # generated name
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        if name in self.created:
            asyncio.run(self._execute(f'DROP SCHEMA "{name}" CASCADE'))  # ours only
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(name)

    def store_url(self, schema: str) -> str:
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}schema={schema}"


async def pg_server_facts(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = [
            f"{name}={await conn.fetchval(f'SHOW {name}')}"  # constant names
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        ]
        trgm = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")
    finally:
        await conn.close()
    return [
        ("PostgreSQL", f"{version} at {_without_password(url)}, {', '.join(settings)}"),
        ("pg_trgm", "installed (search index built)" if trgm else "missing (no search index)"),
    ]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


async def _pg_create(url: str) -> None:
    async with open_store(url):  # creates the tables, indexes and triggers
        pass


async def _pg_append_all(url: str, events: Sequence[NewEvent]) -> Timing:
    async with open_store(url) as store:
        with Stopwatch() as watch:
            await asyncio.gather(*(store.append(event) for event in events))
    return watch.timing


async def pg_check_store(url: str, expected: int) -> None:
    """Every append is there exactly once and the chain verifies (not timed)."""
    async with open_store(url, create=False) as store:
        report = await store.verify()
        if not report.ok or report.entries != expected:
            raise RuntimeError(f"{url}: {report.entries} entries, findings {report.findings}")


def pg_api_run(schemas: PgSchemas, events: Sequence[NewEvent]) -> Timing:
    """All appends of ``events`` through a ``postgresql://`` store (opened beforehand)."""
    schema = schemas.fresh()
    url = schemas.store_url(schema)
    timing = asyncio.run(_pg_append_all(url, events))
    asyncio.run(pg_check_store(url, len(events)))
    schemas.drop(schema)
    return timing


def _pg_process_worker(url: str, count: int, seed: int, barrier: Barrier, results: Any) -> None:
    events = make_events(count, seed)

    async def run() -> tuple[float, float, float]:
        async with open_store(url) as store:
            barrier.wait()  # everyone has imported, built events and opened the store
            start, cpu = time.monotonic(), time.process_time()  # monotonic: system-wide
            await asyncio.gather(*(store.append(event) for event in events))
            return start, time.monotonic(), time.process_time() - cpu

    results.put(asyncio.run(run()))


def _pg_copy_worker(
    url: str, schema: str, rows: Sequence[tuple[Any, ...]], barrier: Barrier, results: Any
) -> None:
    async def run() -> tuple[float, float, float]:
        conn = await asyncpg.connect(url)
        try:
            barrier.wait()
            start, cpu = time.monotonic(), time.process_time()
            await _copy(conn, schema, rows)
            return start, time.monotonic(), time.process_time() - cpu
        finally:
            await conn.close()

    results.put(asyncio.run(run()))


def _spawn_all(target: Callable[..., None], args_per_worker: Sequence[tuple[Any, ...]]) -> Timing:
    """Run one spawned process per args tuple, started together on a barrier; from the
    first one starting to the last one finishing, and the CPU time of them all."""
    context = multiprocessing.get_context("spawn")  # no fork of threads or event loops
    barrier = context.Barrier(len(args_per_worker))
    results = context.Queue()
    workers = [
        context.Process(target=target, args=(*args, barrier, results)) for args in args_per_worker
    ]
    for worker in workers:
        worker.start()
    spans: list[tuple[float, float, float]] = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {worker.exitcode}")
    wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    return Timing(wall, sum(cpu for _, _, cpu in spans))


def _shares(count: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of ``parts`` near-equal slices of ``range(count)``."""
    bounds = [count * index // parts for index in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def pg_multiprocess_run(schemas: PgSchemas, count: int, processes: int) -> Timing:
    """P writer processes appending to one log through the API, started together."""
    schema = schemas.fresh()
    url = schemas.store_url(schema)
    asyncio.run(_pg_create(url))  # the tables exist before the workers race to open them
    timing = _spawn_all(
        _pg_process_worker,
        [
            (url, stop - start, 1000 + index)
            for index, (start, stop) in enumerate(_shares(count, processes))
        ],
    )
    asyncio.run(pg_check_store(url, count))
    schemas.drop(schema)
    return timing


async def pg_stored_rows(url: str, schema: str) -> list[tuple[Any, ...]]:
    """The rows an API run stored, every column, in chain order."""
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch(
            f'SELECT {", ".join(PG_ROW_COLUMNS)} FROM "{schema}".auditmw_events '  # noqa: S608
            "ORDER BY log, seq"  # constant columns, generated schema name
        )
    finally:
        await conn.close()
    return [tuple(record) for record in records]


async def _copy(conn: asyncpg.Connection, schema: str, rows: Sequence[tuple[Any, ...]]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table(
            "auditmw_events", records=rows, columns=PG_ROW_COLUMNS, schema_name=schema
        )


async def _pg_floor(url: str, schema: str, rows: Sequence[tuple[Any, ...]], copy: bool) -> Timing:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        with Stopwatch() as watch:
            if copy:
                await _copy(conn, schema, rows)
            else:
                async with conn.transaction():
                    await conn.executemany(PG_INSERT, rows)
        return watch.timing
    finally:
        await conn.close()


def pg_floor_run(schemas: PgSchemas, rows: Sequence[tuple[Any, ...]], *, copy: bool) -> Timing:
    """The prebuilt rows in one transaction, into a fresh schema made by the store:
    ``copy_records_to_table`` or one ``executemany`` of the store's INSERT."""
    schema = schemas.fresh()
    asyncio.run(_pg_create(schemas.store_url(schema)))
    timing = asyncio.run(_pg_floor(schemas.url, schema, rows, copy))
    schemas.drop(schema)
    return timing


def pg_floor_multiprocess_run(
    schemas: PgSchemas, rows: Sequence[tuple[Any, ...]], processes: int
) -> Timing:
    """P processes, each copying its share of the prebuilt rows in one transaction."""
    schema = schemas.fresh()
    asyncio.run(_pg_create(schemas.store_url(schema)))
    timing = _spawn_all(
        _pg_copy_worker,
        [(schemas.url, schema, rows[start:stop]) for start, stop in _shares(len(rows), processes)],
    )
    schemas.drop(schema)
    return timing


# --- the comparison -----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    api: str
    floor: str


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    parser.add_argument("--processes", type=int, default=4, help="OS processes for the MP row")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp dir")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("AUDITMW_BENCH_POSTGRES", DEFAULT_POSTGRES),
        help="server for the PostgreSQL rows (default: $AUDITMW_BENCH_POSTGRES or %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite rows only")
    add_summary_option(parser)
    args = parser.parse_args(argv)
    if args.events < args.processes or args.rounds < 1:
        parser.error("need --events >= --processes and --rounds >= 1")

    count: int = args.events
    workdir = Path(tempfile.mkdtemp(prefix="auditmw-bench-", dir=args.dir))
    schemas: PgSchemas | None = None
    pg_facts: list[tuple[str, str]] = []
    if not args.no_postgres:
        try:
            pg_facts = asyncio.run(pg_server_facts(args.postgres))
            schemas = PgSchemas(args.postgres)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            print(f"PostgreSQL rows skipped: {args.postgres} unreachable ({exc})", file=sys.stderr)
            pg_facts = [("PostgreSQL", f"skipped: unreachable ({exc})")]
    try:
        facts = [
            *machine_description(workdir, ["auditmw", "aiosqlite", "orjson", "asyncpg"]),
            *pg_facts,
            ("run", f"{count} events, {args.rounds} rounds, medians"),
        ]
        print_facts("auditmw append benchmark", facts)
        sys.stdout.flush()
        events = make_events(count, seed=1)
        # Warm-up API run: its rows (ids, timestamps, entry bytes, hashes) feed the floor.
        first = workdir / "warmup.db"
        api_run(first, events, "FULL")
        rows = stored_rows(first)
        first.unlink()
        if schemas is not None:
            # The same for PostgreSQL: the floor writes the rows of a warm-up API run.
            pg_first = schemas.fresh()
            asyncio.run(_pg_append_all(schemas.store_url(pg_first), events))
            asyncio.run(pg_check_store(schemas.store_url(pg_first), count))
            pg_rows = asyncio.run(pg_stored_rows(schemas.url, pg_first))
            schemas.drop(pg_first)

        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            return workdir / f"run{runs}.db"

        variants: dict[str, Callable[[], Timing]] = {
            "api FULL": lambda: api_run(fresh(), events, "FULL"),
            "floor FULL": lambda: floor_run(fresh(), rows, "FULL"),
            "api NORMAL": lambda: api_run(fresh(), events, "NORMAL"),
            "floor NORMAL": lambda: floor_run(fresh(), rows, "NORMAL"),
            "api FULL mp": lambda: multiprocess_run(fresh(), count, args.processes, "FULL"),
            "floor FULL multirow": lambda: floor_run(fresh(), rows, "FULL", multirow=True),
        }
        if schemas is not None:
            pg = schemas
            variants |= {
                "pg api": lambda: pg_api_run(pg, events),
                "pg floor copy": lambda: pg_floor_run(pg, pg_rows, copy=True),
                "pg api mp": lambda: pg_multiprocess_run(pg, count, args.processes),
                "pg floor copy mp": lambda: pg_floor_multiprocess_run(pg, pg_rows, args.processes),
                "pg floor executemany": lambda: pg_floor_run(pg, pg_rows, copy=False),
            }
        timings: dict[str, list[Timing]] = {name: [] for name in variants}
        order = list(variants)
        for round_ in range(args.rounds):
            # Alternate the order so slow drift of the machine hits every variant alike.
            for name in order if round_ % 2 == 0 else reversed(order):
                timings[name].append(variants[name]())
                for leftover in workdir.glob("run*.db*"):
                    leftover.unlink()
            print(f"  round {round_ + 1}/{args.rounds} done", file=sys.stderr)

        rows_shown = (
            Row("synchronous=FULL, 1 process", "api FULL", "floor FULL"),
            Row("synchronous=NORMAL, 1 process", "api NORMAL", "floor NORMAL"),
            Row(f"synchronous=FULL, {args.processes} processes", "api FULL mp", "floor FULL"),
            Row("FULL, 1 process, multi-row floor", "api FULL", "floor FULL multirow"),
        )
        if schemas is not None:
            rows_shown += (
                Row("PostgreSQL, 1 process", "pg api", "pg floor copy"),
                Row(
                    f"PostgreSQL, {args.processes} processes",
                    "pg api mp",
                    "pg floor copy mp",
                ),
                Row("PostgreSQL, 1 process, executemany floor", "pg api", "pg floor executemany"),
            )
        results = []
        table = []
        for row in rows_shown:
            api, floor = timings[row.api], timings[row.floor]
            api_wall, floor_wall = median(t.wall for t in api), median(t.wall for t in floor)
            per_round = [f.wall / a.wall for a, f in zip(api, floor, strict=True)]
            table.append(
                [
                    row.label,
                    fmt_rate(rate(count, api_wall)),
                    fmt_rate(rate(count, floor_wall)),
                    fmt_ratio(floor_wall / api_wall),
                    f"{min(per_round):.2f}-{max(per_round):.2f}",
                    fmt_us(median(t.cpu for t in api), count),
                    fmt_us(median(t.cpu for t in floor), count),
                ]
            )
            results.append(
                Result(
                    f"append, {row.label}",
                    floor_wall / api_wall,
                    "API/floor",
                    goal=0.5 if row.label.startswith("synchronous=FULL") else None,
                    detail=f"API {table[-1][1]}, floor {table[-1][2]}",
                )
            )
        print()
        print_table(
            ["", "API", "floor", "API/floor", "per round", "API CPU/event", "floor CPU/event"],
            table,
        )
        print(
            "\nAPI/floor: events/s of the API divided by the floor's (wall time, medians)."
            "\nfloor: one executemany() of the API's rows in one transaction; multi-row floor:"
            "\nINSERTs of 1024 rows each instead. CPU/event: process CPU time (all threads,"
            "\nsummed over the worker processes), steadier than wall time on a busy machine."
        )
        if schemas is not None:
            print(
                "PostgreSQL floors: copy_records_to_table of the API's rows in one transaction"
                "\n(with P processes: P connections copying a share each, concurrently), or one"
                "\nexecutemany() of the store's INSERT. CPU/event is the client's only: the"
                "\nserver's work (in its own processes) is in the wall time, not in this column."
            )
        write_summary(args.summary, "append", facts, results)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if schemas is not None:
            schemas.drop_all()


if __name__ == "__main__":
    sys.exit(main())
