"""RFC 9162 (RFC 6962) Merkle trees over the event hashes of one log.

Every event hash already is an RFC 6962 leaf hash, ``SHA-256(0x00 ‖ entry)``, so the
functions here take **leaf hashes** (32 bytes each) and never see entries. The tree over
``n`` leaves (RFC 9162 §2.1.1):

- ``MTH({}) = SHA-256("")``; ``MTH({d}) = d`` (the leaf hash itself);
- for ``n > 1``, with ``k`` the largest power of two smaller than ``n``:
  ``MTH(D[0:n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))``. An odd last node is
  never duplicated: it is carried up as is.

Proofs are lists of subtree roots ``MTH(D[a:b])``. Which ranges ``[a, b)`` make up a proof
depends only on the index and sizes (``inclusion_ranges``, ``consistency_ranges``), so
a store can compute each one by streaming the leaves of that range from disk, in flat
memory (``range_root`` / ``arange_root`` over a ``LeafReader``), instead of loading the log.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and recomputes every
root from the proof: nothing a proof says about itself is trusted (immudb's
CVE-2022-36111 came from checking only part of a consistency proof).

``Frontier`` keeps the right edge of the tree (one subtree root per set bit of the size),
so a writer extends the root in O(log n) per appended leaf and persists it in 9 + 32·k
bytes (k ≤ ⌊log2 n⌋ + 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from typing import Any

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH of the empty tree: e3b0c442...

# ``read(start, end)`` yields the leaf hashes of ``[start, end)`` in order (a store
# streams them from disk); the async form is for the asyncio stores.
LeafReader = Callable[[int, int], Iterable[bytes]]
AsyncLeafReader = Callable[[int, int], AsyncIterable[bytes]]

_FRONTIER_VERSION = 1


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 ‖ data)``: the RFC 6962 leaf hash (an event's ``hash``)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``: an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- the right edge of the tree ---------------------------------------------------------


class Frontier:
    """The roots of the perfect subtrees that make up the tree of ``size`` leaves.

    ``nodes[0]`` covers the oldest (largest) full subtree, ``nodes[-1]`` the newest; there
    is one per set bit of ``size`` (at most ⌊log2 n⌋ + 1). Appending a leaf merges equal
    sized subtrees like a binary counter carries, so it costs O(1) hashes amortized and
    O(log n) at worst; ``root()`` folds the edge right to left in O(log n).
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        """The empty tree, or the frontier of ``size`` leaves given by its ``nodes``."""
        self._size = size
        self._nodes = list(nodes)
        if size < 0 or size >= 1 << 64 or len(self._nodes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {max(size, 0).bit_count()} nodes")
        for node in self._nodes:
            _check_hash(node, "frontier node")

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> Frontier:
        frontier = cls()
        frontier.extend(leaves)
        return frontier

    def append(self, leaf: bytes) -> None:
        _check_hash(leaf, "leaf hash")
        node = leaf
        size = self._size
        # Each trailing 1 bit of the old size is a full subtree as big as what we carry.
        while size & 1:
            node = node_hash(self._nodes.pop(), node)
            size >>= 1
        self._nodes.append(node)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """``MTH`` of the ``size`` leaves appended so far."""
        if not self._nodes:
            return EMPTY_ROOT
        # The rightmost (smallest) subtree is the deepest right child: fold towards the left.
        root = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            root = node_hash(node, root)
        return root

    def copy(self) -> Frontier:
        return Frontier(self._size, self._nodes)

    def to_bytes(self) -> bytes:
        """Version byte 1, the size as 8 bytes big-endian, then the nodes (32 bytes each)."""
        return bytes([_FRONTIER_VERSION]) + self._size.to_bytes(8, "big") + b"".join(self._nodes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < 9 or data[0] != _FRONTIER_VERSION:
            raise ValueError("not a serialized frontier (version 1)")
        size = int.from_bytes(data[1:9], "big")
        body = data[9:]
        if len(body) != HASH_SIZE * size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} nodes")
        return cls(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: ``{"size": n, "nodes": [lowercase hex, ...]}``."""
        return {"size": self._size, "nodes": [node.hex() for node in self._nodes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Frontier:
        try:
            size, nodes = data["size"], data["nodes"]
            if not isinstance(size, int) or isinstance(size, bool) or not isinstance(nodes, list):
                raise TypeError
            decoded = [bytes.fromhex(node) for node in nodes]
        except (KeyError, TypeError, ValueError):
            raise ValueError("not a frontier: expected {'size': int, 'nodes': [hex]}") from None
        return cls(size, decoded)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self.size == other.size and self.nodes == other.nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


# --- roots over leaves in memory or in a store --------------------------------------


def root(leaves: Iterable[bytes]) -> bytes:
    """``MTH`` of ``leaves`` (leaf hashes), streamed: O(log n) memory."""
    return Frontier.from_leaves(leaves).root()


def range_root(read: LeafReader, start: int, end: int) -> bytes:
    """``MTH(D[start:end])``: the root of the leaves of that range as a tree of their own."""
    _check_range(start, end)
    frontier = Frontier()
    frontier.extend(read(start, end))
    _check_count(frontier, start, end)
    return frontier.root()


async def arange_root(
    read: AsyncLeafReader, start: int, end: int, base: Frontier | None = None
) -> bytes:
    """``range_root`` over an async reader (the asyncio stores).

    ``base``: the frontier of leaves ``[0, base.size)`` that the reader no longer has (a
    pruned prefix, docs/retention.md). A range that starts inside it is computed from its
    nodes, which is possible for every subtree a proof about a later leaf needs;
    ``PrunedRangeError`` for one that is not (only the archive has those leaves)."""
    _check_range(start, end)
    if base is None or start >= base.size:
        frontier = Frontier()
        async for leaf in read(start, end):
            frontier.append(leaf)
        _check_count(frontier, start, end)
        return frontier.root()
    frontier = _part_of(base, start, end)
    if end > base.size:
        async for leaf in read(base.size, end):
            frontier.append(leaf)
    _check_count(frontier, start, end)
    return frontier.root()


class PrunedRangeError(ValueError):
    """A subtree over leaves that were pruned and that the cut's frontier does not hold."""


def _part_of(base: Frontier, start: int, end: int) -> Frontier:
    """The frontier of leaves ``[start, min(end, base.size))`` made of ``base``'s nodes:
    they must tile that range exactly (then they are its binary decomposition)."""
    stop = min(end, base.size)
    position, covered, nodes = 0, 0, []
    widths = [1 << bit for bit in reversed(range(base.size.bit_length())) if base.size >> bit & 1]
    for node, width in zip(base.nodes, widths, strict=True):
        if start <= position and position + width <= stop:
            nodes.append(node)
            covered += width
        elif position < stop and position + width > start:
            covered = -1  # a node across the range's edge: its leaves are not separable
            break
        position += width
    if covered == stop - start and covered.bit_count() == len(nodes):
        return Frontier(covered, nodes)
    raise PrunedRangeError(
        f"leaves [{start}, {end}) start in the pruned prefix of {base.size} leaves and are "
        "not a subtree of its frontier: only the archive can give them"
    )


# --- which subtrees make up a proof -------------------------------------------------------


def inclusion_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The ranges ``[a, b)`` whose roots form ``PATH(index, D[0:tree_size])``, leaf first.

    RFC 9162 §2.1.3.1: for ``n > 1`` and ``k`` the largest power of two below ``n``,
    ``PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])`` if ``m < k``, else
    ``PATH(m - k, D[k:n]) : MTH(D[0:k])``; ``PATH(0, {d}) = {}``.
    """
    _check_size(tree_size, "tree_size")
    _check_size(index, "index")
    if index >= tree_size:
        raise ValueError(f"index {index} is not in a tree of {tree_size} leaves")
    ranges: list[tuple[int, int]] = []
    start, end = 0, tree_size
    # Walk down from the root, collecting siblings; the list is then leaf first.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The ranges whose roots form ``PROOF(old_size, D[0:new_size])``.

    RFC 9162 §2.1.4.1: ``PROOF(m, D[n]) = SUBPROOF(m, D[n], true)`` for ``0 < m < n``
    (empty when ``m`` is 0 or ``n``), where ``SUBPROOF(m, D[m], true) = {}``,
    ``SUBPROOF(m, D[m], false) = {MTH(D[m])}``, and for ``m < n``, ``k`` the largest power
    of two below ``n``: ``SUBPROOF(m, D[0:k], b) : MTH(D[k:n])`` if ``m <= k``, else
    ``SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])``.
    """
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")
    ranges: list[tuple[int, int]] = []
    if old_size in (0, new_size):
        return ranges
    start, end, m, whole = 0, new_size, old_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


