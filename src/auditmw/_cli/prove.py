"""``auditmw prove``: the Merkle inclusion proof of one entry, as JSON."""

from __future__ import annotations

import argparse
import asyncio

from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._cli.output import print_json
from auditmw._errors import StoreError
from auditmw._event import DEFAULT_LOG
from auditmw._stores.open import open_store
from auditmw._transparency.proofs import prove_inclusion


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument("--seq", type=int, required=True, help="the entry's seq")
    parser.add_argument("--log", default=DEFAULT_LOG, help="the log's name (default: default)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_prove(args))


async def _prove(args: argparse.Namespace) -> int:
    async with open_store(args.store, create=False) as store:
        proof = await prove_inclusion(store, args.log, args.seq)
    if proof is None:
        raise ValueError(f"log {args.log!r} has no entry with seq {args.seq}")
    if not proof.verify():  # the store's own hashes disagree with each other
        raise StoreError("the proof does not verify; run `auditmw verify` on this store")
    print_json(proof.to_dict())
    return ExitCode.OK


COMMAND = Command(
    name="prove",
    help="print the Merkle inclusion proof of one entry (JSON)",
    description="Prove that the entry at SEQ is in the log, against the log's current "
    "Merkle root (RFC 9162). Compare that root with a checkpoint kept elsewhere before "
    "trusting it.",
    configure=configure,
    run=run,
)
