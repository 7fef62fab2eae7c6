"""Verification against the floor of hashing the entries; appends with checkpoints on/off.

Part 1 uses the store of ``benchmarks/query.py`` (1,000,000 events by default; built
once and cached under benchmarks/.cache/), with two checkpoints signed by a key made for
the run: one of the whole log, one of its first half (an auditor's, so a consistency
proof is made and verified too). Side by side in one run, alternating over rounds:

- read: the rows as the verifier reads them (``store.iter_chain_rows()``), nothing else;
- floor: the same reading, plus one bare ``SHA-256(0x00 ‖ entry)`` per row: the least
  any verification of the stored bytes costs;
- a stricter floor: stdlib ``sqlite3`` reading the entries, plus the same hash;
- storage check: SQLite's ``PRAGMA quick_check`` of every page of the file, alone (both
  variants below run it before their pass);
- chain: ``store.verify()`` (the storage check, then hashes, links, index columns);
- chain + Merkle: ``check_checkpoints``, what ``auditmw verify --public-key`` runs: the
  storage check, the chain pass, each recomputed hash fed to the Merkle tree, both roots
  compared, the consistency proof gathered and verified, all in that one pass.

It prints times, µs per entry and the ratio floor/variant (1.0: as fast as the floor).

Part 2 times appends (N concurrent ``store.append`` calls on a fresh SQLite store, then
``close()``, which issues the last checkpoint) with checkpointing off and on
(``Checkpointing(key, every=...)`` with a ``DirectorySink``), and checks that every
checkpointed store is anchored up to its last entry (not timed).

    .venv/bin/python benchmarks/verify.py [--events N] [--appends M] [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from _common import (
    Result,
    Stopwatch,
    Timing,
    add_summary_option,
    fmt_rate,
    fmt_us,
    machine_description,
    median,
    print_facts,
    print_table,
    rate,
    write_summary,
)
from append import make_events
from auditmw import Checkpointing, DirectorySink, NewEvent, SQLiteStore
from auditmw._transparency.checkpoint_report import CheckpointReport
from auditmw._transparency.external import check_checkpoints
from auditmw._transparency.inputs import CheckpointInput, sink_checkpoints
from auditmw._transparency.merkle import Frontier
from auditmw._transparency.notes import (
    Checkpoint,
    SigningKey,
    VerifierKey,
    log_origin,
    sign_checkpoint,
)
from query import ensure_dataset

# A measured variant: reads the store at the path, returns how many entries it saw.
Variant = Callable[[Path], Coroutine[Any, Any, int]]
KEY_NAME = "bench.auditmw.example/verify"
QUICK = {"events": 100_000, "appends": 2_000, "rounds": 1}


# --- part 1: verification -----------------------------------------------------------------


def sign_dataset(path: Path, key: SigningKey) -> tuple[list[CheckpointInput], int]:
    """A checkpoint of every log at its full size, and one of the first half of the
    largest log as an auditor's (``prove``). Roots from the stored hashes (not timed)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sizes = dict(conn.execute("SELECT log, count(*) FROM auditmw_events GROUP BY log"))
        biggest = max(sizes, key=sizes.__getitem__)
        notes = []
        for log, size in sizes.items():
            frontier = Frontier()
            rows = conn.execute(
                "SELECT hash FROM auditmw_events WHERE log = ? ORDER BY seq", (log,)
            )
            for (hash_,) in rows:
                frontier.append(bytes.fromhex(hash_))
                if log == biggest and frontier.size == size // 2:
                    notes.append(note(key, log, frontier, f"{log}: first half", prove=True))
            notes.append(note(key, log, frontier, f"{log}: whole log"))
    finally:
        conn.close()
    return notes, sum(sizes.values())


def note(
    key: SigningKey, log: str, frontier: Frontier, source: str, *, prove: bool = False
) -> CheckpointInput:
    checkpoint = Checkpoint(log_origin(key.name, log), frontier.size, frontier.root())
    return CheckpointInput(sign_checkpoint(checkpoint, key), source, prove=prove)


async def read_only(path: Path) -> int:
    count = 0
    async with SQLiteStore(path, create=False) as store:
        async for _row in store.iter_chain_rows():
            count += 1
    return count


async def sha_floor(path: Path) -> int:
    """The floor: the verifier's reading, plus one bare SHA-256 leaf hash per entry."""
    count = 0
    sha256 = hashlib.sha256
    async with SQLiteStore(path, create=False) as store:
        async for row in store.iter_chain_rows():
            sha256(b"\x00" + row.entry).digest()
            count += 1
    return count


