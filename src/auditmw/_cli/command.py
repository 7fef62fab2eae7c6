"""What every ``auditmw`` command module hands to the parser (``auditmw._cli``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

STORE_HELP = "a SQLite file path, sqlite:///path or postgresql://user@host/db?schema=name"


@dataclass(frozen=True, slots=True)
class Command:
    """A sub-command: its name and help, how it adds its arguments, and how it runs
    (returning an ``ExitCode``; failures raise, and ``main`` maps them to exit codes)."""

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    usage: str | None = None
    epilog: str | None = None
