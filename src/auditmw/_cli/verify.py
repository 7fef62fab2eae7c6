"""``auditmw verify``: prove a log intact, or name the first damaged entry.

Two modes, told apart by ``--jsonl``:

- a **store** (``verify STORE``): every hash, link and index column, and the database's
  own storage; with ``--public-key`` also the signed checkpoints (the store's own,
  ``--checkpoint`` files, ``--sink`` directories), in the same single pass;
- a **JSON Lines export** (``verify --jsonl FILE``), offline; an **archive** (``auditmw
  archive``) is told by its header line and verified alone, its linked checkpoints'
  signatures too with ``--public-key``.

Each mode takes only its own options; any other is a usage error naming the mode it goes
with.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import sys
import zlib
from typing import BinaryIO

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.output import print_report
from auditmw._cli.progress import Progress
from auditmw._errors import StorageDamagedError
from auditmw._retention.archive_check import verify_archive, verify_archive_file
from auditmw._retention.archive_format import parse_header
from auditmw._retention.archive_link import link_archives, pruned_leaves
from auditmw._retention.cuts import PRUNED_ACTION
from auditmw._stores.filters import EventFilter
from auditmw._stores.jsonl import JsonlReport, verify_jsonl
from auditmw._stores.open import open_store
from auditmw._stores.report import Report
from auditmw._stores.store import AuditStore
from auditmw._transparency.external import check_checkpoints
from auditmw._transparency.inputs import checkpoint_files, load_keys, sink_checkpoints
from auditmw._transparency.notes import VerifierKey, require_cryptography

USAGE = """
  auditmw verify STORE [--json] [--max-findings N]
  auditmw verify STORE --public-key KEY [--checkpoint FILE] [--sink DIR]
                       [--origin-prefix PREFIX] [--json] [--max-findings N]
  auditmw verify STORE --archive FILE [--archive FILE ...] [--json]
  auditmw verify --jsonl FILE [--complete] [--reserialized] [--json] [--max-findings N]
  auditmw verify --jsonl ARCHIVE [--public-key KEY] [--json] [--max-findings N]"""

# The options of each mode (by their argparse dest), to name the mode an option goes with.
_JSONL_ONLY = {"complete": "--complete", "reserialized": "--reserialized"}
_CHECKPOINT_OPTIONS = {"checkpoint": "--checkpoint", "sink": "--sink"}


def configure(parser: argparse.ArgumentParser) -> None:
    store = parser.add_argument_group("a store")
    store.add_argument("store", nargs="?", help=STORE_HELP)
    checkpoints = parser.add_argument_group(
        "signed checkpoints (with a STORE; docs/checkpoints.md)"
    )
    checkpoints.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="FILE",
        help="a verifier key file (auditmw keygen's .pub; repeat for rotated keys): check "
        "the store's signed checkpoints and those given below against the log; with "
        "--jsonl, the signature of an archive's checkpoints",
    )
    checkpoints.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a signed checkpoint kept elsewhere (repeatable): the log must extend it; "
        "prints the consistency proof",
    )
    checkpoints.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="DIR",
        help="a checkpoint sink directory: check every *.checkpoint file under it",
    )
    checkpoints.add_argument(
        "--origin-prefix",
        metavar="PREFIX",
        help="accept only checkpoints whose origin is PREFIX/<log> (default: any prefix)",
    )
    store.add_argument(
        "--archive",
        action="append",
        default=[],
        metavar="FILE",
        help="an archive of entries the store pruned (repeatable): verify it alone, then "
        "check it ends at a cut the store recorded and is the file its prune named",
    )
    export = parser.add_argument_group("a JSON Lines export, instead of a store")
    export.add_argument(
        "--jsonl",
        metavar="FILE",
        help="verify a JSON Lines export or an archive (- for stdin) instead of a store",
    )
    export.add_argument(
        "--complete",
        action="store_true",
        help="with --jsonl: fail (exit 1) unless the file holds the whole log",
    )
    export.add_argument(
        "--reserialized",
        action="store_true",
        help="with --jsonl: also accept lines another tool rewrote (members reordered or "
        "re-escaped); each entry is written anew as RFC 8785 JSON, its numbers read as "
        "doubles, so a number respelled as the same double is not noticed",
    )
    report = parser.add_argument_group("the report")
    report.add_argument("--json", action="store_true", help="print the full report as JSON")
    report.add_argument(
        "--max-findings",
        type=int,
        default=1000,
        metavar="N",
        help="findings to list (all are counted); default 1000",
    )


def run(args: argparse.Namespace) -> int:
    if args.jsonl is not None:
        _check_export_mode(args)
        return _verify_export(args)
    _check_store_mode(args)
    return asyncio.run(_verify_store(args))


def _check_store_mode(args: argparse.Namespace) -> None:
    if args.max_findings < 0:
        raise ValueError("--max-findings must be zero or more")
    if args.store is None:
        raise ValueError("give a STORE, or --jsonl FILE")
    for dest, flag in _JSONL_ONLY.items():
        if getattr(args, dest):
            raise ValueError(f"{flag} goes with --jsonl")
    if not args.public_key:
        for dest, flag in _CHECKPOINT_OPTIONS.items():
            if getattr(args, dest):
                raise ValueError(f"{flag} needs --public-key (the checkpoints' verifier key)")
        if args.origin_prefix is not None:
            raise ValueError("--origin-prefix needs --public-key")


def _check_export_mode(args: argparse.Namespace) -> None:
    if args.store is not None:
        raise ValueError("give a STORE or --jsonl FILE, not both")
    if args.checkpoint or args.sink or args.origin_prefix is not None:
        raise ValueError("checkpoints are checked against a STORE, not --jsonl")
    if args.archive:
        raise ValueError("--archive goes with a STORE (--jsonl FILE verifies one archive alone)")
    if args.max_findings < 0:
        raise ValueError("--max-findings must be zero or more")


async def _verify_store(args: argparse.Namespace) -> int:
    if args.public_key:  # checking signatures needs the extra: say so before any work
        require_cryptography("checking signed checkpoints")
    # Every file is read before the store is opened: a bad argument costs no pass over the log.
    keys = load_keys(args.public_key)
    notes = checkpoint_files(args.checkpoint)
    for directory in args.sink:
        notes.extend(sink_checkpoints(directory))
    archives = [verify_archive_file(path, keys) for path in args.archive]
    async with open_store(args.store, create=False) as store:
        progress = Progress("verifying", await _entries(store))
        report: Report = await check_checkpoints(
            store,
            keys,
            notes,
            origin_prefix=args.origin_prefix,
            progress=progress,
            max_findings=args.max_findings,
            pruned_leaves=pruned_leaves(archives) if archives and keys else None,
        )
        progress.done()
        if archives:
            report = link_archives(
                report, archives, await store.cut_records(), await _recorded_sha256(store)
            )
    return print_report(report, as_json=args.json)


async def _recorded_sha256(store: AuditStore) -> dict[str, str | None]:
    """The archive each ``audit.pruned`` entry still held names, by the entry's id."""
    named: dict[str, str | None] = {}
    async for event in store.iter_events(EventFilter(action=PRUNED_ACTION)):
        details = event.details if isinstance(event.details, dict) else {}
        sha256 = details.get("archive_sha256")
        named[event.id] = sha256 if isinstance(sha256, str) else None
    return named


