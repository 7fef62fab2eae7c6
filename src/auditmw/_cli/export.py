"""``auditmw export``: the events matching filters, as CSV or JSON Lines."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO

from auditmw._admin.export import FORMATS, Format, export_chunks
from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._cli.progress import Progress
from auditmw._stores.open import open_store
from auditmw._stores.query import FILTER_PARAMS, EventFilter, parse_filter


def flag(param: str) -> str:
    """The command-line flag of a filter parameter: ``user_id`` is ``--user-id``."""
    return "--" + param.replace("_", "-")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument("--format", required=True, choices=FORMATS, help="csv or jsonl")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")
    for param in FILTER_PARAMS:
        parser.add_argument(flag(param), dest=f"filter_{param}", metavar="VALUE")


def run(args: argparse.Namespace) -> int:
    params = {param: getattr(args, f"filter_{param}") for param in FILTER_PARAMS}
    filter = parse_filter(params)  # bad input fails before any file is created
    if args.output is None:
        return asyncio.run(_export(args.store, filter, args.format, sys.stdout.buffer))
    try:
        with open(args.output, "wb") as output:
            return asyncio.run(_export(args.store, filter, args.format, output))
    except BaseException:
        os.unlink(args.output)  # no half-written export left behind
        raise


async def _export(store_path: str, filter: EventFilter, format: Format, output: BinaryIO) -> int:
    async with open_store(store_path, create=False) as store:
        total = await store.count() if not filter.to_params() else None
        progress = Progress("exporting", total)
        events = store.iter_events(filter)
        chunks = export_chunks(events, format, progress)
        try:
            await _write(chunks, output)
        finally:
            # Stopped early (e.g. a broken pipe): the readers end while the store is open,
            # not later, when asyncio finalizes them after it closed.
            await _close(chunks)
            await _close(events)
        progress.done()
    return ExitCode.OK


async def _write(chunks: AsyncIterator[bytes], output: BinaryIO) -> None:
    async for chunk in chunks:
        output.write(chunk)
    output.flush()


async def _close(iterator: AsyncIterator[object]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


COMMAND = Command(
    name="export",
    help="write the events matching filters as CSV or JSON Lines",
    description="Export events in chain order (by log, then seq). A JSON Lines export of "
    "the whole log verifies with `auditmw verify --jsonl FILE`. CSV cells that a "
    "spreadsheet would run as a formula get a leading '.",
    configure=configure,
    run=run,
    epilog="Filters (all must match): --action is exact, or a prefix ending in *; --from "
    "and --to take an ISO 8601 date or date-time (UTC unless a zone is given; a --to date "
    "includes that day); --search is a case-insensitive substring of action, resource, "
    "resource id, user email or user id.",
)
