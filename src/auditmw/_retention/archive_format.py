"""The header of an archive: the first line of the file (docs/format.md, "Archives").

An archive is JSON Lines: this header, then each archived entry exactly as
``auditmw export --format jsonl`` writes it. The header says, for every log, which run of
entries the file holds and what links them to the rest of the log: the chain head at the
cut, the RFC 6962 frontier of the archived leaves and, when the store has checkpoints, a
signed checkpoint at or after the cut with the consistency proof from the cut's tree to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from auditmw._stores.filters import TIMESTAMP
from auditmw._transparency.merkle import Frontier

ARCHIVE_VERSION = 1
ARCHIVE_MEMBER = "auditmw_archive"  # the member that tells an archive from a plain export
_HEX_HASH_LENGTH = 64


@dataclass(frozen=True, slots=True)
class LinkedCheckpoint:
    """A signed checkpoint of a log at or after the cut, and the consistency proof from
    the cut's tree (``first_seq..last_seq``) to the checkpoint's tree."""

    note: str  # the C2SP signed note, exactly as issued
    consistency_proof: tuple[str, ...]  # lowercase hex, RFC 9162 §2.1.4 order

    def to_dict(self) -> dict[str, Any]:
        return {"note": self.note, "consistency_proof": list(self.consistency_proof)}


@dataclass(frozen=True, slots=True)
class LogCut:
    """What an archive holds of one log: seqs ``first_seq`` to ``last_seq``, the hash of
    the last (``head``), the frontier of their Merkle leaves and, if any, the checkpoint
    that links them to the signed log."""

    first_seq: int
    last_seq: int
    head: str
    frontier: Frontier
    checkpoint: LinkedCheckpoint | None = None
    # When the log was pruned before (first_seq > 1): the cut the archive goes on from,
    # the hash of entry first_seq - 1 and the frontier of the leaves before first_seq.
    after: tuple[str, Frontier] | None = None

    @property
    def entries(self) -> int:
        return self.last_seq - self.first_seq + 1

    def to_dict(self) -> dict[str, Any]:
        data = {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head": self.head,
            "frontier": self.frontier.to_dict(),
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
        }
        if self.after is not None:
            head, frontier = self.after
            data["after"] = {"head": head, "frontier": frontier.to_dict()}
        return data


@dataclass(frozen=True, slots=True)
class ArchiveHeader:
    """The first line of an archive: the cut (``before``, exclusive), when the archive
    was written, and a ``LogCut`` per log with archived entries (by log name)."""

    before: str
    created_at: str
    logs: dict[str, LogCut] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        """How many entries the archive holds, over all logs."""
        return sum(cut.entries for cut in self.logs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            ARCHIVE_MEMBER: ARCHIVE_VERSION,
            "before": self.before,
            "created_at": self.created_at,
            "logs": {name: cut.to_dict() for name, cut in sorted(self.logs.items())},
        }

    def line(self) -> bytes:
        """The header as the archive's first line, with its ``\\n``."""
        return orjson.dumps(self.to_dict()) + b"\n"

    @classmethod
    def from_dict(cls, data: object) -> ArchiveHeader:
        """The header of a parsed first line; ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict) or ARCHIVE_MEMBER not in data:
            raise ValueError(f"not an archive header (no {ARCHIVE_MEMBER!r} member)")
        if data[ARCHIVE_MEMBER] != ARCHIVE_VERSION or type(data[ARCHIVE_MEMBER]) is not int:
            raise ValueError(
                f"archive format {data[ARCHIVE_MEMBER]!r} is not supported "
                f"(this auditmw reads version {ARCHIVE_VERSION})"
            )
        before = _timestamp(data, "before")
        created_at = _timestamp(data, "created_at")
        logs = data.get("logs")
        if not isinstance(logs, dict):
            raise ValueError("the header's 'logs' is not an object")
        return cls(before, created_at, {name: _log_cut(name, cut) for name, cut in logs.items()})


def parse_header(line: bytes) -> ArchiveHeader | None:
    """The archive header on ``line``, None when the line is not one (a plain export's
    first entry); ``ValueError`` when it claims to be a header but is not a valid one."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # not JSON: the export verifier names the line
    if not isinstance(data, dict) or ARCHIVE_MEMBER not in data:
        return None
    return ArchiveHeader.from_dict(data)


def _timestamp(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not TIMESTAMP.match(value):
        raise ValueError(f"the header's {name!r} is not a log timestamp")
    return value


def _log_cut(name: str, data: object) -> LogCut:
    where = f"the header of log {name!r}"
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    first, last, head = data.get("first_seq"), data.get("last_seq"), data.get("head")
    if type(first) is not int or type(last) is not int or not 1 <= first <= last:
        raise ValueError(f"{where}: first_seq and last_seq must be seqs, first <= last")
    if not isinstance(head, str) or len(head) != _HEX_HASH_LENGTH:
        raise ValueError(f"{where}: head is not a hash")
    frontier = Frontier.from_dict(data.get("frontier") or {})
    after = _after(where, first, data.get("after"))
    return LogCut(first, last, head, frontier, _checkpoint(where, data.get("checkpoint")), after)


def _after(where: str, first: int, data: object) -> tuple[str, Frontier] | None:
    """The cut an archive of a pruned log goes on from (required when first_seq > 1)."""
    if first == 1:
        if data is not None:
            raise ValueError(f"{where}: an archive from seq 1 goes on from no cut")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("head"), str):
        raise ValueError(f"{where}: first_seq is {first}: 'after' must give the cut's head")
    head = data["head"]
    frontier = Frontier.from_dict(data.get("frontier") or {})
    if len(head) != _HEX_HASH_LENGTH or frontier.size != first - 1:
        raise ValueError(f"{where}: 'after' is not the cut before seq {first}")
    return head, frontier


def _checkpoint(where: str, data: object) -> LinkedCheckpoint | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: checkpoint is not an object")
    note, proof = data.get("note"), data.get("consistency_proof")
    if not isinstance(note, str) or not isinstance(proof, list):
        raise ValueError(f"{where}: checkpoint needs a note and a consistency_proof")
    if not all(isinstance(node, str) for node in proof):
        raise ValueError(f"{where}: the consistency proof is not a list of hashes")
    return LinkedCheckpoint(note, tuple(proof))