# --- proofs -----------------------------------------------------------------------------


def inclusion_proof(
    leaves: Sequence[bytes], index: int, tree_size: int | None = None
) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of the first ``tree_size`` leaves."""
    size = len(leaves) if tree_size is None else tree_size
    _check_within(size, len(leaves))
    return [range_root(_slicer(leaves), a, b) for a, b in inclusion_ranges(index, size)]


def consistency_proof(
    leaves: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of that of ``new_size``."""
    size = len(leaves) if new_size is None else new_size
    _check_within(size, len(leaves))
    return [range_root(_slicer(leaves), a, b) for a, b in consistency_ranges(old_size, size)]


async def ainclusion_proof_from(
    read: AsyncLeafReader, index: int, tree_size: int, base: Frontier | None = None
) -> list[bytes]:
    """``inclusion_proof`` over a stored log: reads each leaf of the tree at most once
    (``base``: a pruned prefix, see ``arange_root``)."""
    return [await arange_root(read, a, b, base) for a, b in inclusion_ranges(index, tree_size)]


async def aconsistency_proof_from(
    read: AsyncLeafReader, old_size: int, new_size: int, base: Frontier | None = None
) -> list[bytes]:
    """``consistency_proof`` over a stored log: reads each leaf at most once (``base``:
    a pruned prefix, see ``arange_root``)."""
    ranges = consistency_ranges(old_size, new_size)
    return [await arange_root(read, a, b, base) for a, b in ranges]


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ----------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows ``leaf_hash`` at ``index`` in the tree ``(tree_size, root)``.

    Never raises: malformed input (wrong hash lengths, negative numbers) is just ``False``.
    """
    if not (_is_hash(leaf_hash) and _is_hash(root) and all(_is_hash(p) for p in proof)):
        return False
    if not (_is_size(index) and _is_size(tree_size)):
        return False
    # 1. If leaf_index >= tree_size, fail.
    if index >= tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1.  3. r = hash.
    fn, sn, r = index, tree_size - 1, leaf_hash
    # 4. For each p in the inclusion path:
    for p in proof:
        # a. If sn is 0, fail: the proof is longer than the path.
        if sn == 0:
            return False
        # b. fn is a right child, or the last node of its level (no right sibling): p is left.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Skip the levels where fn, the last node of its level, has no sibling.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        # c. Up one level.
        fn >>= 1
        sn >>= 1
    # 5. The path must have reached the root (sn == 0) and produced exactly the root.
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``(old_size, old_root)`` is a prefix of
    ``(new_size, new_root)``. Never raises.

    Beyond RFC 9162, whose algorithm needs ``0 < old_size < new_size``: equal sizes are
    consistent only with equal roots and an empty proof, and the empty tree is a prefix
    of every tree, with an empty proof, only if ``old_root`` is the empty tree's root.
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and all(_is_hash(c) for c in proof)):
        return False
    if not (_is_size(old_size) and _is_size(new_size)) or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    # 1. An empty consistency path fails.
    if not proof:
        return False
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash: the old tree is then a
    #    complete subtree of the new one, and its root is the seed of both chains.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = old_size - 1, new_size - 1
    # 4. Climb while fn is a right child: those levels are inside the seed subtree.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr and sr start from the seed.
    fr = sr = path[0]
    # 6. For each subsequent c:
    for c in path[1:]:
        # a. If sn is 0, fail: the path is longer than the tree is deep.
        if sn == 0:
            return False
        # b. c is a left sibling: it belongs to both trees.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        # Otherwise c is a right sibling, appended after old_size: the new tree only.
        else:
            sr = node_hash(sr, c)
        # c. Up one level.
        fn >>= 1
        sn >>= 1
    # 7. Both roots recomputed and equal to the ones given, and the path reached the root.
    return fr == old_root and sr == new_root and sn == 0


# --- helpers ------------------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _slicer(leaves: Sequence[bytes]) -> LeafReader:
    def read(start: int, end: int) -> Iterable[bytes]:
        return (leaves[i] for i in range(start, end))

    return read


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_hash(value: object, what: str) -> None:
    if not _is_hash(value):
        raise ValueError(f"a {what} must be {HASH_SIZE} bytes, not {value!r:.80}")


def _check_size(value: object, what: str) -> None:
    if not _is_size(value):
        raise ValueError(f"{what} must be a non-negative integer, not {value!r}")


def _check_range(start: int, end: int) -> None:
    _check_size(start, "start")
    _check_size(end, "end")
    if start >= end:
        raise ValueError(f"empty or reversed range [{start}, {end})")


def _check_within(size: int, available: int) -> None:
    _check_size(size, "tree size")
    if size > available:
        raise ValueError(f"tree size {size} is larger than the {available} leaves given")


def _check_count(frontier: Frontier, start: int, end: int) -> None:
    # A reader that returns too few or too many leaves (a store read racing a truncation,
    # a wrong query) would otherwise yield a plausible but wrong root.
    if frontier.size != end - start:
        raise ValueError(
            f"the reader returned {frontier.size} leaves for [{start}, {end}), not {end - start}"
        )
