"""The ``auditmw`` command line.

    auditmw verify STORE                  prove a store's log intact
    auditmw verify STORE --public-key KEY [--checkpoint FILE] [--sink DIR]
                                          ... and check the log against signed checkpoints
    auditmw verify --jsonl FILE           the same for a JSON Lines export or an archive
    auditmw export STORE --format csv|jsonl [filters] [-o FILE]
    auditmw archive STORE --before DATE -o FILE
                                          the entries older than DATE, as an archive
    auditmw prune STORE --before DATE (--archive FILE | --no-archive) [--actor ID]
                                          delete them, recorded, after checking FILE
    auditmw hold STORE [--place NAME --reason TEXT | --release NAME]
                                          legal holds: prune refuses while one is active
    auditmw erase STORE --user-id ID [--reason TEXT]
                                          remove a person's personal data
    auditmw prove STORE --seq N           the Merkle inclusion proof of one entry
    auditmw keygen NAME --out PREFIX      a key pair for signing checkpoints
    auditmw stream STORE --to URL [--once] [--from SEQ|DATE] [filters]
                                          deliver the events to a destination
    auditmw streams STORE [--json]        each stream's cursor, lag and last error
    auditmw tail STORE [filters] [--follow]
                                          the newest events, one line each

One module per command (each a ``Command``); ``main`` parses the arguments, runs the
command, and turns every failure into one line on standard error and an ``ExitCode``
(docs/cli.md), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from auditmw._admin.parameters import flag
from auditmw._cli import (
    archive,
    erase,
    export,
    hold,
    keygen,
    prove,
    prune,
    stream,
    streams,
    tail,
    verify,
)
from auditmw._cli.command import Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._errors import PruneRefusedError, StoreError, StoreUnavailableError
from auditmw._stores.filters import QueryError
from auditmw._transparency.notes import MissingExtraError

__all__ = ["COMMANDS", "ExitCode", "build_parser", "main"]

COMMANDS: tuple[Command, ...] = (
    verify.COMMAND,
    export.COMMAND,
    archive.COMMAND,
    prune.COMMAND,
    hold.COMMAND,
    erase.COMMAND,
    prove.COMMAND,
    keygen.COMMAND,
    stream.COMMAND,
    streams.COMMAND,
    tail.COMMAND,
)


class UsageParser(argparse.ArgumentParser):
    """Reports bad arguments with ``ExitCode.USAGE``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    codes = ", ".join(f"{code.value} {code.name.lower()}" for code in ExitCode)
    parser = UsageParser(
        prog="auditmw",
        description="Tamper-evident audit logs for ASGI apps.",
        epilog=f"Exit codes: {codes} (docs/cli.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            usage=command.usage,
            epilog=command.epilog,
        )
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
    name = f"auditmw {args.command}"
    try:
        return int(args.run(args))
    except QueryError as exc:
        print(f"{name}: {flag(exc.param)}: {exc.message}", file=sys.stderr)
        return ExitCode.USAGE
    except BrokenPipeError:  # e.g. `auditmw export ... | head`: stop quietly
        # Python flushes stdout again at exit: let that go nowhere instead of failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE
    except MissingExtraError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return ExitCode.MISSING_EXTRA
    except PruneRefusedError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return ExitCode.DAMAGED if exc.damaged else ExitCode.USAGE
    except StoreUnavailableError as exc:
        print(f"{name}: {exc} (try again later)", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except (StoreError, ValueError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("auditmw: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
