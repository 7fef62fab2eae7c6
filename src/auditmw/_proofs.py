"""Inclusion proofs: show that one event is in a log without revealing the others.

The leaves of a log's Merkle tree (RFC 9162) are its entries' hashes in seq order, which
are already RFC 6962 leaf hashes. A proof is made against the log's current size; it is
worth what the root it is checked against is worth: compare that root with a signed
checkpoint kept outside the database (docs/checkpoints.md) before trusting it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import StoreError
from ._merkle import AsyncLeafReader, ainclusion_proof_from, arange_root, verify_inclusion

if TYPE_CHECKING:
    from ._store import AuditStore


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
class InclusionProof:
    """Proof that the entry at ``seq`` (leaf ``seq - 1``) is in the tree of ``tree_size``."""

    log: str
    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: tuple[str, ...]

    @property
    def leaf_index(self) -> int:
        return self.seq - 1

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
            "anchored": False,  # no signed checkpoint vouches for this root yet
        }


async def prove_inclusion(store: AuditStore, log: str, seq: int) -> InclusionProof | None:
    """The inclusion proof of ``log``'s entry ``seq`` in the log as it is now, or None
    when the log has no such entry. Reads the log's leaf hashes once: O(n)."""
    tree_size = await store.last_seq(log)
    if not 1 <= seq <= tree_size:
        return None

    def leaves(start: int, end: int) -> AsyncIterator[bytes]:
        return store.leaf_hashes(log, start, end)

    reader: AsyncLeafReader = leaves
    proof = await ainclusion_proof_from(reader, seq - 1, tree_size)
    root = await arange_root(reader, 0, tree_size)
    leaf = b""
    async for value in store.leaf_hashes(log, seq - 1, seq):
        leaf = value
    return InclusionProof(
        log, seq, tree_size, leaf.hex(), root.hex(), tuple(p.hex() for p in proof)
    )
