"""Append throughput: the public API against the floor of raw ``sqlite3``.

The API run is N concurrent ``store.append(NewEvent(...))`` calls (``asyncio.gather``)
on a fresh ``SQLiteStore``: validation, canonical JSON, ids, timestamps, group commit,
hash chain and durable commits, everything a caller pays for. The floor inserts the
very rows an API run produced (same columns, canonical entry bytes and hashes) with one
stdlib ``sqlite3`` ``executemany`` in one transaction, into the same schema with the
same pragmas. A stricter floor does the same with INSERTs of 1024 rows each, as the
store does: with the FTS5 search index, a statement per row costs several times more.

All run side by side in one process, alternating over a few rounds; the table shows
medians and the ratio API / floor (goal: at least 0.5 with ``synchronous=FULL``). Every
API run's store is verified afterwards (not timed): all events there, chain intact.

    .venv/bin/python benchmarks/append.py [--events N] [--rounds R] [--processes P]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
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

from _common import (
    Stopwatch,
    Timing,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    machine_description,
    median,
    print_facts,
    print_table,
    rate,
)
from auditmw import NewEvent, SQLiteStore
from auditmw._sqlite import INSERT, ROW_COLUMNS, SAFETY_PRAGMAS, SCHEMA, WRITE_PRAGMAS

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
FIRST_NAMES = ("ada", "grace", "alan", "edsger", "barbara", "ken", "linus", "margaret", "donald")
LAST_NAMES = ("lovelace", "hopper", "turing", "dijkstra", "liskov", "thompson", "knuth")
DOMAINS = ("example.com", "example.org", "corp.example.net")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "python-httpx/0.27.0",
    "curl/8.8.0",
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
    args = parser.parse_args(argv)
    if args.events < args.processes or args.rounds < 1:
        parser.error("need --events >= --processes and --rounds >= 1")

    count: int = args.events
    workdir = Path(tempfile.mkdtemp(prefix="auditmw-bench-", dir=args.dir))
    try:
        print_facts(
            "auditmw append benchmark",
            [
                *machine_description(workdir, ["auditmw", "aiosqlite", "orjson"]),
                ("run", f"{count} events, {args.rounds} rounds, medians"),
            ],
        )
        sys.stdout.flush()
        events = make_events(count, seed=1)
        # Warm-up API run: its rows (ids, timestamps, entry bytes, hashes) feed the floor.
        first = workdir / "warmup.db"
        api_run(first, events, "FULL")
        rows = stored_rows(first)
        first.unlink()

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
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