async def _entries(store: AuditStore) -> int | None:
    """How many entries the progress bar expects; None (unknown) when counting them
    fails on damaged storage, which verify then reports."""
    try:
        return await store.count()
    except StorageDamagedError:
        return None


GZIP_MAGIC = b"\x1f\x8b"


def _verify_export(args: argparse.Namespace) -> int:
    if args.public_key:
        require_cryptography("checking signed checkpoints")
    keys = load_keys(args.public_key)
    if args.jsonl == "-":
        return _verify_lines(sys.stdin.buffer, args, keys)
    with open(args.jsonl, "rb") as raw:
        if raw.peek(2)[:2] != GZIP_MAGIC:
            return _verify_lines(raw, args, keys)
        # A gzip-compressed file (a stream's file segment): read it decompressed.
        try:
            with gzip.open(raw, "rb") as lines:
                return _verify_lines(lines, args, keys)  # type: ignore[arg-type]
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{args.jsonl}: not a whole gzip file ({exc})") from exc


def _verify_lines(lines: BinaryIO, args: argparse.Namespace, keys: list[VerifierKey]) -> int:
    """An archive when the first line is its header, else a plain export."""
    first = lines.readline()
    progress = Progress("verifying", None)
    report: Report
    try:
        header = parse_header(first)
    except ValueError as exc:  # a header, but a broken one: damage, like a broken entry
        report = JsonlReport(problems=[f"line 1: {exc}"], total_problems=1)
    else:
        if header is not None:
            report = verify_archive(
                header,
                lines,
                keys=keys,
                reserialized=args.reserialized,
                max_findings=args.max_findings,
                progress=progress,
            )
        elif keys:
            raise ValueError("--public-key with --jsonl checks an archive; this is an export")
        else:
            report = verify_jsonl(
                itertools.chain([first], lines),
                reserialized=args.reserialized,
                complete=args.complete,
                max_findings=args.max_findings,
                progress=progress,
            )
    progress.done()
    return print_report(report, as_json=args.json)


COMMAND = Command(
    name="verify",
    help="prove a log intact, or name the first damaged entry",
    description="Verify every hash, link and index column of a store, and the database's "
    "own storage; with --public-key, also the log against signed checkpoints. Or verify a "
    "JSON Lines export or an archive (--jsonl) offline.",
    configure=configure,
    run=run,
    usage=USAGE,
)
