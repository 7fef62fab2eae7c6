"""CSV export: auditmw's export code against the sqlite3 shell's own CSV output.

Uses the store of ``benchmarks/query.py`` (1,000,000 events by default; built once and
cached under benchmarks/.cache/). Side by side in one run, alternating over a few rounds:

- auditmw: ``export_chunks(store.iter_events(filter), "csv")``, the code behind
  ``GET /export.csv`` and ``auditmw export``, in a child process writing to /dev/null;
- the floor: the ``sqlite3`` command-line shell (Debian package ``sqlite3``) writing the
  same twelve columns with ``-csv``, details taken from the stored entry with
  ``json_extract``, also to /dev/null.

It prints rows/s and their ratio, and the peak memory (peak RSS of the child process)
of auditmw's export for no event, a week of events and the whole log: flat
memory means the three are about the same. A one-week export through both is first
compared cell by cell, so the shell is known to do the same work.

    .venv/bin/python benchmarks/export.py [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

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
from auditmw import SQLiteStore
from auditmw._admin.export import CSV_COLUMNS, export_chunks
from auditmw._stores.filters import EventFilter
from query import ensure_dataset

ONE_WEEK = {"since": "2025-03-03T00:00:00.000000Z", "until": "2025-03-10T00:00:00.000000Z"}
NOTHING = {"action": "no.such.action"}

# The shell's version of auditmw's CSV columns (see auditmw._admin.export.csv_row).
SHELL_COLUMNS = (
    "timestamp",
    "coalesce(user_email, user_id, '')",
    "action",
    "resource",
    "coalesce(resource_id, '')",
    "coalesce(ip_address, '')",
    "outcome",
    "coalesce(user_agent, '')",
    "coalesce(request_id, '')",
    "coalesce(json_extract(CAST(entry AS TEXT), '$.details'), '')",
    "seq",
    "hash",
)


def shell_query(filter: dict[str, str]) -> str:
    """The shell's SELECT for a filter of ``since``/``until`` or ``action`` (constants)."""
    where = []
    if "since" in filter:
        where.append(f"timestamp >= '{filter['since']}' AND timestamp < '{filter['until']}'")
    if "action" in filter:
        where.append(f"action = '{filter['action']}'")
    columns = ", ".join(
        f'{expression} AS "{name}"'
        for expression, name in zip(SHELL_COLUMNS, CSV_COLUMNS, strict=True)
    )
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {columns} FROM auditmw_events{condition} ORDER BY log, seq"  # noqa: S608


# --- the child processes ----------------------------------------------------------------------


@dataclass
class Run:
    rows: int
    seconds: float  # the export itself (auditmw: measured inside the child)
    peak_rss_kb: int


def measured(command: list[str], stdout: TextIO | int) -> tuple[str, float]:
    """Run ``command``; its stdout (when piped) and wall seconds."""
    start = time.perf_counter()
    completed = subprocess.run(command, stdout=stdout, text=True, check=True)
    return completed.stdout or "", time.perf_counter() - start


def peak_rss_kb() -> int:
    """This process's peak resident memory in KiB.

    ``VmHWM`` (Linux) belongs to the process's own address space. ``ru_maxrss`` is the
    fallback elsewhere; on Linux it would also count the parent's memory, which a child
    inherits at fork and keeps across exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def auditmw_run(store: Path, filter: dict[str, str], output: str = os.devnull) -> Run:
    command = [sys.executable, __file__, "--child", str(store), json.dumps(filter), output]
    reply, _ = measured(command, subprocess.PIPE)
    result = json.loads(reply)
    return Run(result["rows"], result["seconds"], result["peak_rss_kb"])


def shell_run(sqlite3: str, store: Path, filter: dict[str, str], output: str = os.devnull) -> Run:
    command = [sqlite3, "-readonly", "-csv", "-header", str(store), shell_query(filter)]
    with open(output, "w", encoding="utf-8") as out:
        _, seconds = measured(command, out)
    return Run(-1, seconds, 0)


async def child_export(store_path: Path, filter: dict[str, str], out: BinaryIO) -> None:
    """In the child: export with auditmw's code; report rows and seconds as JSON."""
    rows = 0

    def progress(count: int) -> None:
        nonlocal rows
        rows = count

    async with SQLiteStore(store_path, create=False) as store:
        start = time.perf_counter()
        async for chunk in export_chunks(store.iter_events(EventFilter(**filter)), "csv", progress):
            out.write(chunk)
        seconds = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_kb": peak_rss_kb()}))


# --- the comparison -------------------------------------------------------------------------


