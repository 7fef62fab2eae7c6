"""Pruning a large log while the application keeps appending (docs/retention.md).

For each backend (a SQLite file; PostgreSQL when the server of ``--postgres`` answers), a
store of N old events (backdated a year, written through the store's API) and then, in
one run, side by side:

1. **without a prune**: C concurrent appenders append for a while; each append's latency
   is recorded;
2. **during a prune**: the same appenders run while ``store.prune(before=...,
   discard=True)`` deletes all N old events (the recording transaction, then batches of
   the backend's ``prune_batch`` rows per transaction: SQLite 2,000, PostgreSQL 10,000).

It prints the prune's time, and the appends' latency (p50, p99, max) and throughput in
both phases, with the ratios during/without (1.0: the prune costs the appends nothing).
Appends that failed (their deadline passed while the prune held the write lock) are
counted.

    .venv/bin/python benchmarks/prune.py [--events N] [--appenders C] [--quick]
        [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from _common import machine_description, print_facts, print_table
from auditmw import AuditStore, NewEvent, StoreError, open_store
from auditmw.testing import append_at

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
OLD = "2024-01-01T00:00:00.000000Z"
BEFORE = "2025-01-01"
FILL_BATCH = 20_000
QUICK = {"events": 100_000, "appenders": 8}


@dataclass
class Load:
    """Latencies of the appends made while it ran."""

    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def appenders(store: AuditStore, count: int, stop: asyncio.Event) -> Load:
    load = Load()

    async def one() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                await store.append(NewEvent(action="bench.append", resource="r"))
            except StoreError:
                load.failed += 1
                continue
            load.latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    load.seconds = time.perf_counter() - start
    return load


async def fill(store: AuditStore, events: int) -> None:
    done = 0
    while done < events:
        size = min(FILL_BATCH, events - done)
        batch = [
            (NewEvent(action="doc.read", resource="doc", resource_id=str(done + i)), OLD)
            for i in range(size)
        ]
        await append_at(store, batch)
        done += size
        print(f"  filled {done:,} of {events:,}", file=sys.stderr, end="\r")
    print(file=sys.stderr)


async def measure(url: str, events: int, count: int) -> tuple[float, Load, Load, int]:
    async with open_store(url, max_batch=5000) as store:
        await fill(store, events)
        # Without a prune: as long as a prune is expected to take, at least 3 s.
        stop = asyncio.Event()
        task = asyncio.create_task(appenders(store, count, stop))
        await asyncio.sleep(max(3.0, events / 100_000))  # a benchmark's measuring window
        stop.set()
        without = await task
        stop = asyncio.Event()
        task = asyncio.create_task(appenders(store, count, stop))
        start = time.perf_counter()
        try:
            report = await store.prune(
                before=BEFORE, archive=None, discard=True, actor="bench", progress=progress
            )
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            during = await task
        return seconds, without, during, report.deleted


def progress(step: str) -> None:
    print(f"  prune: {step}", file=sys.stderr, end="\r" if step.startswith("deleted") else "\n")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def ratio(during: float, without: float) -> str:
    return f"{during / without:.2f}" if without else "n/a"


def report(name: str, events: int, result: tuple[float, Load, Load, int]) -> None:
    seconds, without, during, deleted = result
    print(f"{name}: pruned {deleted:,} of {events:,} events in {seconds:.2f} s")
    rows = []
    for label, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
        a, b = without.quantile(q), during.quantile(q)
        rows.append([f"append latency {label}", ms(a), ms(b), ratio(b, a)])
    rows.append(
        [
            "appends/s",
            f"{without.rate:,.0f}",
            f"{during.rate:,.0f}",
            ratio(during.rate, without.rate),
        ]
    )
    rows.append(["failed appends", str(without.failed), str(during.failed), ""])
    print_table(["", "without a prune", "during the prune", "during/without"], rows)
    print()


async def postgres_url(base: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(base, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    schema = f"bench_prune_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    return f"{base}?schema={schema}"


async def drop(url: str) -> None:
    import asyncpg

    base, _, schema = url.partition("?schema=")
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="old events to prune")
    parser.add_argument("--appenders", type=int, default=8, help="concurrent appenders")
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, metavar="URL")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.events, args.appenders = QUICK["events"], QUICK["appenders"]
    with tempfile.TemporaryDirectory(prefix="auditmw-prune-") as directory:
        print_facts("Machine", machine_description(directory, ["auditmw", "asyncpg"]))
        path = Path(directory) / "audit.db"
        result = asyncio.run(measure(str(path), args.events, args.appenders))
        report("SQLite (recorded, then 2,000-row batches)", args.events, result)
    if args.no_postgres:
        return
    url = asyncio.run(postgres_url(args.postgres))
    if url is None:
        print(f"PostgreSQL at {args.postgres} does not answer: skipped")
        return
    try:
        result = asyncio.run(measure(url, args.events, args.appenders))
        report("PostgreSQL (recorded, then 10,000-row batches)", args.events, result)
    finally:
        asyncio.run(drop(url))


if __name__ == "__main__":
    main()
