"""The ``auditmw`` command line.

Exit codes: 0 success (log intact), 1 the log is damaged, 2 bad arguments or a store
that cannot be read (a one-line message, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from ._errors import StoreError
from ._open import open_store
from ._progress import Progress
from ._verify import VerifyReport

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auditmw", description="Tamper-evident audit logs for ASGI apps.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    verify = commands.add_parser(
        "verify",
        help="prove a log intact, or name the first damaged entry",
        description="Verify every hash, link and index column of a store.",
    )
    verify.add_argument("store", help="a SQLite file path or sqlite:///path")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.add_argument(
        "--max-findings",
        type=int,
        default=1000,
        metavar="N",
        help="findings to list (all are counted); default 1000",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "verify":
            return asyncio.run(_verify(args))
    except (StoreError, ValueError, OSError) as exc:
        print(f"auditmw {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("auditmw: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


async def _verify(args: argparse.Namespace) -> int:
    if args.max_findings < 0:
        raise ValueError("--max-findings must be zero or more")
    async with open_store(args.store, create=False) as store:
        progress = Progress("verifying", await store.count())
        report = await store.verify(progress)
        progress.done()
    _print_report(report, as_json=args.json)
    return EXIT_OK if report.ok else EXIT_DAMAGED


def _print_report(report: VerifyReport, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    print(report.summary())
    for finding in report.findings:
        print(f"  log {finding.log!r} seq {finding.seq}: {finding.kind}: {finding.message}")
    if report.total_findings > len(report.findings):
        print(f"  ... and {report.total_findings - len(report.findings)} more")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
