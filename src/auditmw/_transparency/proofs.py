"""Inclusion proofs: show that one event is in a log without revealing the others.

The leaves of a log's Merkle tree (RFC 9162) are its entries' hashes in seq order, which
are already RFC 6962 leaf hashes. When a stored signed checkpoint of the log covers the
entry, the proof is made against the newest such checkpoint's tree and carries its note
(``anchored``): open the note with the verifier key, then check the proof against the
root it signs. Otherwise the proof is against the log's current size, and worth what
that root is worth (docs/checkpoints.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auditmw._retention.cuts import latest_cuts
from auditmw._text import is_column_text
from auditmw._transparency.merkle import (
    AsyncLeafReader,
    ainclusion_proof_from,
    arange_root,
    verify_inclusion,
)
from auditmw._transparency.notes import Checkpoint, CheckpointError, parse_note

if TYPE_CHECKING:
    from auditmw._stores.store import AuditStore, StoredCheckpoint

logger = logging.getLogger("auditmw")
# How many of a log's newest checkpoints are tried for a proof to be anchored in.
CANDIDATE_CHECKPOINTS = 8


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Proof that the entry at ``seq`` (leaf ``seq - 1``) is in the tree of ``tree_size``."""

    log: str
    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: tuple[str, ...]
    checkpoint: str | None = None  # the signed note whose tree (size, root) this proof is in

    @property
    def leaf_index(self) -> int:
        return self.seq - 1

    @property
    def anchored(self) -> bool:
        """Whether a signed checkpoint vouches for ``root`` (check its signature)."""
        return self.checkpoint is not None

    def verify(self) -> bool:
        """Recompute the root from the leaf and the proof (RFC 9162 §2.1.3.2)."""
        return verify_inclusion(
            bytes.fromhex(self.leaf_hash),
            self.leaf_index,
            self.tree_size,
            [bytes.fromhex(node) for node in self.proof],
            bytes.fromhex(self.root),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "seq": self.seq,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash,
            "root": self.root,
            "proof": list(self.proof),
            "anchored": self.anchored,
            "checkpoint": self.checkpoint,
        }


async def prove_inclusion(store: AuditStore, log: str, seq: int) -> InclusionProof | None:
    """The inclusion proof of ``log``'s entry ``seq``, or None when the log has no such
    entry: anchored in the newest stored checkpoint that covers it, else against the log
    as it is now. Reads the log's leaf hashes about once: O(n)."""
    if not is_column_text(log):  # no log has this name; the driver would raise
        return None
    tree_size = await store.last_seq(log)
    # After a prune the tree's first leaves are gone; the cut's frontier stands for them.
    base = latest_cuts(await store.cut_records()).get(log)
    frontier = None if base is None else base.frontier
    if not (0 if base is None else base.last_seq) < seq <= tree_size:
        return None  # no such entry, or pruned: its proof is the archive's

    def leaves(start: int, end: int) -> AsyncIterator[bytes]:
        return store.leaf_hashes(log, start, end)

    reader: AsyncLeafReader = leaves
    leaf = b""
    async for value in store.leaf_hashes(log, seq - 1, seq):
        leaf = value
    for checkpoint in await store.backend.recent_checkpoints(log, CANDIDATE_CHECKPOINTS):
        size, signed_root = checkpoint.checkpoint.size, _signed_root(checkpoint.checkpoint)
        if signed_root is None or not seq <= size <= tree_size:
            continue  # it does not cover the entry, or the log is shorter (truncated)
        proof = await ainclusion_proof_from(reader, seq - 1, size, frontier)
        # The proof recomputes the root from the leaves: no second pass over them.
        if verify_inclusion(leaf, seq - 1, size, proof, signed_root):
            return InclusionProof(
                log,
                seq,
                size,
                leaf.hex(),
                signed_root.hex(),
                tuple(p.hex() for p in proof),
                checkpoint.checkpoint.note.decode("utf-8", "replace"),
            )
        logger.warning(
            "log %r no longer matches its checkpoint at size %d; run `auditmw verify`",
            log,
            size,
        )
        break
    proof = await ainclusion_proof_from(reader, seq - 1, tree_size, frontier)
    root = await arange_root(reader, 0, tree_size, frontier)
    return InclusionProof(
        log, seq, tree_size, leaf.hex(), root.hex(), tuple(p.hex() for p in proof)
    )


def _signed_root(stored: StoredCheckpoint) -> bytes | None:
    """The root the note states (not the column beside it), if the note parses and
    states the stored size; its signature is for the reader of the proof to check."""
    try:
        checkpoint = Checkpoint.parse(parse_note(stored.note).text)
    except CheckpointError:
        return None
    return checkpoint.root if checkpoint.size == stored.size else None
