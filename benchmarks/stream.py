"""Log streams: how fast a stream delivers, per destination, against how fast the store
appends; and how long an event takes from its commit to the destination's acknowledgement.

Side by side in one run, alternating over a few rounds (medians):

- **append rate**: N concurrent ``store.append`` calls on a fresh store (group commit,
  ``synchronous=FULL`` on SQLite): the most the store takes, far more than the HTTP
  benchmark's audited requests/s;
- **stream throughput**: ``StreamForwarder.run_once()`` delivering those N events (catching
  up: full batches), to each destination: ``file://`` (gzip JSON Lines segments in a
  temporary directory, each fsynced) and ``nats://`` (JetStream, a stream of the run's own
  on the server of ``--nats``, every publish acknowledged); the ratios stream / append and
  stream / the HTTP benchmark's audited requests per second (``--http-rate``) say whether
  a stream keeps up (goal: at least twice the HTTP rate);
- **latency**: a following forwarder (``run()``) while events are appended at a steady
  ``--rate`` per second, one at a time: for each event, from its append returning (it is
  committed) to ``deliver()`` returning for the batch that holds it (acknowledged);
  p50 and p99.

    .venv/bin/python benchmarks/stream.py [--events N] [--rounds R] [--rate R]
        [--store sqlite|postgres] [--postgres URL] [--nats URL] [--summary FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from _common import (
    Result,
    add_summary_option,
    fmt_rate,
    machine_description,
    median,
    print_facts,
    print_table,
    rate,
    write_summary,
)
from auditmw import AuditStore, DeliveryBatch, Destination, NewEvent, StreamForwarder
from auditmw._stores.open import open_store
from auditmw._streams.files import FileDestination

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS = "nats://127.0.0.1:4222"
StoreMaker = Callable[[], Awaitable[tuple[AuditStore, Callable[[], Awaitable[None]]]]]


class Timed(Destination):
    """Another destination, recording when each event's batch was acknowledged."""

    scheme = "timed"

    def __init__(self, inner: Destination) -> None:
        self.inner = inner
        self.acked: dict[str, float] = {}

    @classmethod
    def from_url(cls, url: str, settings: object) -> Timed:  # type: ignore[override]
        raise NotImplementedError

    async def open(self) -> None:
        await self.inner.open()

    async def deliver(self, batch: DeliveryBatch) -> None:
        await self.inner.deliver(batch)
        now = time.perf_counter()
        for event in batch.events:
            self.acked[event.id] = now

    async def close(self) -> None:
        await self.inner.close()


async def append(store: AuditStore, count: int) -> float:
    """Seconds to append ``count`` events concurrently (a thousand at a time)."""
    start = time.perf_counter()
    for first in range(0, count, 1000):
        await asyncio.gather(
            *(
                store.append(NewEvent(action="bench.event", resource="item", resource_id=str(n)))
                for n in range(first, min(first + 1000, count))
            )
        )
    return time.perf_counter() - start


async def deliver_all(store: AuditStore, destination: Destination, name: str, count: int) -> float:
    """Seconds for a new stream ``name`` to deliver the store's ``count`` events."""
    forwarder = StreamForwarder(store, destination, name=name)
    start = time.perf_counter()
    delivered = await forwarder.run_once()
    seconds = time.perf_counter() - start
    assert delivered == count, (delivered, count)
    return seconds


async def latencies(
    store: AuditStore, destination: Destination, name: str, count: int, per_second: float
) -> list[float]:
    """Commit-to-acknowledgement seconds of ``count`` events appended at ``per_second``
    while stream ``name`` (caught up: its cursor at the head) follows."""
    timed = Timed(destination)
    forwarder = StreamForwarder(store, timed, name=name)
    task = asyncio.create_task(forwarder.run())
    committed: dict[str, float] = {}
    interval = 1 / per_second
    next_at = time.perf_counter()
    for number in range(count):
        event = await store.append(
            NewEvent(action="bench.live", resource="item", resource_id=str(number))
        )
        committed[event.id] = time.perf_counter()
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    # (Events of an earlier run may be acknowledged too: wait for these ones.)
    deadline = time.perf_counter() + 60
    while not timed.acked.keys() >= committed.keys() and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return [timed.acked[key] - at for key, at in committed.items() if key in timed.acked]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def nats_available(url: str) -> bool:
    try:
        import nats
    except ImportError:
        return False
    try:
        client = await nats.connect(
            url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1
        )
    except Exception:
        return False
    await client.close()
    return True