def check_same_output(sqlite3: str, store: Path) -> int:
    """Export one week through both and compare every cell; returns the row count."""
    with tempfile.TemporaryDirectory(prefix="auditmw-export-") as directory:
        ours, theirs = Path(directory, "auditmw.csv"), Path(directory, "shell.csv")
        auditmw_run(store, ONE_WEEK, str(ours))
        shell_run(sqlite3, store, ONE_WEEK, str(theirs))
        a = list(csv.reader(io.StringIO(ours.read_text(encoding="utf-8"))))
        b = list(csv.reader(io.StringIO(theirs.read_text(encoding="utf-8"))))
    if a[0] != b[0] or len(a) != len(b) or len(a) < 2:
        raise RuntimeError(f"different exports: {len(a)} and {len(b)} lines")
    details = CSV_COLUMNS.index("Details")
    for ours_row, theirs_row in zip(a[1:], b[1:], strict=True):
        ours_details = json.loads(ours_row[details] or "null")
        theirs_details = json.loads(theirs_row[details] or "null")
        if ours_details != theirs_details or _without(ours_row, details) != _without(
            theirs_row, details
        ):
            raise RuntimeError(f"different rows:\n{ours_row}\n{theirs_row}")
    return len(a) - 1


def _without(row: list[str], index: int) -> list[str]:
    return row[:index] + row[index + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "--child":
        with open(sys.argv[4], "wb") as out:
            asyncio.run(child_export(Path(sys.argv[2]), json.loads(sys.argv[3]), out))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the store")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (medians)")
    add_summary_option(parser)
    args = parser.parse_args(argv)
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        print(
            "the sqlite3 command-line shell is missing: install Debian's sqlite3 package "
            "(apt-get install sqlite3)",
            file=sys.stderr,
        )
        return 2
    store = ensure_dataset(args.events)
    shell_version = subprocess.run(
        [sqlite3, "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    facts = [
        *machine_description(store.parent, ["auditmw", "aiosqlite", "orjson"]),
        ("sqlite3 shell", f"{sqlite3} {shell_version}"),
        ("store", f"{store.name}, {args.events:,} events"),
        ("run", f"whole log to /dev/null, {args.rounds} alternating rounds, medians"),
    ]
    print_facts("auditmw CSV export benchmark", facts)
    week = check_same_output(sqlite3, store)
    print(
        f"  one week ({week:,} rows): auditmw and the shell write the same cells", file=sys.stderr
    )

    ours: list[Run] = []
    theirs: list[Run] = []
    for round_ in range(args.rounds):
        first_ours = round_ % 2 == 0  # alternate, so drift of the machine hits both alike
        for ours_now in (first_ours, not first_ours):
            if ours_now:
                ours.append(auditmw_run(store, {}))
            else:
                theirs.append(shell_run(sqlite3, store, {}))
        print(f"  round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    rows = ours[0].rows
    if rows != args.events:
        raise RuntimeError(f"auditmw exported {rows:,} rows of {args.events:,}")
    ours_rate = rate(rows, median(run.seconds for run in ours))
    theirs_rate = rate(rows, median(run.seconds for run in theirs))
    print(f"CSV export of {rows:,} events (rows/s, medians):")
    print_table(
        ["", "auditmw", "sqlite3 shell", "auditmw/shell", "per round"],
        [
            [
                "rows/s",
                fmt_rate(ours_rate),
                fmt_rate(theirs_rate),
                f"{ours_rate / theirs_rate:.2f}",
                ", ".join(
                    f"{t.seconds / o.seconds:.2f}" for o, t in zip(ours, theirs, strict=True)
                ),
            ],
        ],
    )
    print()
    nothing, one_week = auditmw_run(store, NOTHING), auditmw_run(store, ONE_WEEK)
    whole = max(ours, key=lambda run: run.peak_rss_kb)
    print("Peak memory of auditmw's export (peak RSS of the child process):")
    print_table(
        ["export", "rows", "peak RSS", "vs no rows"],
        [
            [label, f"{run.rows:,}", _mb(run.peak_rss_kb), f"{run.peak_rss_kb / base:.2f}"]
            for label, run, base in (
                ("nothing (start-up)", nothing, nothing.peak_rss_kb),
                ("one week", one_week, nothing.peak_rss_kb),
                ("the whole log", whole, nothing.peak_rss_kb),
            )
        ],
    )
    write_summary(
        args.summary,
        "export",
        facts,
        [
            Result(
                f"export, CSV of {rows:,} events",
                ours_rate / theirs_rate,
                "auditmw/shell",
                detail=f"auditmw {fmt_rate(ours_rate)}, shell {fmt_rate(theirs_rate)}",
            ),
            Result(
                "export, peak memory: whole log / no rows",
                whole.peak_rss_kb / nothing.peak_rss_kb,
                "RSS ratio",
                detail=f"{_mb(whole.peak_rss_kb)} vs {_mb(nothing.peak_rss_kb)}",
            ),
        ],
    )
    return 0


def _mb(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


if __name__ == "__main__":
    sys.exit(main())
