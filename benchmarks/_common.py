"""Helpers shared by the benchmarks: machine description, timing, tables.

Absolute times drift on a shared machine, so benchmarks compare variants side by side
in one run: alternate them over a few rounds, take medians and print ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), or what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), else the logical core count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def filesystem_of(path: str | os.PathLike[str]) -> str:
    """The mount point and filesystem type holding ``path`` (Linux), else "unknown".

    It matters for durability benchmarks: fsync on tmpfs costs nothing.
    """
    target = Path(path).resolve()
    best: tuple[str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount_point, fs_type = fields[1], fields[2]
                if target.is_relative_to(mount_point) and (
                    best is None or len(mount_point) > len(best[0])
                ):
                    best = (mount_point, fs_type)
    except OSError:
        return "unknown"
    return "unknown" if best is None else f"{best[1]} (mounted on {best[0]})"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_description(
    data_dir: str | os.PathLike[str] | None = None, packages: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Facts a reader needs to compare benchmark numbers across machines."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    facts = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {usable_cores()} usable"),
        ("load average", load),
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("SQLite", f"{sqlite3.sqlite_version} (library linked into Python's sqlite3)"),
    ]
    facts.extend((name, package_version(name)) for name in packages)
    if data_dir is not None:
        facts.append(("data dir", f"{data_dir} on {filesystem_of(data_dir)}"))
    return facts


def print_facts(title: str, facts: Sequence[tuple[str, str]]) -> None:
    print(title)
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        print(f"  {name.ljust(width)}  {value}")
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds of one measured run.

    CPU time (all threads of the process, or of the worker processes) is the steadier
    number on a shared machine: other load stretches wall time, not the work done.
    """

    wall: float
    cpu: float


class Stopwatch:
    """Wall and CPU time of a block: ``with Stopwatch() as watch: ...; watch.timing``."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.timing = Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


def timed(function: Callable[[], object]) -> float:
    """Seconds ``function()`` took (monotonic, high resolution)."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


async def timed_async(function: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``await function()`` took."""
    start = time.perf_counter()
    await function()
    return time.perf_counter() - start


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else float("inf")


def fmt_rate(per_second: float) -> str:
    return f"{per_second:,.0f}/s"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}"


def fmt_us(seconds: float, count: int) -> str:
    """Microseconds per item."""
    return f"{seconds / count * 1e6:,.1f} µs"


# --- the machine-readable summary (for scripts/bench) ---------------------------------


@dataclass(frozen=True)
class Result:
    """One headline figure of a benchmark: a ratio of two variants run side by side.

    ``measure`` says what the ratio divides (e.g. "API/floor"); ``goal`` is the lowest
    acceptable ratio when the benchmark has one (or the highest, with ``goal_is_max``);
    ``detail`` carries the absolute figures behind it, for the reader.
    """

    name: str
    ratio: float
    measure: str
    goal: float | None = None
    goal_is_max: bool = False
    detail: str = ""


def add_summary_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the headline ratios as JSON to FILE (scripts/bench reads it)",
    )


def write_summary(
    path: Path | None,
    benchmark: str,
    facts: Sequence[tuple[str, str]],
    results: Iterable[Result],
) -> None:
    """Write ``{"benchmark", "facts", "results"}`` as JSON to ``path`` (None: nothing)."""
    if path is None:
        return
    document = {
        "benchmark": benchmark,
        "facts": [list(fact) for fact in facts],
        "results": [dataclasses.asdict(result) for result in results],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def parse_ratio(text: str) -> float:
    """A ratio as a benchmark's table prints it ("1.02", "1,234", "12.3x") back to a float."""
    return float(text.replace(",", "").rstrip("x").strip())


def print_run_summary(out: Path, quick: bool) -> None:
    """scripts/bench's closing table: every benchmark's results from ``out``.

    ``out/runs.txt`` holds a line per benchmark run: name, exit code, seconds, arguments;
    ``out/NAME.json`` what the benchmark wrote with ``--summary``.
    """
    runs = []
    for line in (out / "runs.txt").read_text(encoding="utf-8").splitlines():
        name, code, seconds, *extra = line.split()
        runs.append((name, int(code), int(seconds), " ".join(extra)))
    documents = {
        name: json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        for name, _, _, _ in runs
        if (out / f"{name}.json").exists()
    }
    facts = dict(machine_description())
    for document in documents.values():
        for key, value in document["facts"]:
            if key in ("PostgreSQL", "sqlite3 shell", "load generator"):
                facts.setdefault(key, value)
    facts["load average"] += " (at the end of the run)"
    facts["mode"] = "quick (smaller data sets, fewer rounds)" if quick else "full"
    print_facts("auditmw benchmarks: summary", list(facts.items()))

    table = []
    for name, code, _, _ in runs:
        document = documents.get(name)
        if code != 0 or document is None:
            why = f"exit code {code}" if code != 0 else "wrote no --summary"
            table.append([f"{name}: FAILED ({why})", "", "", "", "", f"see {out}/{name}.log"])
            continue
        for result in document["results"]:
            goal, ratio = result["goal"], result["ratio"]
            if goal is None:
                goal_text = verdict = ""
            elif result["goal_is_max"]:
                goal_text, verdict = f"<= {goal:g}", "met" if ratio <= goal else "NOT met"
            else:
                goal_text, verdict = f">= {goal:g}", "met" if ratio >= goal else "NOT met"
            table.append(
                [
                    result["name"],
                    result["measure"],
                    f"{ratio:,.2f}",
                    goal_text,
                    verdict,
                    result["detail"],
                ]
            )
    print_table(["result", "ratio of", "ratio", "goal", "", "absolute figures (medians)"], table)
    print()
    print_table(
        ["benchmark", "arguments", "time", "exit code"],
        [
            [name, extra or "(defaults)", f"{seconds // 60}m{seconds % 60:02d}s", str(code)]
            for name, code, seconds, extra in runs
        ],
    )
    print(f"\nFull outputs and JSON summaries: {out}/")
    print("Ratios compare variants run side by side in one run; absolute figures drift with load.")


# Realistic people and clients for generated events (append.py, query.py).
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
