"""``auditmw export``: the events matching filters, as CSV or JSON Lines."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO

from auditmw._admin.export import FORMATS, Format, export_chunks
from auditmw._admin.parameters import add_filter_arguments, filter_from_arguments
from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._cli.progress import Progress
from auditmw._stores.filters import EventFilter
from auditmw._stores.open import open_store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument("--format", required=True, choices=FORMATS, help="csv or jsonl")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")
    add_filter_arguments(parser)  # the admin API's filters, from its parameter table


def run(args: argparse.Namespace) -> int:
    filter = filter_from_arguments(args)  # bad input fails before any file is created
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
)
