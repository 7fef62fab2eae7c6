"""Append throughput: the public API against the floor of raw ``sqlite3``.

The API run is N concurrent ``store.append(NewEvent(...))`` calls (``asyncio.gather``)
on a fresh ``SQLiteStore``: validation, canonical JSON, ids, timestamps, group commit,
hash chain and durable commits, everything a caller pays for. The floor inserts the
very rows an API run produced (same columns, canonical entry bytes and hashes) with one
stdlib ``sqlite3`` ``executemany`` in one transaction, into the same schema with the
same pragmas: the least work SQLite needs to store those rows.

Both run side by side in one process, alternating over a few rounds; the table shows
medians and the ratio API / floor (goal: at least 0.5 with ``synchronous=FULL``).

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
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from _common import (
    fmt_rate,
    fmt_ratio,
    machine_description,
    median,
    print_facts,
    print_table,
    rate,
)

from auditmw import NewEvent, SQLiteStore
from auditmw._sqlite import INSERT, ROW_COLUMNS, SCHEMA

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
            ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
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


async def _append_all(path: Path, events: Sequence[NewEvent], synchronous: str) -> float:
    async with SQLiteStore(path, synchronous=synchronous) as store:
        start = time.perf_counter()
        await asyncio.gather(*(store.append(event) for event in events))
        return time.perf_counter() - start


def api_run(path: Path, events: Sequence[NewEvent], synchronous: str) -> float:
    """Seconds for all appends of ``events`` to return (store opened beforehand)."""
    return asyncio.run(_append_all(path, events, synchronous))


def _process_worker(
    path: Path, count: int, seed: int, synchronous: str, barrier: Barrier, results: Any
) -> None:
    events = make_events(count, seed)

    async def run() -> tuple[float, float]:
        async with SQLiteStore(path, synchronous=synchronous, busy_timeout=60) as store:
            barrier.wait()  # everyone has imported, built events and opened the store
            start = time.monotonic()  # system-wide clock: comparable across processes
            await asyncio.gather(*(store.append(event) for event in events))
            return start, time.monotonic()

    results.put(asyncio.run(run()))


def multiprocess_run(path: Path, count: int, processes: int, synchronous: str) -> float:
    """Seconds from the first process starting its appends to the last one finishing."""
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
    spans = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {worker.exitcode}")
    return max(end for _, end in spans) - min(start for start, _ in spans)


async def _create(path: Path) -> None:
    async with SQLiteStore(path):
        pass


async def _check_store(path: Path, expected: int) -> None:
    async with SQLiteStore(path, create=False) as store:
        report = await store.verify()
        if not report.ok or report.entries != expected:
            raise RuntimeError(f"{path}: {report.entries} entries, findings {report.findings}")


# --- the floor ----------------------------------------------------------------------


def stored_rows(path: Path) -> list[tuple[Any, ...]]:
    """The rows an API run stored, every column, in chain order."""
    with sqlite3.connect(path) as conn:
        # Constant column names only.
        query = f"SELECT {', '.join(ROW_COLUMNS)} FROM auditmw_events ORDER BY log, seq"  # noqa: S608
        rows = conn.execute(query).fetchall()
    conn.close()
    return rows


def floor_run(path: Path, rows: Sequence[tuple[Any, ...]], synchronous: str) -> float:
    """Seconds for one ``executemany`` of ``rows`` in one committed transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


# --- the comparison -----------------------------------------------------------------


@dataclass
class Series:
    """Timings of one variant over the rounds."""

    seconds: list[float] = field(default_factory=list)

    def median(self) -> float:
        return median(self.seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians)")
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
        events = make_events(count, seed=1)
        # Warm-up API run: its rows (ids, timestamps, entry bytes, hashes) feed the floor.
        first = workdir / "warmup.db"
        api_run(first, events, "FULL")
        asyncio.run(_check_store(first, count))
        rows = stored_rows(first)

        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            path = workdir / f"run{runs}.db"
            return path

        variants: dict[str, Callable[[], float]] = {
            "api FULL": lambda: api_run(fresh(), events, "FULL"),
            "floor FULL": lambda: floor_run(fresh(), rows, "FULL"),
            "api NORMAL": lambda: api_run(fresh(), events, "NORMAL"),
            "floor NORMAL": lambda: floor_run(fresh(), rows, "NORMAL"),
            "api FULL mp": lambda: multiprocess_run(fresh(), count, args.processes, "FULL"),
        }
        series = {name: Series() for name in variants}
        order = list(variants)
        for round_ in range(args.rounds):
            # Alternate the order so slow drift of the machine hits every variant alike.
            for name in order if round_ % 2 == 0 else reversed(order):
                series[name].seconds.append(variants[name]())
                for leftover in workdir.glob("run*.db*"):
                    leftover.unlink()
            print(f"  round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        # The multi-process store of the last round is gone; check one more for correctness.
        check = workdir / "mp-check.db"
        multiprocess_run(check, count, args.processes, "FULL")
        asyncio.run(_check_store(check, count))

        def ratios(api: str, floor: str) -> str:
            per_round = [
                f / a for a, f in zip(series[api].seconds, series[floor].seconds, strict=True)
            ]
            return f"{min(per_round):.2f}-{max(per_round):.2f}"

        table = []
        for label, api, floor in (
            ("synchronous=FULL, 1 process", "api FULL", "floor FULL"),
            ("synchronous=NORMAL, 1 process", "api NORMAL", "floor NORMAL"),
            (f"synchronous=FULL, {args.processes} processes", "api FULL mp", "floor FULL"),
        ):
            api_rate = rate(count, series[api].median())
            floor_rate = rate(count, series[floor].median())
            table.append(
                [
                    label,
                    fmt_rate(api_rate),
                    fmt_rate(floor_rate),
                    fmt_ratio(api_rate / floor_rate),
                    ratios(api, floor),
                ]
            )
        print_table(["", "API", "floor", "API/floor", "per round"], table)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
