"""``auditmw hold``: place, release and list legal holds; prune refuses while one is
active (docs/retention.md)."""

from __future__ import annotations

import argparse
import asyncio

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._stores.open import open_store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--place", metavar="NAME", help="place the legal hold NAME")
    what.add_argument("--release", metavar="NAME", help="release the legal hold NAME")
    parser.add_argument("--reason", metavar="TEXT", help="why (required with --place)")
    parser.add_argument(
        "--actor", metavar="ID", help="who, recorded as the event's user id (default: OS user)"
    )


def run(args: argparse.Namespace) -> int:
    if args.place is not None and not args.reason:
        raise ValueError("--place needs --reason")
    if args.place is None and args.reason is not None:
        raise ValueError("--reason goes with --place")
    return asyncio.run(_hold(args))


async def _hold(args: argparse.Namespace) -> int:
    async with open_store(args.store, create=False) as store:
        if args.place is not None:
            hold = await store.place_hold(args.place, args.reason, actor=args.actor)
            print(f"placed legal hold {hold.name!r}: pruning refuses until it is released")
        elif args.release is not None:
            await store.release_hold(args.release, actor=args.actor)
            print(f"released legal hold {args.release!r}")
        else:
            holds = await store.holds()
            for hold in holds:
                by = f" by {hold.placed_by}" if hold.placed_by else ""
                print(f"{hold.name}\tplaced {hold.placed_at}{by}\t{hold.reason}")
            if not holds:
                print("no legal hold is active")
    return ExitCode.OK


COMMAND = Command(
    name="hold",
    help="place, release or list legal holds (prune refuses while one is active)",
    description="Place (--place NAME --reason TEXT) or release (--release NAME) a legal "
    "hold, or list the active ones. Holds are appended events (audit.hold_placed, "
    "audit.hold_released): their history is in the hash chain (docs/retention.md).",
    configure=configure,
    run=run,
)
