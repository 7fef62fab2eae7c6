"""``auditmw prune``: delete every log's entries older than a date, as one recorded
operation, after checking an archive holds exactly them (docs/retention.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._retention.prune import check_before
from auditmw._stores.open import open_store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument(
        "--before",
        required=True,
        metavar="DATE",
        help="prune the entries older than this ISO 8601 date (the start of that day, UTC) "
        "or date-time: each log's longest prefix of entries all before it",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--archive",
        metavar="FILE",
        help="an archive of exactly those entries (auditmw archive with the same --before); "
        "it is verified completely before anything is deleted",
    )
    source.add_argument(
        "--no-archive",
        action="store_true",
        help="discard the entries without an archive (deliberate; recorded as such)",
    )
    parser.add_argument(
        "--actor",
        metavar="ID",
        help="who prunes, recorded as the user id of the audit.pruned event (default: the OS user)",
    )


def run(args: argparse.Namespace) -> int:
    before = check_before(args.before)  # a bad date fails before the store is opened
    return asyncio.run(_prune(args, before))


async def _prune(args: argparse.Namespace, before: str) -> int:
    def progress(step: str) -> None:
        print(f"prune: {step}", file=sys.stderr, flush=True)

    async with open_store(args.store, create=False) as store:
        report = await store.prune(
            before=before,
            archive=args.archive,
            discard=args.no_archive,
            actor=args.actor,
            progress=progress,
        )
    print(report.line())
    for log, cut in sorted(report.cuts.items()):
        print(f"  log {log!r}: starts after seq {cut.last_seq} (head {cut.head})")
    if report.deleted:
        print(f"  {report.deleted} rows deleted")
    return ExitCode.OK


COMMAND = Command(
    name="prune",
    help="delete the entries older than a date, after checking their archive",
    description="Delete every log's prefix of entries older than --before, as one recorded "
    "operation: an audit.pruned event records the cut of every log (its chain head and "
    "Merkle frontier) and the archive's SHA-256. With --archive FILE the archive is "
    "verified first and must hold exactly those entries; --no-archive discards them "
    "deliberately. `auditmw verify STORE` then proves the rest (docs/retention.md).",
    configure=configure,
    run=run,
)
