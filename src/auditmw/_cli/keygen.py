"""``auditmw keygen``: an Ed25519 key pair for signing checkpoints."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from auditmw._cli.command import Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._transparency.notes import (
    generate_key,
    require_cryptography,
    save_signing_key,
    save_verifier_key,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the key's name, e.g. audit.example.com")
    parser.add_argument("--out", required=True, metavar="PREFIX", help="path prefix of the files")


def run(args: argparse.Namespace) -> int:
    require_cryptography("auditmw keygen")
    for path in (f"{args.out}.key", f"{args.out}.pub"):
        if os.path.exists(path):
            raise ValueError(f"{path} exists; refusing to overwrite a key")
    signing, verifier = generate_key(args.name)
    # A new directory for keys is the owner's alone, like the signing key in it.
    Path(args.out).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    save_signing_key(signing, f"{args.out}.key")
    save_verifier_key(verifier, f"{args.out}.pub")
    print(verifier.encode())
    return ExitCode.OK


COMMAND = Command(
    name="keygen",
    help="write an Ed25519 key pair for signing checkpoints",
    description="Write NAME's signing key to PREFIX.key (mode 0600) and its verifier key "
    "to PREFIX.pub (C2SP signed-note formats). Keep the signing key out of the database.",
    configure=configure,
    run=run,
)
