"""The signed checkpoints and verifier keys to check a log against, from wherever they
are kept: files an auditor brings, a sink's directory, the store's own table.

Each checkpoint becomes a ``CheckpointInput``: the signed note as bytes and where it came
from. Nothing is trusted here; ``auditmw._transparency.external`` opens and checks them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from auditmw._transparency.notes import MAX_NOTE_BYTES, VerifierKey
from auditmw._transparency.sinks import SUFFIX as SINK_SUFFIX

if TYPE_CHECKING:
    from auditmw._stores.store import AuditStore

# Reading one byte more than the largest valid note is enough to reject a huge (or
# endless) file without reading it all.
MAX_READ = MAX_NOTE_BYTES + 1


@dataclass(frozen=True, slots=True)
class CheckpointInput:
    """A signed checkpoint note to check the log against, and where it came from.

    ``prove``: also make and verify a consistency proof from it to the log's current size
    (for an auditor's own, older checkpoint). ``claimed``: the (log, size, root) a store
    keeps unsigned beside the note, checked against it.
    """

    note: bytes
    source: str
    prove: bool = False
    claimed: tuple[str, int, bytes] | None = None


def read_note_file(path: str | Path, source: str, *, prove: bool = False) -> CheckpointInput:
    """A checkpoint file, read up to just past the largest valid note (a huge or endless
    file is then rejected as MALFORMED without being read). ``OSError`` if unreadable."""
    with open(path, "rb") as file:
        return CheckpointInput(file.read(MAX_READ), source, prove=prove)


def checkpoint_files(paths: Iterable[str | Path]) -> list[CheckpointInput]:
    """An auditor's checkpoint files: each is proven consistent with the log as it is now."""
    return [read_note_file(path, f"file {path}", prove=True) for path in paths]


def sink_checkpoints(directory: str | Path) -> list[CheckpointInput]:
    """Every ``*.checkpoint`` file under a directory sink (``<dir>/<log>/<size>.checkpoint``).

    Only the signed notes count: the file names are unsigned and are not trusted.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"checkpoint sink {directory} is not a directory")
    # Like sinks.read_sink, but each file is read only up to the note size limit.
    return [
        read_note_file(path, f"sink {path.relative_to(root)}")
        for path in sorted(root.rglob(f"*{SINK_SUFFIX}"))
        if path.is_file()
    ]


async def stored_checkpoints(store: AuditStore) -> list[CheckpointInput]:
    """The checkpoints the store keeps in its own table, with their unsigned columns."""
    return [
        CheckpointInput(
            bytes(stored.note),
            f"store, issued {stored.created_at}",
            claimed=(stored.log, stored.size, bytes(stored.root)),
        )
        for stored in await store.checkpoints()
    ]


def load_keys(paths: Iterable[str | Path]) -> list[VerifierKey]:
    """The verifier keys in the given files (one per line; ``#`` comments), each file
    non-empty. Raises ``ValueError`` naming the file for anything else."""
    keys: list[VerifierKey] = []
    for path in paths:
        with open(path, "rb") as file:
            data = file.read(MAX_READ)
        if len(data) == MAX_READ:
            raise ValueError(f"{path}: too large for a verifier key file")
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a verifier key file (not UTF-8 text)") from None
        found = 0
        for line in (line.strip() for line in lines):
            if not line or line.startswith("#"):
                continue
            if line.startswith("PRIVATE+KEY+"):  # never echo a secret back
                raise ValueError(f"{path}: this is a signing key; give its verifier (.pub) key")
            try:
                keys.append(VerifierKey.parse(line))
            except ValueError as exc:
                raise ValueError(f"{path}: not a verifier key: {exc}") from None
            found += 1
        if not found:
            raise ValueError(f"{path}: no verifier key in the file")
    return keys