async def stdlib_floor(path: Path) -> int:
    """A stricter floor: stdlib sqlite3 (no thread hops), the same hash per entry."""
    count = 0
    sha256 = hashlib.sha256
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for (entry,) in conn.execute(
            "SELECT CAST(entry AS BLOB) FROM auditmw_events ORDER BY log, seq"
        ):
            sha256(b"\x00" + entry).digest()
            count += 1
    finally:
        conn.close()
    return count


def storage_check(entries: int) -> Variant:
    """SQLite's own check of every page, as ``store.verify()`` runs it first."""

    async def run(path: Path) -> int:
        async with SQLiteStore(path, create=False) as store:
            damage = await store.backend.storage_damage()
        if damage:
            raise RuntimeError(f"the store's file is damaged: {damage}")
        return entries  # it reads pages, not entries: nothing to count

    return run


async def chain(path: Path) -> int:
    async with SQLiteStore(path, create=False) as store:
        report = await store.verify()
    if not report.ok:
        raise RuntimeError(f"the store does not verify: {report.summary()}")
    return report.entries


def anchored(verifier: VerifierKey, notes: list[CheckpointInput]) -> Variant:
    async def run(path: Path) -> int:
        async with SQLiteStore(path, create=False) as store:
            report = await check_checkpoints(store, [verifier], notes)
        check_anchored(report, len(notes))
        return report.chain.entries

    return run


def check_anchored(report: CheckpointReport, checkpoints: int) -> None:
    """The run did the whole job: every log anchored to its end, every proof verified."""
    problems = [finding.line() for finding in report.findings]
    if not report.ok or report.checked != checkpoints:
        raise RuntimeError(f"check_checkpoints failed: {report.summary()} {problems}")
    if any(log.not_yet_anchored for log in report.logs.values()):
        raise RuntimeError("a log is not anchored to its end")
    if not report.proofs or not all(proof.verified for proof in report.proofs):
        raise RuntimeError("the consistency proof was not made, or does not verify")


def time_run(function: Variant, path: Path, expected: int) -> Timing:
    with Stopwatch() as watch:
        count = asyncio.run(function(path))
    if count != expected:
        raise RuntimeError(f"{function.__name__} read {count:,} entries, not {expected:,}")
    return watch.timing


def verification(events: int, rounds: int) -> tuple[list[tuple[str, str]], list[Result]]:
    path = ensure_dataset(events)
    key = SigningKey.generate(KEY_NAME)
    notes, entries = sign_dataset(path, key)
    variants: list[tuple[str, Variant]] = [
        ("read (iter_chain_rows)", read_only),
        ("floor: read + SHA-256", sha_floor),
        ("stdlib sqlite3 + SHA-256", stdlib_floor),
        ("storage check (quick_check)", storage_check(entries)),
        ("chain (store.verify)", chain),
        ("chain + Merkle (check_checkpoints)", anchored(key.verifier, notes)),
    ]
    time_run(variants[0][1], path, entries)  # warm-up: the file is then in the OS cache
    samples: dict[str, list[Timing]] = {label: [] for label, _ in variants}
    for round_ in range(rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]  # drift hits all alike
        for label, function in order:
            samples[label].append(time_run(function, path, entries))
        print(f"  verify: round {round_ + 1}/{rounds} done", file=sys.stderr)
    wall = {label: median(t.wall for t in runs) for label, runs in samples.items()}
    cpu = {label: median(t.cpu for t in runs) for label, runs in samples.items()}
    floor = wall["floor: read + SHA-256"]
    print(f"Verification of {entries:,} stored entries (medians of {rounds} rounds):")
    print_table(
        ["variant", "wall", "CPU", "per entry", "entries/s", "floor/variant"],
        [
            [
                label,
                f"{wall[label]:,.2f} s",
                f"{cpu[label]:,.2f} s",
                fmt_us(wall[label], entries),
                fmt_rate(rate(entries, wall[label])),
                f"{floor / wall[label]:.2f}",
            ]
            for label, _ in variants
        ],
    )
    print()
    full, plain = wall["chain + Merkle (check_checkpoints)"], wall["chain (store.verify)"]
    storage = wall["storage check (quick_check)"]
    facts = [
        ("store", f"{path.name}, {entries:,} events, {path.stat().st_size / 1e6:,.0f} MB"),
        ("checkpoints", f"{len(notes)} signed (whole logs, and the first half proven)"),
    ]
    results = [
        Result(
            f"verify {entries:,} entries: chain + Merkle vs SHA-256 floor",
            floor / full,
            "floor/verify",
            detail=f"verify {full:,.2f} s, floor {floor:,.2f} s",
        ),
        Result(
            "verify: Merkle checks on top of the chain",
            plain / full,
            "chain/(chain+Merkle)",
            detail=f"chain {plain:,.2f} s, chain + Merkle {full:,.2f} s",
        ),
        Result(
            "verify: SQLite's quick_check, its share of verify",
            storage / full,
            "quick_check/verify",
            detail=f"quick_check {storage:,.2f} s, verify {full:,.2f} s",
        ),
    ]
    return facts, results


