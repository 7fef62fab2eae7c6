"""``auditmw erase``: remove a person's personal data from a store (GDPR Art. 17)."""

from __future__ import annotations

import argparse
import asyncio
import json

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._errors import ValidationError
from auditmw._stores.open import open_store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument(
        "--user-id",
        required=True,
        metavar="ID",
        help="the person: their personal data is removed from every entry they made and "
        "from the personal details of every entry about them (resource user, this id)",
    )
    parser.add_argument(
        "--reason",
        metavar="TEXT",
        help="why (e.g. the request's reference); recorded with the erasure. It must not "
        "hold personal data itself",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    if not args.user_id.strip():  # before the store is opened
        raise ValidationError("--user-id", "must not be empty")
    return asyncio.run(_erase(args.store, args.user_id, args.reason, args.json))


async def _erase(store_path: str, user_id: str, reason: str | None, as_json: bool) -> int:
    async with open_store(store_path, create=False) as store:
        report = await store.erase(user_id=user_id, reason=reason)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.summary())
        for note in report.notes:
            print(f"note: {note}")
    return ExitCode.OK


COMMAND = Command(
    name="erase",
    help="erase a person's personal data; entries and proofs stay intact",
    description="Remove the personal data of the person --user-id (user e-mail, IP address, "
    "user agent, and details declared personal) from every entry of format 2 they made, "
    "and the personal details from every entry about them (resource user). The hashed "
    "entries keep salted commitments to those values, so the chain, the Merkle tree and "
    "every signed checkpoint still verify. The erasure is recorded as an audit.erased "
    "entry. Entries of format 1 (written before format 2) cannot be erased, only pruned: "
    "they are counted (docs/privacy.md).",
    configure=configure,
    run=run,
)
