"""``auditmw tail``: the newest events for a person at a terminal, one line each, and with
``--follow`` each new one as it is committed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from auditmw._admin.parameters import add_filter_arguments, filter_from_arguments
from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._event import Event
from auditmw._stores.filters import EventFilter
from auditmw._stores.open import open_store
from auditmw._stores.store import AuditStore
from auditmw._streams.follow import AppendWaiter

MAX_LINES = 1000  # the most events shown at start (a page of the store's query)
FOLLOW_BATCH = 1000
# ANSI colours, only when standard output is a terminal.
RESET, DIM, BOLD, GREEN, RED = "\033[0m", "\033[2m", "\033[1m", "\033[32m", "\033[31m"
_CONTROL = {code: "\N{REPLACEMENT CHARACTER}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help=f"show the newest N matching events first (default 10, at most {MAX_LINES})",
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="then print each new event until Ctrl-C"
    )
    add_filter_arguments(parser)  # the filters of `auditmw export`


def run(args: argparse.Namespace) -> int:
    filter = filter_from_arguments(args)
    if not 0 <= args.lines <= MAX_LINES:
        raise ValueError(f"--lines must be between 0 and {MAX_LINES}")
    colour = sys.stdout.isatty()
    return asyncio.run(_tail(args.store, filter, args.lines, args.follow, colour))


def event_line(event: Event, *, colour: bool = False) -> str:
    """One line for people: time, log and seq, outcome, who, action, what, from where.
    Control characters in the values show as U+FFFD, so no value can move the cursor or
    recolour the terminal."""
    who = event.user_email or event.user_id or "-"
    what = event.resource + (f"/{event.resource_id}" if event.resource_id else "")
    fields = [
        event.timestamp,
        f"{event.log}#{event.seq}",
        event.outcome,
        who,
        event.action,
        what,
        event.ip_address or "-",
    ]
    fields = [field.translate(_CONTROL) for field in fields]
    if colour:
        fields[0] = DIM + fields[0] + RESET
        fields[2] = (GREEN if event.outcome == "success" else RED) + fields[2] + RESET
        fields[4] = BOLD + fields[4] + RESET
    return "  ".join(fields)


async def _tail(store_url: str, filter: EventFilter, lines: int, follow: bool, colour: bool) -> int:
    async with open_store(store_url, create=False) as store:
        heads = {log: await store.last_seq(log) for log in await store.logs()}
        if lines:
            page = await store.query(filter, limit=lines)
            for event in reversed(page.events):
                _print(event_line(event, colour=colour))
        if follow:
            await _follow(
                store, filter, heads, lambda event: _print(event_line(event, colour=colour))
            )
    return ExitCode.OK


async def _follow(
    store: AuditStore, filter: EventFilter, seen: dict[str, int], show: Callable[[Event], None]
) -> None:
    """Show each event committed after ``seen`` (per log, the last seq shown), for ever."""
    backend = store.backend
    waiter = AppendWaiter(backend)
    try:
        while True:
            for log in await backend.logs():
                head = await backend.last_seq(log)
                while seen.get(log, 0) < head:
                    events = await backend.events_after(
                        log, seen.get(log, 0), head, FOLLOW_BATCH, filter
                    )
                    for event in events:
                        show(event)
                    full = len(events) == FOLLOW_BATCH
                    seen[log] = events[-1].seq if full else head
            await waiter.wait()
    finally:
        await waiter.close()


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a person (or a pipe to grep) sees each event as it comes


COMMAND = Command(
    name="tail",
    help="show the newest events, one line each; --follow for new ones as they come",
    description="Show the newest events matching the filters (the admin app's, as for "
    "`auditmw export`), oldest of them first, one line each: time, log#seq, outcome, "
    "user, action, resource/id, IP address; in colour on a terminal. With --follow, keep "
    "printing each new matching event as it is committed, until Ctrl-C.",
    configure=configure,
    run=run,
)
