"""The ``auditmw`` command line.

    auditmw verify STORE                  prove a store's log intact
    auditmw verify --jsonl FILE           the same for a JSON Lines export
    auditmw verify STORE --public-key KEY [--checkpoint FILE] [--sink DIR]
                                          ... and check the log against signed checkpoints
    auditmw export STORE --format csv|jsonl [filters] [-o FILE]

Exit codes: 0 success (log intact), 1 the log or its store is damaged, 2 bad arguments or
a store that cannot be read, 3 the store is unavailable (its database down, frozen or
locked past the store's time limits: try again later). A one-line message, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import orjson

from auditmw._admin.export import FORMATS, Format, export_chunks
from auditmw._admin.parameters import parse_filter
from auditmw._cli.progress import Progress
from auditmw._errors import StorageDamagedError, StoreError, StoreUnavailableError
from auditmw._event import DEFAULT_LOG
from auditmw._stores.jsonl import JsonlReport, verify_jsonl
from auditmw._stores.open import open_store
from auditmw._stores.query import FILTER_PARAMS, EventFilter, QueryError
from auditmw._stores.verify import GAP, VerifyReport
from auditmw._transparency.proofs import prove_inclusion

if TYPE_CHECKING:
    from auditmw._stores.store import AuditStore
    from auditmw._transparency.external import AnchorReport

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
STORE_HELP = "a SQLite file path, sqlite:///path or postgresql://user@host/db?schema=name"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auditmw", description="Tamper-evident audit logs for ASGI apps.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    verify = commands.add_parser(
        "verify",
        help="prove a log intact, or name the first damaged entry",
        description="Verify every hash, link and index column of a store, and the "
        "database's own storage.",
    )
    verify.add_argument("store", nargs="?", help=STORE_HELP)
    verify.add_argument(
        "--jsonl",
        metavar="FILE",
        help="verify a JSON Lines export (- for stdin) instead of a store",
    )
    verify.add_argument(
        "--complete",
        action="store_true",
        help="with --jsonl: fail (exit 1) unless the file holds the whole log",
    )
    verify.add_argument(
        "--reserialized",
        action="store_true",
        help="with --jsonl: also accept lines another tool rewrote (members reordered or "
        "re-escaped); each entry is written anew as RFC 8785 JSON, its numbers read as "
        "doubles, so a number respelled as the same double is not noticed",
    )
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="FILE",
        help="a verifier key file (auditmw keygen's .pub; repeat for rotated keys): check "
        "the store's signed checkpoints and those given below against the log",
    )
    verify.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a signed checkpoint kept elsewhere (repeatable): the log must extend it; "
        "prints the consistency proof",
    )
    verify.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="DIR",
        help="a checkpoint sink directory: check every *.checkpoint file under it",
    )
    verify.add_argument(
        "--origin-prefix",
        metavar="PREFIX",
        help="accept only checkpoints whose origin is PREFIX/<log> (default: any prefix)",
    )
    verify.add_argument(
        "--max-findings",
        type=int,
        default=1000,
        metavar="N",
        help="findings to list (all are counted); default 1000",
    )
    export = commands.add_parser(
        "export",
        help="write the events matching filters as CSV or JSON Lines",
        description="Export events in chain order (by log, then seq). A JSON Lines export "
        "of the whole log verifies with `auditmw verify --jsonl FILE`. CSV cells that a "
        "spreadsheet would run as a formula get a leading '.",
    )
    export.add_argument("store", help=STORE_HELP)
    export.add_argument("--format", required=True, choices=FORMATS, help="csv or jsonl")
    export.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")
    for param in FILTER_PARAMS:
        export.add_argument(_flag(param), dest=f"filter_{param}", metavar="VALUE")
    export.epilog = (
        "Filters (all must match): --action is exact, or a prefix ending in *; --from "
        "and --to take an ISO 8601 date or date-time (UTC unless a zone is given; a --to "
        "date includes that day); --search is a case-insensitive substring of action, "
        "resource, resource id, user email or user id."
    )
    prove = commands.add_parser(
        "prove",
        help="print the Merkle inclusion proof of one entry (JSON)",
        description="Prove that the entry at SEQ is in the log, against the log's current "
        "Merkle root (RFC 9162). Compare that root with a checkpoint kept elsewhere before "
        "trusting it.",
    )
    prove.add_argument("store", help=STORE_HELP)
    prove.add_argument("--seq", type=int, required=True, help="the entry's seq")
    prove.add_argument("--log", default=DEFAULT_LOG, help="the log's name (default: default)")
    keygen = commands.add_parser(
        "keygen",
        help="write an Ed25519 key pair for signing checkpoints",
        description="Write NAME's signing key to PREFIX.key (mode 0600) and its verifier key "
        "to PREFIX.pub (C2SP signed-note formats). Keep the signing key out of the database.",
    )
    keygen.add_argument("name", help="the key's name, e.g. audit.example.com")
    keygen.add_argument("--out", required=True, metavar="PREFIX", help="path prefix of the files")
    return parser


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
    try:
        if args.command == "verify" and args.jsonl is not None:
            return _verify_jsonl(args)
        if args.command == "verify":
            return asyncio.run(_verify(args))
        if args.command == "export":
            return _export_command(args)
        if args.command == "prove":
            return asyncio.run(_prove(args))
        if args.command == "keygen":
            return _keygen(args)
    except QueryError as exc:
        print(f"auditmw {args.command}: {_flag(exc.param)}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `auditmw export ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_DAMAGED
    except StoreUnavailableError as exc:
        print(f"auditmw {args.command}: {exc} (try again later)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (StoreError, ValueError, OSError) as exc:
        print(f"auditmw {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("auditmw: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


async def _prove(args: argparse.Namespace) -> int:
    async with open_store(args.store, create=False) as store:
        proof = await prove_inclusion(store, args.log, args.seq)
    if proof is None:
        raise ValueError(f"log {args.log!r} has no entry with seq {args.seq}")
    if not proof.verify():  # the store's own hashes disagree with each other
        raise StoreError("the proof does not verify; run `auditmw verify` on this store")
    sys.stdout.write(orjson.dumps(proof.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    try:
        from auditmw._transparency.notes import generate_key, save_signing_key, save_verifier_key
    except ImportError:  # cryptography is the optional "checkpoints" extra
        raise ValueError("keygen needs cryptography: pip install 'auditmw[checkpoints]'") from None
    for path in (f"{args.out}.key", f"{args.out}.pub"):
        if os.path.exists(path):
            raise ValueError(f"{path} exists; refusing to overwrite a key")
    signing, verifier = generate_key(args.name)
    # A new directory for keys is the owner's alone, like the signing key in it.
    Path(args.out).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    save_signing_key(signing, f"{args.out}.key")
    save_verifier_key(verifier, f"{args.out}.pub")
    print(verifier.encode())
    return EXIT_OK


async def _verify(args: argparse.Namespace) -> int:
    if args.max_findings < 0:
        raise ValueError("--max-findings must be zero or more")
    if args.store is None:
        raise ValueError("give a STORE, or --jsonl FILE")
    for given, flag in ((args.complete, "--complete"), (args.reserialized, "--reserialized")):
        if given:
            raise ValueError(f"{flag} goes with --jsonl")
    if not args.public_key:
        for given, flag in ((args.checkpoint, "--checkpoint"), (args.sink, "--sink")):
            if given:
                raise ValueError(f"{flag} needs --public-key (the checkpoints' verifier key)")
        if args.origin_prefix is not None:
            raise ValueError("--origin-prefix needs --public-key")
    try:
        from auditmw._transparency.external import (
            check_anchors,
            checkpoint_files,
            load_keys,
            sink_checkpoints,
        )
    except ImportError:  # cryptography is the optional "checkpoints" extra
        if args.public_key:
            raise ValueError(
                "checking checkpoints needs cryptography: pip install 'auditmw[checkpoints]'"
            ) from None
        return await _verify_chain(args)
    # Every file is read before the store is opened: a bad argument costs no pass over the log.
    keys = load_keys(args.public_key)
    notes = checkpoint_files(args.checkpoint)
    for directory in args.sink:
        notes.extend(sink_checkpoints(directory))
    async with open_store(args.store, create=False) as store:
        progress = Progress("verifying", await _entries(store))
        report = await check_anchors(
            store,
            keys,
            notes,
            origin_prefix=args.origin_prefix,
            progress=progress,
            max_findings=args.max_findings,
        )
        progress.done()
    _print_anchored(report, as_json=args.json)
    return EXIT_OK if report.ok else EXIT_DAMAGED


async def _verify_chain(args: argparse.Namespace) -> int:
    """The chain alone (when the checkpoints extra is not installed)."""
    async with open_store(args.store, create=False) as store:
        progress = Progress("verifying", await _entries(store))
        report = await store.verify(progress, max_findings=args.max_findings)
        progress.done()
    _print_report(report, as_json=args.json)
    return EXIT_OK if report.ok else EXIT_DAMAGED


async def _entries(store: AuditStore) -> int | None:
    """How many entries the progress bar expects; None (unknown) when counting them
    fails on damaged storage, which verify then reports."""
    try:
        return await store.count()
    except StorageDamagedError:
        return None


def _print_report(report: VerifyReport, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    print(report.summary())
    _print_chain_findings(report)


def _print_chain_findings(report: VerifyReport) -> None:
    for finding in report.findings:
        print(f"  {finding.line()}")
    if report.total_findings > len(report.findings):
        print(f"  ... and {report.total_findings - len(report.findings)} more")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _print_anchored(report: AnchorReport, *, as_json: bool) -> None:
    """The chain report, then what the signed checkpoints say (_transparency.external)."""
    if as_json:
        document = {
            **report.chain.to_dict(),
            "ok": report.ok,
            "chain_ok": report.chain.ok,
            "checkpoints": report.to_dict(),
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    print(report.summary())
    _print_chain_findings(report.chain)
    for finding in report.findings:
        print(f"  {finding.line()}")
    if report.unchecked:
        print(
            f"checkpoints: {report.unchecked} signed checkpoint(s) in the store, "
            "not checked (give --public-key)"
        )
    if not report.keys:
        return
    print(f"checkpoints: {report.checked} checked with {report.keys} key(s)")
    for name, log in report.logs.items():
        line = f"  log {name!r}: {log.entries} entries, {log.anchored} anchored"
        if log.anchored_by:
            line += f" (by the checkpoint of size {log.anchored}: {', '.join(log.anchored_by)})"
        print(f"{line}, {log.not_yet_anchored} not yet anchored")
    for proof in report.proofs:
        verdict = "extends" if proof.verified else "does NOT extend"
        result = "verified" if proof.verified else "FAILS"
        print(
            f"  log {proof.log!r} {verdict} {proof.source} (size {proof.old_size}): "
            f"consistency proof to size {proof.new_size} ({len(proof.proof)} hashes) {result}"
        )


def _verify_jsonl(args: argparse.Namespace) -> int:
    if args.store is not None:
        raise ValueError("give a STORE or --jsonl FILE, not both")
    if args.public_key or args.checkpoint or args.sink or args.origin_prefix is not None:
        raise ValueError("checkpoints are checked against a STORE, not --jsonl")
    if args.max_findings < 0:
        raise ValueError("--max-findings must be zero or more")
    progress = Progress("verifying", None)
    verify = partial(
        verify_jsonl,
        reserialized=args.reserialized,
        max_findings=args.max_findings,
        progress=progress,
    )
    if args.jsonl == "-":
        report = verify(sys.stdin.buffer)
    else:
        with open(args.jsonl, "rb") as lines:
            report = verify(lines)
    progress.done()
    incomplete = args.complete and report.subset
    _print_jsonl_report(report, as_json=args.json, incomplete=incomplete)
    return EXIT_DAMAGED if report.damaged or incomplete else EXIT_OK


def _print_jsonl_report(report: JsonlReport, *, as_json: bool, incomplete: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    print(report.summary())
    for problem in report.problems:
        print(f"  {problem}")
    if report.total_problems > len(report.problems):
        print(f"  ... and {report.total_problems - len(report.problems)} more unreadable lines")
    if report.damaged:  # gaps are expected in a subset: list only the damage
        for finding in report.findings:
            if finding.kind != GAP:
                print(f"  {finding.line()}")
    elif incomplete:  # --complete: the gaps are what is wrong
        for missing in report.missing_ranges:
            print(f"  {missing}")
        if report.gaps > len(report.missing_ranges):
            print(f"  ... and {report.gaps - len(report.missing_ranges)} more gaps")


def _export_command(args: argparse.Namespace) -> int:
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
        await _write(export_chunks(store.iter_events(filter), format, progress), output)
        progress.done()
    return EXIT_OK


async def _write(chunks: AsyncIterator[bytes], output: BinaryIO) -> None:
    async for chunk in chunks:
        output.write(chunk)
    output.flush()
