"""``auditmw archive``: every log's entries older than a date, as a verifiable archive."""

from __future__ import annotations

import argparse
import asyncio

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._retention.archive import cut_time
from auditmw._stores.open import open_store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument(
        "--before",
        required=True,
        metavar="DATE",
        help="archive the entries older than this ISO 8601 date (the start of that day, "
        "UTC) or date-time: each log's longest prefix of entries all before it",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the archive to write; it must not exist",
    )


def run(args: argparse.Namespace) -> int:
    before = cut_time(args.before)  # a bad date fails before the store is opened
    return asyncio.run(_archive(args.store, before, args.output))


async def _archive(store_path: str, before: str, output: str) -> int:
    async with open_store(store_path, create=False) as store:
        header = await store.archive(before=before, output=output)
    logs = ", ".join(
        f"{name!r} seqs 1..{cut.last_seq}" for name, cut in sorted(header.logs.items())
    )
    print(
        f"archived {header.entries} entries before {header.before} to {output}"
        f" ({logs or 'no log has entries that old'})"
    )
    return ExitCode.OK


COMMAND = Command(
    name="archive",
    help="write the entries older than a date as a self-verifying archive",
    description="Write every log's prefix of entries older than --before to a new JSON Lines "
    "archive: a header (the cut's chain head, Merkle frontier and, when the store has "
    "checkpoints, the signed checkpoint covering it), then the entries as `auditmw export "
    "--format jsonl` writes them. `auditmw verify --jsonl FILE` verifies it alone "
    "(docs/retention.md). Nothing is removed from the store.",
    configure=configure,
    run=run,
)
