"""Append events to an auditmw store from its own OS process (run by the tests).

Usage: ``python tests/_appender.py STORE --tag T --coroutines N [--per-coroutine M]
[--logs a,b] [--busy-timeout S] [--wait-go]`` (coroutine i appends to the i-th log,
round robin). STORE is anything ``open_store`` takes: a SQLite path or URL, or a
``postgresql://`` URL; ``--busy-timeout`` applies to SQLite only.

Prints ``ready`` once the store is open (a PostgreSQL store first prints
``backend <pid>``: the server process of its writer connection, which outlives a killed
appender for a moment), then waits for one line on stdin when ``--wait-go`` is given, so
that several processes start appending at the same moment.
Every append that *returned* is printed as ``<id> <seq> <hash> <log>`` and flushed at
once; nothing is printed for an append that has not returned. Without
``--per-coroutine`` the coroutines append until the process is killed. Exits 0 after
printing ``done``, or 1 with the error on stderr if an append failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from auditmw import AuditStore, NewEvent, StoreError, open_store
from auditmw._stores.postgres import PostgresStore

PAYLOAD = "x" * 200  # makes each batch heavier, so a kill is likely to hit a commit


async def worker(store: AuditStore, args: argparse.Namespace, number: int) -> None:
    count = 0
    while args.per_coroutine is None or count < args.per_coroutine:
        event = await store.append(
            NewEvent(
                action="proc.append",
                resource="item",
                resource_id=f"{args.tag}-{number}-{count}",
                user_id=f"user-{number % 7}",
                details={"tag": args.tag, "worker": number, "n": count, "pad": PAYLOAD},
                log=args.logs[number % len(args.logs)],
            )
        )
        # One write call per line, flushed before the next append: a line on stdout
        # means that append had returned.
        sys.stdout.write(f"{event.id} {event.seq} {event.hash} {event.log}\n")
        sys.stdout.flush()
        count += 1


async def run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if not args.store.startswith(("postgresql://", "postgres://")):
        options["busy_timeout"] = args.busy_timeout  # SQLite's wait for the write lock
    async with open_store(args.store, **options) as store:
        if isinstance(store, PostgresStore):
            assert store.backend._write_conn is not None
            sys.stdout.write(f"backend {store.backend._write_conn.get_server_pid()}\n")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        if args.wait_go:
            await asyncio.to_thread(sys.stdin.readline)
        try:
            await asyncio.gather(*(worker(store, args, n) for n in range(args.coroutines)))
        except StoreError as exc:
            print(f"append failed: {exc}", file=sys.stderr)
            return 1
    sys.stdout.write("done\n")
    sys.stdout.flush()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--coroutines", type=int, default=10)
    parser.add_argument("--per-coroutine", type=int, default=None)
    parser.add_argument("--logs", type=lambda text: text.split(","), default=["default"])
    parser.add_argument("--busy-timeout", type=float, default=60.0)
    parser.add_argument("--wait-go", action="store_true")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
