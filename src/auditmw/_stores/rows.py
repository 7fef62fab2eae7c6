"""The checkpoint rows a store keeps (table ``auditmw_checkpoints``), as plain values,
and the stored hash of an entry as a Merkle leaf.

Kept apart from the store and its backends so that the checkpoint issuer
(``auditmw._transparency.checkpoints``) can build them without importing either.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditmw._errors import StoreError


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint as the store keeps it (table ``auditmw_checkpoints``).

    ``root`` and ``size`` are what the issuer computed; only ``note`` is signed, so a
    verifier trusts nothing here before it opened the note with a verifier key.
    """

    log: str
    size: int  # tree size: how many entries of ``log`` it covers
    root: bytes  # the 32-byte Merkle root the issuer computed
    note: bytes  # the C2SP signed note, exactly as issued
    created_at: str  # RFC 3339, UTC


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A row of ``auditmw_checkpoints``, with what only the issuer needs: the frontier
    to extend the tree from (``Frontier.to_bytes()``) and the signer's verifier key."""

    checkpoint: StoredCheckpoint
    frontier: bytes
    key: str  # VerifierKey.encode(): public, says which key signed


def leaf_of(stored_hash: object) -> bytes:
    """A stored hash column as a Merkle leaf; a damaged one stops the proof."""
    try:
        leaf = bytes.fromhex(str(stored_hash))
    except ValueError:
        leaf = b""
    if len(leaf) != 32:
        raise StoreError("a stored hash is not a SHA-256 hash; run `auditmw verify`")
    return leaf


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """An events row about a person (its actor, or the person it is about), as erasure
    reads it: where it is, its columns, its entry and its openings (``personal``)."""

    log: str
    seq: int
    timestamp: str
    user_id: str | None
    resource: str
    resource_id: str | None
    entry: bytes
    personal: str | None


@dataclass(frozen=True, slots=True)
class PersonalUpdate:
    """The one change erasure makes to a row: its openings become ``personal`` (None: all
    gone) and, for the person's own entries (``actor``), its clear index columns of the
    committed fields (user_email, ip_address, user_agent) become NULL."""

    log: str
    seq: int
    personal: str | None
    actor: bool
