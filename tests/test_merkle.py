"""RFC 9162 Merkle trees: known answers from transparency-dev/merkle, and properties
checked against a reference written straight from the RFC's recursive definitions.

Vectors: github.com/transparency-dev/merkle, rfc6962/rfc6962_test.go (hashes),
proof/verify_test.go (the 8-leaf reference tree: roots, inclusion and consistency proofs,
the corrupted-proof probes) and proof/proof_test.go (which tree nodes make up a proof).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditmw._event import entry_hash
from auditmw._transparency.merkle import (
    EMPTY_ROOT,
    Frontier,
    LeafReader,
    aconsistency_proof_from,
    ainclusion_proof_from,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    range_root,
    root,
    verify_consistency,
    verify_inclusion,
)

# Proofs over a stored log, as a store computes them from ranges of leaves: each range's
# root read through the reader (these tests count the leaves it reads).


def inclusion_proof_from(read: LeafReader, index: int, tree_size: int) -> list[bytes]:
    return [range_root(read, a, b) for a, b in inclusion_ranges(index, tree_size)]


def consistency_proof_from(read: LeafReader, old_size: int, new_size: int) -> list[bytes]:
    return [range_root(read, a, b) for a, b in consistency_ranges(old_size, new_size)]


# --- a reference implementation, from the RFC 9162 §2.1 definitions as written ---------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return sha256(b"")
    if len(d) == 1:
        return d[0]  # the inputs already are leaf hashes
    k = split(len(d))
    return sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = split(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = split(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return [] if m in (0, len(d)) else ref_subproof(m, d, True)


def ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


def inclusion_length(index: int, size: int) -> int:
    """transparency-dev's decompInclProof: the exact length of an inclusion proof."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_length(old: int, new: int) -> int:
    """transparency-dev's RootFromConsistencyProof: the exact length of a proof."""
    if old in (0, new):
        return 0
    inner = ((old - 1) ^ (new - 1)).bit_length()
    border = ((old - 1) >> inner).bit_count()
    shift = (old & -old).bit_length() - 1
    return (0 if old == 1 << shift else 1) + inner - shift + border


# --- known answers ---------------------------------------------------------------------


def dh(text: str) -> bytes:
    return bytes.fromhex(text)