# --- part 2: appends with checkpointing on and off ------------------------------------------


async def _appends(
    path: Path, events: Sequence[NewEvent], checkpointing: Checkpointing | None
) -> Timing:
    async with SQLiteStore(path, checkpointing=checkpointing) as store:
        with Stopwatch() as watch:
            await asyncio.gather(*(store.append(event) for event in events))
            await store.close()  # the last checkpoint is issued on close: count it
    return watch.timing


async def _check_anchored(path: Path, sink: Path, verifier: VerifierKey, count: int) -> None:
    async with SQLiteStore(path, create=False) as store:
        report = await check_checkpoints(store, [verifier], sink_checkpoints(sink))
    if not report.ok or report.chain.entries < count:
        raise RuntimeError(f"checkpointed store: {report.summary()}")
    if any(log.not_yet_anchored for log in report.logs.values()):
        raise RuntimeError("the checkpointed store is not anchored to its last entry")


def append_run(
    directory: Path, events: Sequence[NewEvent], key: SigningKey, every: int | None
) -> Timing:
    """One run on a fresh store; ``every`` None: checkpointing off."""
    run_dir = Path(tempfile.mkdtemp(dir=directory))
    try:
        path, sink = run_dir / "audit.db", run_dir / "sink"
        checkpointing = None
        if every is not None:
            checkpointing = Checkpointing(key, every=every, interval=None, sink=DirectorySink(sink))
        timing = asyncio.run(_appends(path, events, checkpointing))
        if every is not None:
            asyncio.run(_check_anchored(path, sink, key.verifier, len(events)))
        return timing
    finally:
        shutil.rmtree(run_dir)


def appends(count: int, rounds: int, directory: Path) -> tuple[list[tuple[str, str]], list[Result]]:
    events = make_events(count, seed=7)
    key = SigningKey.generate(KEY_NAME)
    variants: list[tuple[str, int | None]] = [
        ("checkpointing off", None),
        ("on, every 1000 (default)", 1000),
        ("on, every 100", 100),
    ]
    samples: dict[str, list[Timing]] = {label: [] for label, _ in variants}
    for round_ in range(rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]
        for label, every in order:
            samples[label].append(append_run(directory, events, key, every))
        print(f"  appends: round {round_ + 1}/{rounds} done", file=sys.stderr)
    rates = {label: rate(count, median(t.wall for t in runs)) for label, runs in samples.items()}
    off = rates["checkpointing off"]
    print(f"Appends: {count:,} concurrent appends to a fresh store, then close (medians):")
    print_table(
        ["variant", "appends/s", "CPU per append", "on/off"],
        [
            [
                label,
                fmt_rate(rates[label]),
                fmt_us(median(t.cpu for t in samples[label]), count),
                f"{rates[label] / off:.2f}",
            ]
            for label, _ in variants
        ],
    )
    print()
    default = rates["on, every 1000 (default)"]
    facts = [("appends", f"{count:,} per run, data dir {directory}")]
    results = [
        Result(
            "appends: checkpointing every 1000 vs off",
            default / off,
            "on/off",
            detail=f"on {fmt_rate(default)}, off {fmt_rate(off)}",
        )
    ]
    return facts, results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="entries to verify")
    parser.add_argument("--appends", type=int, default=10_000, help="appends per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: --events {QUICK['events']:,} --appends {QUICK['appends']:,} "
        f"--rounds {QUICK['rounds']}",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where the append runs write (default: tmp)"
    )
    add_summary_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.appends, args.rounds = QUICK["events"], QUICK["appends"], QUICK["rounds"]
    if args.events < 2 or args.appends < 1 or args.rounds < 1:
        parser.error("need --events >= 2, --appends >= 1 and --rounds >= 1")
    data_dir = args.data_dir or Path(tempfile.gettempdir())
    facts = [
        *machine_description(data_dir, ["auditmw", "aiosqlite", "cryptography"]),
        ("run", f"{args.rounds} alternating rounds, medians"),
    ]
    print_facts("auditmw verify benchmark", facts)
    verify_facts, verify_results = verification(args.events, args.rounds)
    append_facts, append_results = appends(args.appends, args.rounds, data_dir)
    write_summary(
        args.summary,
        "verify",
        facts + verify_facts + append_facts,
        verify_results + append_results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
