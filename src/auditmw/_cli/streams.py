"""``auditmw streams``: each stream of a store, its cursor and lag per log, its last error."""

from __future__ import annotations

import argparse
import asyncio

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._cli.output import print_json
from auditmw._stores.open import open_store
from auditmw._streams.status import StreamStatus, stream_statuses


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument("--name", help="only this stream")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_streams(args.store, args.name, as_json=args.json))


async def _streams(store_url: str, name: str | None, *, as_json: bool) -> int:
    async with open_store(store_url, create=False) as store:
        statuses = await stream_statuses(store, name)
    if as_json:
        print_json({"streams": [status.to_json() for status in statuses]})
    elif not statuses:
        print("no streams" if name is None else f"no stream {name!r}")
    for status in [] if as_json else statuses:
        for line in describe(status):
            print(line)
    return ExitCode.OK


def describe(status: StreamStatus) -> list[str]:
    """Lines for people: the stream, then one per log, then its last error."""
    state = status.state
    settings = state.settings
    where = settings.get("destination", "?")
    held = f"held by {state.lease_owner}" if status.held else "not running"
    lines = [f"{state.name}: to {where} ({settings.get('format', '?')}), {held}"]
    if settings.get("filter"):
        lines.append(f"  filter: {settings['filter']}")
    for lag in status.logs:
        lines.append(
            f"  log {lag.log}: delivered through seq {lag.cursor} of {lag.head}, "
            f"lag {lag.events} events, {lag.seconds(status.checked_at):.1f} s"
        )
    lines.append(f"  last delivery: {state.delivered_at or 'never'}")
    if state.last_error:
        lines.append(f"  last error: {state.last_error}")
    return lines


COMMAND = Command(
    name="streams",
    help="list the streams of a store: cursor and lag per log, last error",
    description="Each stream kept in the store (see `auditmw stream`): its destination "
    "and format, whether a forwarder runs it, per log the last seq delivered and the lag "
    "(events committed but not delivered, and the age of the oldest), and its last error.",
    configure=configure,
    run=run,
)