SOME_HASH = dh("abacaba000000000000000000000000000000000000000000060061e00123456")
LEAF_DATA = [
    b"",
    dh("00"),
    dh("10"),
    dh("2021"),
    dh("3031"),
    dh("40414243"),
    dh("5051525354555657"),
    dh("606162636465666768696a6b6c6d6e6f"),
]
LEAVES = [leaf_hash(data) for data in LEAF_DATA]
ROOTS = [  # ROOTS[i] is the root of the first i + 1 leaves
    dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    dh("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    dh("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    dh("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    dh("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    dh("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (leaf number, 1-based as in verify_test.go; tree size; proof)
INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        [
            dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (3, 3, [dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        2,
        5,
        [
            dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            dh("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]


def test_hashes_known_answers() -> None:
    # rfc6962_test.go: empty tree, empty leaf, a leaf and a node.
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root([]) == EMPTY_ROOT
    assert (
        leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    # The empty tree's root is not the empty leaf's hash; a node is not a leaf.
    assert leaf_hash(b"") != EMPTY_ROOT
    assert node_hash(LEAVES[0], LEAVES[1]) != leaf_hash(LEAVES[0] + LEAVES[1])


def test_event_hash_is_a_leaf_hash() -> None:
    # docs/format.md: an event's hash is SHA-256(0x00 ‖ entry), the RFC 6962 leaf hash, so
    # the stored hashes are the tree's leaves as they are.
    entry = b'{"action":"user.login"}'
    assert bytes.fromhex(entry_hash(entry)) == leaf_hash(entry)


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_tree_roots(size: int) -> None:
    assert root(LEAVES[:size]) == ROOTS[size - 1]
    assert Frontier.from_leaves(LEAVES[:size]).root() == ROOTS[size - 1]
    assert ref_mth(LEAVES[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_reference_inclusion_proofs(leaf: int, size: int, proof: list[bytes]) -> None:
    index, tree_root = leaf - 1, ROOTS[size - 1]
    assert inclusion_proof(LEAVES, index, size) == proof
    assert verify_inclusion(LEAVES[index], index, size, proof, tree_root)
    for desc, probe in corrupt_inclusion(index, size, proof, tree_root, LEAVES[index]):
        assert not verify_inclusion(*probe), desc


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_reference_consistency_proofs(size1: int, size2: int, proof: list[bytes]) -> None:
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    assert consistency_proof(LEAVES, size1, size2) == proof
    assert verify_consistency(size1, size2, root1, root2, proof)
    if proof:  # as in verify_test.go: corrupt only the non-trivial proofs
        for desc, probe in corrupt_consistency(size1, size2, root1, root2, proof):
            assert not verify_consistency(*probe), desc


def corrupt_inclusion(
    index: int, size: int, proof: list[bytes], tree_root: bytes, leaf: bytes
) -> Iterator[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    """verify_test.go's corruptInclusionProof probes, as (description, arguments)."""
    yield "index - 1", (leaf, index - 1, size, proof, tree_root)
    yield "index + 1", (leaf, index + 1, size, proof, tree_root)
    yield "index ^ 2", (leaf, index ^ 2, size, proof, tree_root)
    yield "size * 2", (leaf, index, size * 2, proof, tree_root)
    yield "size // 2", (leaf, index, size // 2, proof, tree_root)
    yield "wrong leaf", (b"WrongLeaf", index, size, proof, tree_root)
    yield "empty root", (leaf, index, size, proof, EMPTY_ROOT)
    yield "random root", (leaf, index, size, proof, SOME_HASH)
    yield "trailing garbage", (leaf, index, size, [*proof, b""], tree_root)
    yield "trailing root", (leaf, index, size, [*proof, tree_root], tree_root)
    yield "preceding garbage", (leaf, index, size, [b"", *proof], tree_root)
    yield "preceding root", (leaf, index, size, [tree_root, *proof], tree_root)
    for i in range(len(proof)):
        yield f"proof[{i}] bit 3", (leaf, index, size, flip(proof, i, 0, 8), tree_root)
    if proof:
        yield "removed component", (leaf, index, size, proof[:-1], tree_root)
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        yield "inserted component", (leaf, index, size, inserted, tree_root)


def corrupt_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> Iterator[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """verify_test.go's corruptConsistencyProof probes."""
    yield "size1 - 1", (size1 - 1, size2, root1, root2, proof)
    yield "size1 + 1", (size1 + 1, size2, root1, root2, proof)
    yield "size1 ^ 2", (size1 ^ 2, size2, root1, root2, proof)
    yield "size2 * 2", (size1, size2 * 2, root1, root2, proof)
    yield "size2 // 2", (size1, size2 // 2, root1, root2, proof)
    yield "wrong root1", (size1, size2, b"WrongRoot", root2, proof)
    yield "wrong root2", (size1, size2, root1, b"WrongRoot", proof)
    yield "swapped roots", (size1, size2, root2, root1, proof)
    yield "empty proof", (size1, size2, root1, root2, [])
    yield "trailing garbage", (size1, size2, root1, root2, [*proof, b""])
    yield "trailing root1", (size1, size2, root1, root2, [*proof, root1])
    yield "trailing root2", (size1, size2, root1, root2, [*proof, root2])
    yield "preceding garbage", (size1, size2, root1, root2, [b"", *proof])
    yield "preceding root1", (size1, size2, root1, root2, [root1, *proof])
    yield "preceding root2", (size1, size2, root1, root2, [root2, *proof])
    yield "preceding proof[0]", (size1, size2, root1, root2, [proof[0], *proof])
    yield "truncated proof", (size1, size2, root1, root2, proof[:-1])
    for i in range(len(proof)):
        yield f"proof[{i}] bit 4", (size1, size2, root1, root2, flip(proof, i, 0, 16))


def flip(proof: list[bytes], element: int, position: int, mask: int) -> list[bytes]:
    changed = bytearray(proof[element])
    changed[position] ^= mask
    return [bytes(changed) if i == element else p for i, p in enumerate(proof)]


def test_single_entry_inclusion() -> None:
    # verify_test.go TestVerifyInclusionSingleEntry: a 1-leaf tree's root is its leaf.
    leaf = leaf_hash(b"data")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(b"", 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_rejects_impossible_positions(index: int, size: int) -> None:
    # verify_test.go TestVerifyInclusion: invalid roots and leaves at impossible positions.
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, -1, size, [], SOME_HASH)


R1, R2 = sha256(b"don't care 1"), sha256(b"don't care 2")


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "proof", "valid"),
    [
        # verify_test.go TestVerifyConsistency, with 32-byte stand-ins for its short
        # "don't care" roots (which auditmw rejects outright as not hashes).
        (0, 0, R1, R2, [], False),
        (1, 1, R1, R2, [], False),
        (0, 0, R1, R1, [], True),
        (1, 1, R2, R2, [], True),
        (1, 0, R1, R2, [], False),
        (2, 1, R1, R2, [], False),
        (1, 2, R1, R2, [], False),
        (0, 0, EMPTY_ROOT, R2, [], False),
        (1, 1, EMPTY_ROOT, R2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        # Go accepts (0, 1, R1, R2, []) whatever R1 is; auditmw requires the old root of
        # an empty tree to be the empty tree's root, since that is all it can be.
        (0, 1, EMPTY_ROOT, R2, [], True),
        (0, 1, R1, R2, [], False),
        # Negative sizes and non-hash proof elements are rejected, never raised on.
        (-1, 1, R1, R2, [], False),
        (1, 2, R1, R2, ["not bytes"], False),
    ],
)
def test_consistency_edge_cases(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes], valid: bool
) -> None:
    assert verify_consistency(size1, size2, root1, root2, proof) is valid


def nodes(*ids: tuple[int, int], rehash: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """proof_test.go's node ids (level, index) as leaf ranges; a ``rehash`` span of ids is
    one node of the proof, the root of the union of their ranges (e.g. l = hash(i, j))."""
    ranges = [(index << level, (index + 1) << level) for level, index in ids]
    if rehash is None:
        return ranges
    begin, end = rehash
    merged = (min(a for a, _ in ranges[begin:end]), max(b for _, b in ranges[begin:end]))
    return [*ranges[:begin], merged, *ranges[end:]]


@pytest.mark.parametrize(
    ("size", "index", "expected"),
    [
        (1, 0, []),
        (2, 0, nodes((0, 1))),
        (2, 1, nodes((0, 0))),
        (3, 1, nodes((0, 0), (0, 2))),
        (7, 0, nodes((0, 1), (1, 1), (0, 6), (1, 2), rehash=(2, 4))),
        (7, 1, nodes((0, 0), (1, 1), (0, 6), (1, 2), rehash=(2, 4))),
        (7, 2, nodes((0, 3), (1, 0), (0, 6), (1, 2), rehash=(2, 4))),
        (7, 3, nodes((0, 2), (1, 0), (0, 6), (1, 2), rehash=(2, 4))),
        (7, 4, nodes((0, 5), (0, 6), (2, 0))),
        (7, 5, nodes((0, 4), (0, 6), (2, 0))),
        (7, 6, nodes((1, 2), (2, 0))),
        (4, 2, nodes((0, 3), (1, 0))),
        (5, 3, nodes((0, 2), (1, 0), (0, 4))),
        (6, 3, nodes((0, 2), (1, 0), (1, 2))),
        (6, 4, nodes((0, 5), (2, 0))),
        (15, 10, nodes((0, 11), (1, 4), (0, 14), (1, 6), (3, 0), rehash=(2, 4))),
        (31, 24, nodes((0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0), rehash=(2, 4))),
        (
            95,
            81,
            nodes(
                (0, 80),
                (1, 41),
                (2, 21),
                (0, 94),
                (1, 46),
                (2, 22),
                (4, 4),
                (6, 0),
                rehash=(3, 6),
            ),
        ),
    ],
)
def test_inclusion_nodes(size: int, index: int, expected: list[tuple[int, int]]) -> None:
    assert inclusion_ranges(index, size) == expected


@pytest.mark.parametrize(
    ("size1", "size2", "expected"),
    [
        (1, 2, nodes((0, 1))),
        (1, 4, nodes((0, 1), (1, 1))),
        (1, 6, nodes((0, 1), (1, 1), (1, 2))),
        (2, 3, nodes((0, 2))),
        (2, 8, nodes((1, 1), (2, 1))),
        (3, 7, nodes((0, 2), (0, 3), (1, 0), (0, 6), (1, 2), rehash=(3, 5))),
        (4, 7, nodes((0, 6), (1, 2), rehash=(0, 2))),
        (5, 7, nodes((0, 4), (0, 5), (0, 6), (2, 0))),
        (6, 7, nodes((1, 2), (0, 6), (2, 0))),
        (7, 8, nodes((0, 6), (0, 7), (1, 2), (2, 0))),
        (1, 1, []),
        (5, 5, []),
        (8, 8, []),
        (2, 4, nodes((1, 1))),
        (3, 5, nodes((0, 2), (0, 3), (1, 0), (0, 4))),
        (3, 6, nodes((0, 2), (0, 3), (1, 0), (1, 2))),
        (4, 6, nodes((1, 2))),
        (1, 7, nodes((0, 1), (1, 1), (0, 6), (1, 2), rehash=(2, 4))),
        (10, 15, nodes((1, 4), (1, 5), (0, 14), (1, 6), (3, 0), rehash=(2, 4))),
        (24, 31, nodes((3, 2), (0, 30), (1, 14), (2, 6), (4, 0), rehash=(1, 4))),
        (
            81,
            95,
            nodes(
                (0, 80),
                (0, 81),
                (1, 41),
                (2, 21),
                (0, 94),
                (1, 46),
                (2, 22),
                (4, 4),
                (6, 0),
                rehash=(4, 7),
            ),
        ),
    ],
)
def test_consistency_nodes(size1: int, size2: int, expected: list[tuple[int, int]]) -> None:
    assert consistency_ranges(size1, size2) == expected


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (8, 7), (-1, 3)])
def test_inclusion_ranges_reject_bad_positions(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_ranges(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(5, 0), (9, 8), (-1, 2)])
def test_consistency_ranges_reject_bad_sizes(size1: int, size2: int) -> None:
    with pytest.raises(ValueError):
        consistency_ranges(size1, size2)


# --- properties ---------------------------------------------------------------------------

MAX_LEAVES = 300


def make_leaves(seed: bytes, n: int) -> list[bytes]:
    """Distinct leaf hashes (a proof can only be told apart from another by distinct data)."""
    return [leaf_hash(seed + i.to_bytes(4, "big")) for i in range(n)]


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int]:
    n = draw(st.integers(1, MAX_LEAVES))
    return make_leaves(draw(st.binary(max_size=4)), n), draw(st.integers(0, n - 1))


@given(tree_and_index())
def test_inclusion_proofs_verify_with_bounded_length(case: tuple[list[bytes], int]) -> None:
    leaves, index = case
    n = len(leaves)
    proof = inclusion_proof(leaves, index)
    assert proof == ref_path(index, leaves)
    assert verify_inclusion(leaves[index], index, n, proof, root(leaves))
    assert len(proof) == inclusion_length(index, n) <= ceil_log2(n)
    # Every leaf of the left, complete subtree (all of them when n is a power of two)
    # sits at full depth: its proof has exactly ⌈log2 n⌉ hashes.
    if n == 1 or index < split(n) or n & (n - 1) == 0:
        assert len(proof) == ceil_log2(n)


@given(tree_and_index(), st.data())
def test_inclusion_proof_for_anything_else_fails(
    case: tuple[list[bytes], int], data: st.DataObject
) -> None:
    leaves, index = case
    n = len(leaves)
    proof, tree_root = inclusion_proof(leaves, index), root(leaves)
    if n > 1:
        other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index), label="other")
        assert not verify_inclusion(leaves[index], other, n, proof, tree_root)  # wrong index
        assert not verify_inclusion(leaves[other], index, n, proof, tree_root)  # wrong leaf
    # Another tree size, with that size's own root (a checkpoint binds size and root).
    bigger = make_leaves(b"more", MAX_LEAVES + 8)
    leaves_m = leaves + bigger[: MAX_LEAVES + 8 - n]
    size = data.draw(st.integers(index + 1, len(leaves_m)).filter(lambda m: m != n), label="m")
    assert not verify_inclusion(leaves[index], index, size, proof, root(leaves_m[:size]))
    # Any bit flipped in any proof element, the leaf or the root.
    if proof:
        element = data.draw(st.integers(0, len(proof) - 1), label="element")
        position = data.draw(st.integers(0, 31), label="position")
        bit = data.draw(st.integers(0, 7), label="bit")
        assert not verify_inclusion(
            leaves[index], index, n, flip(proof, element, position, 1 << bit), tree_root
        )
    assert not verify_inclusion(flip([leaves[index]], 0, 31, 1)[0], index, n, proof, tree_root)
    assert not verify_inclusion(leaves[index], index, n, proof, flip([tree_root], 0, 0, 128)[0])


@st.composite
def tree_and_sizes(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    new = draw(st.integers(0, MAX_LEAVES))
    old = draw(st.integers(0, new))
    return make_leaves(draw(st.binary(max_size=4)), new), old, new


@given(tree_and_sizes())
def test_consistency_proofs_verify(case: tuple[list[bytes], int, int]) -> None:
    leaves, old, new = case
    proof = consistency_proof(leaves, old, new)
    assert proof == ref_proof(old, leaves)
    assert verify_consistency(old, new, root(leaves[:old]), root(leaves), proof)
    assert len(proof) == consistency_length(old, new)
    assert len(proof) <= ceil_log2(new) + 1 if new else not proof


@given(tree_and_sizes(), st.data())
def test_consistency_proof_for_anything_else_fails(
    case: tuple[list[bytes], int, int], data: st.DataObject
) -> None:
    leaves, old, new = case
    if not 0 < old < new:
        return
    proof = consistency_proof(leaves, old, new)
    old_root, new_root = root(leaves[:old]), root(leaves)
    longer = leaves + make_leaves(b"more", 8)
    # Another old size, with that size's own root.
    other_old = data.draw(st.integers(1, new).filter(lambda m: m != old), label="old'")
    assert not verify_consistency(other_old, new, root(leaves[:other_old]), new_root, proof)
    # Another new size, with its own root.
    other_new = data.draw(st.integers(old, len(longer)).filter(lambda m: m != new), label="new'")
    assert not verify_consistency(old, other_new, old_root, root(longer[:other_new]), proof)
    # A forked new tree: same size, one leaf replaced.
    forked = list(leaves)
    victim = data.draw(st.integers(0, new - 1), label="victim")
    forked[victim] = leaf_hash(b"forged")
    assert not verify_consistency(old, new, old_root, root(forked), proof)
    # Any bit of any element.
    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    position = data.draw(st.integers(0, 31), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    changed = flip(proof, element, position, 1 << bit)
    assert not verify_consistency(old, new, old_root, new_root, changed)
    assert not verify_consistency(old, new, new_root, old_root, proof)


def test_frontier_root_matches_recomputation_at_every_size() -> None:
    leaves = make_leaves(b"frontier", MAX_LEAVES)
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for n, leaf in enumerate(leaves, 1):
        frontier.append(leaf)
        assert frontier.size == n
        assert frontier.root() == ref_mth(leaves[:n])
        assert len(frontier.nodes) == n.bit_count() <= ceil_log2(n) + 1


@given(st.integers(0, MAX_LEAVES), st.integers(0, 20))
def test_frontier_round_trips(n: int, more: int) -> None:
    leaves = make_leaves(b"round trip", n + more)
    frontier = Frontier.from_leaves(leaves[:n])
    from_bytes = Frontier.from_bytes(frontier.to_bytes())
    from_json = Frontier.from_dict(json.loads(json.dumps(frontier.to_dict())))
    assert from_bytes == frontier == from_json
    assert len(frontier.to_bytes()) == 9 + 32 * n.bit_count()
    # A restored frontier goes on exactly as the original would have.
    for restored in (from_bytes, from_json):
        restored.extend(leaves[n:])
        assert restored.root() == root(leaves)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02" + bytes(8),  # unknown version
        b"\x01" + (1).to_bytes(8, "big"),  # size 1 needs one node
        b"\x01" + (2).to_bytes(8, "big") + bytes(33),  # a node is 32 bytes
        b"\x01" + (3).to_bytes(8, "big") + bytes(32),  # size 3 needs two nodes
    ],
)
def test_frontier_from_bytes_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        Frontier.from_bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"size": True, "nodes": []},
        {"size": -1, "nodes": []},
        {"size": 1, "nodes": []},
        {"size": 1, "nodes": ["zz" * 32]},
        {"size": 1, "nodes": ["00" * 31]},
        {"size": 0, "nodes": "not a list"},
    ],
)
def test_frontier_from_dict_rejects_garbage(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Frontier.from_dict(data)


def test_frontier_rejects_non_hash_leaves() -> None:
    with pytest.raises(ValueError):
        Frontier().append(b"short")


# --- proofs over a store: a reader of leaf ranges -------------------------------------------


class CountingReader:
    """A stand-in for a store: serves ranges of leaf hashes and counts what it read."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.read = 0

    def __call__(self, start: int, end: int) -> Iterable[bytes]:
        for i in range(start, end):
            self.read += 1
            yield self.leaves[i]

    async def aread(self, start: int, end: int) -> AsyncIterator[bytes]:
        for leaf in self(start, end):
            yield leaf


@given(tree_and_index())
def test_inclusion_proof_from_reader_reads_each_leaf_at_most_once(
    case: tuple[list[bytes], int],
) -> None:
    leaves, index = case
    reader = CountingReader(leaves)
    assert inclusion_proof_from(reader, index, len(leaves)) == inclusion_proof(leaves, index)
    assert reader.read == len(leaves) - 1  # every leaf but the one proven
    assert range_root(reader, 0, len(leaves)) == root(leaves)


@given(tree_and_sizes())
def test_consistency_proof_from_reader_reads_each_leaf_at_most_once(
    case: tuple[list[bytes], int, int],
) -> None:
    leaves, old, new = case
    reader = CountingReader(leaves)
    assert consistency_proof_from(reader, old, new) == consistency_proof(leaves, old, new)
    assert reader.read <= new


async def test_async_readers() -> None:
    leaves = make_leaves(b"async", 37)
    reader = CountingReader(leaves)
    inclusion = await ainclusion_proof_from(reader.aread, 12, 37)
    consistency = await aconsistency_proof_from(reader.aread, 13, 37)
    assert inclusion == inclusion_proof(leaves, 12)
    assert consistency == consistency_proof(leaves, 13)


def test_a_reader_returning_the_wrong_number_of_leaves_is_an_error() -> None:
    leaves = make_leaves(b"short", 10)
    with pytest.raises(ValueError, match="returned 9 leaves"):
        range_root(lambda start, end: leaves[start : end - 1], 0, 10)
    with pytest.raises(ValueError, match="returned 11 leaves"):
        range_root(lambda start, end: [*leaves[start:end], leaves[0]], 0, 10)


def test_proofs_over_sequences_reject_sizes_beyond_the_leaves() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES, 0, 9)
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, 1, 9)


def test_an_inclusion_proof_binds_the_size_only_through_the_root() -> None:
    # Sizes 5 to 8 give leaf 0 the same path shape, so the proof for size 8 also "verifies"
    # with size 5 against the root of size 8. That is inherent to RFC 9162 and harmless:
    # a size is only ever used together with its own root, both signed in one checkpoint,
    # and against its own root the wrong size fails (test above).
    proof = inclusion_proof(LEAVES, 0, 8)
    assert verify_inclusion(LEAVES[0], 0, 5, proof, ROOTS[7])
    assert not verify_inclusion(LEAVES[0], 0, 5, proof, ROOTS[4])