async def jetstream(url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A JetStream stream of this run's own: its subject, and how to delete it."""
    import nats

    token = uuid.uuid4().hex[:10]
    name, subject = f"AUDITMW_BENCH_{token}", f"auditmw.bench.{token}"
    client = await nats.connect(url)
    await client.jetstream().add_stream(name=name, subjects=[subject])

    async def delete() -> None:
        await client.jetstream().delete_stream(name)
        await client.close()

    return subject, delete


def store_maker(kind: str, postgres: str, directory: Path) -> StoreMaker:
    async def make() -> tuple[AuditStore, Callable[[], Awaitable[None]]]:
        if kind == "sqlite":
            path = directory / f"{uuid.uuid4().hex}.db"
            store = await open_store(str(path)).open()

            async def drop() -> None:
                await store.close()
                path.unlink()

            return store, drop
        import asyncpg

        schema = f"auditmw_bench_{uuid.uuid4().hex[:10]}"
        store = await open_store(f"{postgres}?schema={schema}").open()

        async def drop_schema() -> None:
            await store.close()
            conn = await asyncpg.connect(postgres)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()

        return store, drop_schema

    return make


async def run(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="auditmw-bench-stream-"))
    try:
        facts = machine_description(directory, ["auditmw", "nats-py", "asyncpg"])
        facts.append(("store", args.store))
        has_nats = await nats_available(args.nats)
        facts.append(("NATS", args.nats if has_nats else f"{args.nats}: not reachable, skipped"))
        print_facts("auditmw stream benchmark", facts)
        make = store_maker(args.store, args.postgres, directory)
        destinations: dict[
            str, Callable[[], Awaitable[tuple[Destination, Callable[[], Awaitable[None]]]]]
        ] = {}

        async def file_destination() -> tuple[Destination, Callable[[], Awaitable[None]]]:
            out = directory / uuid.uuid4().hex

            async def remove() -> None:
                shutil.rmtree(out, ignore_errors=True)

            return FileDestination(out), remove

        destinations["file"] = file_destination
        if has_nats:
            from auditmw._streams.nats import NatsDestination

            async def nats_destination() -> tuple[Destination, Callable[[], Awaitable[None]]]:
                subject, delete = await jetstream(args.nats)
                return NatsDestination.from_url(f"{args.nats}/{subject}", {}), delete

            destinations["nats"] = nats_destination

        append_rates: list[float] = []
        stream_rates: dict[str, list[float]] = {name: [] for name in destinations}
        lags: dict[str, list[float]] = {name: [] for name in destinations}
        for round_number in range(args.rounds):
            store, drop = await make()
            try:
                append_rates.append(rate(args.events, await append(store, args.events)))
                names = list(destinations)
                if round_number % 2:
                    names.reverse()
                for name in names:
                    destination, cleanup = await destinations[name]()
                    try:
                        seconds = await deliver_all(store, destination, name, args.events)
                        stream_rates[name].append(rate(args.events, seconds))
                    finally:
                        await cleanup()
                for name in names:  # the streams are caught up: only new events count
                    destination, cleanup = await destinations[name]()
                    try:
                        lags[name] += await latencies(
                            store, destination, name, args.live, args.rate
                        )
                    finally:
                        await cleanup()
            finally:
                await drop()
            print(f"  round {round_number + 1}/{args.rounds} done", file=sys.stderr)

        append_rate = median(append_rates)
        rows = [
            ["append (concurrent, group commit)", fmt_rate(append_rate), "1.00", "", "", ""],
            ["audited HTTP requests (--http-rate)", fmt_rate(args.http_rate), "", "1.00", "", ""],
        ]
        results = []
        for name in destinations:
            stream_rate = median(stream_rates[name])
            p50, p99 = percentile(lags[name], 0.5), percentile(lags[name], 0.99)
            rows.append(
                [
                    f"stream to {name}",
                    fmt_rate(stream_rate),
                    f"{stream_rate / append_rate:.2f}",
                    f"{stream_rate / args.http_rate:.2f}",
                    f"{p50 * 1000:.1f} ms",
                    f"{p99 * 1000:.1f} ms",
                ]
            )
            results.append(
                Result(
                    f"stream to {name} ({args.store})",
                    stream_rate / args.http_rate,
                    "stream/HTTP appends",
                    goal=2.0,
                    detail=f"{fmt_rate(stream_rate)}; appends {fmt_rate(append_rate)} "
                    f"({stream_rate / append_rate:.2f}); "
                    f"commit to ack p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
                    f"at {args.rate:g} events/s",
                )
            )
        print()
        per_destination = statistics.mean(len(values) for values in lags.values())
        print(
            f"{args.events:,} events caught up per round; latency over {args.live:,} events "
            f"appended one by one at {args.rate:g}/s while following (median of "
            f"{args.rounds} rounds; {per_destination:.0f} latencies per destination)"
        )
        print_table(["", "events/s", "vs append", "vs HTTP", "commit→ack p50", "p99"], rows)
        write_summary(args.summary, "stream", facts, results)
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per throughput run")
    parser.add_argument("--live", type=int, default=1000, help="events per latency run")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="appends per second while following"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--http-rate",
        type=float,
        default=2800.0,
        help="audited requests/s of benchmarks/http_overhead.py to compare with (default: "
        "about 2,800/s, the README's ~360 µs per request on its 2-core machine)",
    )
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for --store postgres")
    parser.add_argument("--nats", default=DEFAULT_NATS, help="JetStream server (skipped if down)")
    add_summary_option(parser)
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
