"""Checking a log against signed checkpoints kept elsewhere.

The hash chain (``auditmw._stores.verify``) proves that each entry links to the one before; it
cannot see a rewrite of the whole chain, nor its newest entries cut off. A signed
checkpoint, "log L had n entries and their Merkle root was R" (docs/checkpoints.md), kept
outside the database can. For every checkpoint given (the store's own table, an auditor's
files, a sink):

1. the signed note is opened with the verifier keys (``MALFORMED``, ``UNKNOWN_KEY``,
   ``BAD_SIGNATURE``) and mapped to its log by its origin, ``<prefix>/<percent-encoded
   log>`` (``WRONG_ORIGIN`` when it is not of that form, or not of the expected prefix);
2. the Merkle root of the log's first ``size`` entries, as stored now, is recomputed and
   compared with the signed root (``FORK``), unless the log is shorter (``TRUNCATED``);
3. two validly signed checkpoints of one log and size with different roots are a
   ``FORK`` by the signer itself.

All of it takes one pass over the log, the chain verifier's: it hands over each row's hash
as it recomputes it from the stored entry bytes (``ChainVerifier(on_leaf=...)``), never the
hash column, so a checkpoint vouches for the entries themselves. A frontier per log extends
the root leaf by leaf and is compared at each checkpoint size in turn. For the checkpoints
an auditor brings (``prove``), the same pass gathers the RFC 9162 consistency proof from
the checkpoint to the log's current size, which is then verified against both roots.

Entries after the newest checkpoint that matches are *not yet anchored*: only the chain
vouches for them. That is information, not damage.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auditmw._retention.cuts import latest_cuts
from auditmw._stores.verify import ChainRow, StoreEvidence, verify_rows
from auditmw._transparency.checkpoint_report import (
    CheckedCheckpoint,
    CheckpointFinding,
    CheckpointReport,
    ConsistencyProof,
    LogCheckpoints,
)
from auditmw._transparency.inputs import CheckpointInput, stored_checkpoints
from auditmw._transparency.merkle import Frontier, consistency_ranges, node_hash, verify_consistency
from auditmw._transparency.notes import (
    CheckpointError,
    VerifierKey,
    log_of_origin,
    open_checkpoint,
)

if TYPE_CHECKING:
    from auditmw._stores.store import AuditStore

# Finding kinds (the first four are also the ``kind`` of auditmw._transparency.notes's errors).
MALFORMED = "MALFORMED"
UNKNOWN_KEY = "UNKNOWN_KEY"
BAD_SIGNATURE = "BAD_SIGNATURE"
WRONG_ORIGIN = "WRONG_ORIGIN"
FORK = "FORK"
TRUNCATED = "TRUNCATED"
# The store keeps a checkpoint's log, size and root beside its signed note (for lookups);
# columns that disagree with the note were edited. The signed note is what is checked.
COLUMN_MISMATCH = "COLUMN_MISMATCH"

ANCHORS = "anchors"  # the status of a checkpoint whose root the log reproduces
# A checkpoint of a size below a log's cut: its leaves were pruned, only the archive holds
# them (``auditmw verify --jsonl ARCHIVE`` checks its link to a checkpoint). Not damage.
COVERED_BY_ARCHIVE = "covered by archive"


# --- opening notes ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Signed:
    """A validly signed checkpoint of ``log`` (one per distinct log, size and root)."""

    log: str
    size: int
    root: bytes
    sources: list[str]
    prove: list[str]  # the sources asking for a consistency proof


def _open_all(
    inputs: Iterable[CheckpointInput], keys: Sequence[VerifierKey], prefix: str | None
) -> tuple[list[_Signed], list[CheckpointFinding], int]:
    """Open every note: the valid ones grouped by (log, size, root), and the findings."""
    signed: dict[tuple[str, int, bytes], _Signed] = {}
    findings: list[CheckpointFinding] = []
    count = 0
    for item in inputs:
        count += 1
        try:
            checkpoint = open_checkpoint(item.note, keys).checkpoint
        except CheckpointError as exc:
            findings.append(CheckpointFinding(exc.kind, item.source, str(exc)))
            continue
        log = log_of_origin(checkpoint.origin, prefix)
        if log is None:
            expected = f"{prefix}/<log>" if prefix is not None else "<prefix>/<log>"
            findings.append(
                CheckpointFinding(
                    WRONG_ORIGIN,
                    item.source,
                    f"validly signed, but its origin {checkpoint.origin!r} is not "
                    f"{expected} (the log name percent-encoded): not a checkpoint of this store",
                    size=checkpoint.size,
                )
            )
            continue
        if item.claimed is not None and item.claimed != (log, checkpoint.size, checkpoint.root):
            findings.append(
                CheckpointFinding(
                    COLUMN_MISMATCH,
                    item.source,
                    f"the stored log/size/root columns ({item.claimed[0]!r}, "
                    f"{item.claimed[1]}, {item.claimed[2].hex()[:16]}…) differ from the "
                    "signed note, which is what is checked",
                    log,
                    checkpoint.size,
                )
            )
        key = (log, checkpoint.size, checkpoint.root)
        group = signed.setdefault(key, _Signed(log, checkpoint.size, checkpoint.root, [], []))
        group.sources.append(item.source)
        if item.prove:
            group.prove.append(item.source)
    return list(signed.values()), findings, count


# --- the pass over the leaves -----------------------------------------------------------------


class _Prover:
    """Gathers the consistency proof from size ``m`` to whatever size the log ends at.

    Every range of ``PROOF(m, D[0:n])`` (RFC 9162 §2.1.4.1) is either a node of the
    frontier at size ``m`` (left of ``m``), or, right of ``m``, one of the aligned blocks
    ``[p, p + lowbit(p))`` that start at ``p = m`` and follow each other, the last one cut
    at ``n``. Which they are does not depend on ``n``, so the proof comes out of the same
    single pass. The log's own frontier holds every block but the leaf completing it
    (the block's nodes are its last ones): a block's root costs O(log n) hashes once,
    when that leaf arrives, and nothing for the other leaves.
    """

    def __init__(self, frontier: Frontier) -> None:
        size = self.size = frontier.size
        self.roots: dict[tuple[int, int], bytes] = {}
        start = 0
        widths = [1 << b for b in reversed(range(size.bit_length())) if size >> b & 1]
        for node, width in zip(frontier.nodes, widths, strict=True):  # largest first
            self.roots[(start, start + width)] = node
            start += width
        self._start = size
        self._width = size & -size

    @property
    def due(self) -> int:
        """The tree size at which the next leaf completes the current block."""
        return self._start + self._width - 1

    def complete(self, frontier: Frontier, leaf: bytes) -> None:
        """``leaf`` completes the block: fold it with the block's nodes, as the frontier's
        own carry would, and keep the root before the frontier merges it further left."""
        root = leaf
        inside = self._width.bit_length() - 1  # nodes of the block: widths w/2, ..., 1
        for node in reversed(frontier.nodes[len(frontier.nodes) - inside :]):
            root = node_hash(node, root)
        self.roots[(self._start, self._start + self._width)] = root
        self._start += self._width
        self._width = self._start & -self._start

    def proof(self, frontier: Frontier) -> list[bytes]:
        """The proof from ``size`` to the frontier's size."""
        new_size = frontier.size
        if new_size > self._start:  # the last block, cut at the end of the log
            nodes = frontier.nodes[len(frontier.nodes) - (new_size - self._start).bit_count() :]
            root = nodes[-1]
            for node in reversed(nodes[:-1]):
                root = node_hash(node, root)
            self.roots[(self._start, new_size)] = root
        return [self.roots[span] for span in consistency_ranges(self.size, new_size)]


class _LogTree:
    """One log's tree, extended leaf by leaf and compared at each checkpoint size."""

    def __init__(self, log: str, checkpoints: list[_Signed], base: Frontier | None = None) -> None:
        self.log = log
        # A pruned log's tree starts from its cut's frontier (docs/retention.md).
        self.frontier = Frontier() if base is None else base.copy()
        self.by_size: dict[int, list[_Signed]] = {}
        for checkpoint in checkpoints:
            self.by_size.setdefault(checkpoint.size, []).append(checkpoint)
        start = self.frontier.size
        self._sizes = sorted((s for s in self.by_size if s >= start), reverse=True)
        self._next = self._sizes[-1] if self._sizes else -1
        self.results: dict[int, bytes] = {}  # size -> the log's root at that size
        self.provers: list[tuple[_Signed, _Prover]] = []
        self._due = -1  # the size at which some prover's block completes, or -1
        self._reached()  # checkpoints of the empty tree

    def append(self, leaf: bytes) -> None:
        # The hot path: one comparison per leaf beyond the frontier's own work.
        frontier = self.frontier
        if frontier.size == self._due:
            self._complete_blocks(leaf)
        frontier.append(leaf)
        if frontier.size == self._next:
            self._reached()

    def _complete_blocks(self, leaf: bytes) -> None:
        for _, prover in self.provers:
            if prover.due == self.frontier.size:
                prover.complete(self.frontier, leaf)
        self._due = min(prover.due for _, prover in self.provers)

    def _reached(self) -> None:
        size = self.frontier.size
        while self._sizes and self._sizes[-1] == size:
            self._sizes.pop()
            self.results[size] = self.frontier.root()
            for checkpoint in self.by_size[size]:
                if checkpoint.prove and size > 0:
                    self.provers.append((checkpoint, _Prover(self.frontier)))
        self._next = self._sizes[-1] if self._sizes else -1
        if self.provers:
            self._due = min(prover.due for _, prover in self.provers)

    def finish(self, report: CheckpointReport) -> None:
        """Judge every checkpoint of this log; called once the pass is over."""
        entries, root = self.frontier.size, self.frontier.root()
        summary = report.logs.setdefault(self.log, LogCheckpoints(entries, root.hex()))
        for size in sorted(self.by_size):
            groups = self.by_size[size]
            if len(groups) > 1:
                roots = "; ".join(f"{g.root.hex()} ({', '.join(g.sources)})" for g in groups)
                report.findings.append(
                    CheckpointFinding(
                        FORK,
                        ", ".join(s for g in groups for s in g.sources),
                        f"validly signed checkpoints disagree on the root at size {size}: "
                        f"{roots}: the signer signed two histories",
                        self.log,
                        size,
                    )
                )
            for checkpoint in groups:
                status = self._judge(checkpoint, report)
                summary.checkpoints.append(
                    CheckedCheckpoint(
                        size, checkpoint.root.hex(), tuple(checkpoint.sources), status
                    )
                )
                if status == ANCHORS and size >= summary.anchored:
                    summary.anchored, summary.anchored_by = size, tuple(checkpoint.sources)
        for checkpoint, prover in self.provers:
            self._prove(checkpoint, checkpoint.size, prover.proof(self.frontier), report)
        for checkpoint in self.by_size.get(0, ()):  # a proof from the empty tree is empty
            if checkpoint.prove:
                self._prove(checkpoint, 0, [], report)

    def _judge(self, checkpoint: _Signed, report: CheckpointReport) -> str:
        size, entries = checkpoint.size, self.frontier.size
        sources = ", ".join(checkpoint.sources)
        if size not in self.results and size <= entries:
            return COVERED_BY_ARCHIVE  # below the cut: its leaves were pruned
        if size > entries:
            report.findings.append(
                CheckpointFinding(
                    TRUNCATED,
                    sources,
                    f"the checkpoint vouches for {size} entries, the log has {entries}: "
                    f"{size - entries} missing from the end (deleted, or rewritten shorter)",
                    self.log,
                    size,
                )
            )
            return TRUNCATED
        computed = self.results[size]
        if computed != checkpoint.root:
            report.findings.append(
                CheckpointFinding(
                    FORK,
                    sources,
                    f"the log's first {size} entries have Merkle root {computed.hex()}, the "
                    f"checkpoint signed {checkpoint.root.hex()}: entries were changed, "
                    "removed or rewritten since it was signed",
                    self.log,
                    size,
                )
            )
            return FORK
        return ANCHORS

    def _prove(
        self, checkpoint: _Signed, size: int, proof: list[bytes], report: CheckpointReport
    ) -> None:
        entries, new_root = self.frontier.size, self.frontier.root()
        # Recomputes both roots from the proof: the signed old root, the log's new root.
        verified = verify_consistency(size, entries, checkpoint.root, new_root, proof)
        for source in checkpoint.prove:
            report.proofs.append(
                ConsistencyProof(
                    self.log,
                    source,
                    size,
                    entries,
                    checkpoint.root.hex(),
                    new_root.hex(),
                    tuple(node.hex() for node in proof),
                    verified,
                )
            )


class CheckpointChecker:
    """Feed it ``(log, recomputed hash)`` for every row in (log, seq) order (the chain
    verifier's ``on_leaf``), then call ``finish``."""

    def __init__(
        self,
        checkpoints: Iterable[_Signed],
        bases: Mapping[str, Frontier] | None = None,
        pruned_leaves: Mapping[str, Sequence[bytes]] | None = None,
    ) -> None:
        # A pruned log's tree starts from its cut's frontier (``bases``), or, when its
        # archives gave every pruned leaf (``pruned_leaves``), from those: then the
        # checkpoints below the cut are checked too.
        self._bases = bases or {}
        self._pruned_leaves = pruned_leaves or {}
        by_log: dict[str, list[_Signed]] = {}
        for checkpoint in checkpoints:
            by_log.setdefault(checkpoint.log, []).append(checkpoint)
        self._by_log = by_log
        self._trees: dict[str, _LogTree] = {}
        self._log: str | None = None
        self._tree: _LogTree | None = None

    def leaf(self, log: str, hash_hex: str) -> None:
        tree = self._tree
        if tree is None or log != self._log:
            tree = self._switch(log)
        tree.append(bytes.fromhex(hash_hex))

    def _switch(self, log: str) -> _LogTree:
        tree = self._trees.get(log)
        if tree is None:
            leaves = self._pruned_leaves.get(log)
            base = None if leaves is not None else self._bases.get(log)
            tree = self._trees[log] = _LogTree(log, self._by_log.get(log, []), base)
            for leaf in leaves or ():
                tree.append(leaf)
        self._log, self._tree = log, tree
        return tree

    def finish(self, report: CheckpointReport) -> CheckpointReport:
        for log in self._by_log:  # logs with checkpoints but no entry left at all
            if log not in self._trees:
                self._switch(log)
        for log in sorted(self._trees):
            self._trees[log].finish(report)
        return report


# --- the API -----------------------------------------------------------------------------------


async def check_rows(
    rows: AsyncIterable[ChainRow],
    keys: Sequence[VerifierKey],
    notes: Iterable[CheckpointInput] = (),
    *,
    origin_prefix: str | None = None,
    progress: Callable[[int], None] | None = None,
    max_findings: int = 1000,
    evidence: StoreEvidence | None = None,
    pruned_leaves: Mapping[str, Sequence[bytes]] | None = None,
) -> CheckpointReport:
    """Verify the chain of ``rows`` (ordered by log, seq) and check it against ``notes``;
    ``evidence``: what the store knows of itself (``auditmw._stores.verify.StoreEvidence``);
    ``pruned_leaves``: per pruned log, every leaf before its cut, from its archives (used
    only when they rebuild the cut's frontier)."""
    signed, findings, count = _open_all(notes, keys, origin_prefix) if keys else ([], [], 0)
    cuts = latest_cuts(() if evidence is None else evidence.cuts)
    leaves = {
        log: list(pruned)
        for log, pruned in (pruned_leaves or {}).items()
        if log in cuts and Frontier.from_leaves(pruned) == cuts[log].frontier
    }
    checker = CheckpointChecker(signed, {log: cut.frontier for log, cut in cuts.items()}, leaves)
    # Without a key there is nothing to compare roots with: the chain alone, at its speed.
    on_leaf = checker.leaf if keys else None
    chain = await verify_rows(rows, progress, max_findings, on_leaf, evidence)
    report = CheckpointReport(chain, findings, checked=count, keys=len(keys))
    return checker.finish(report) if keys else report


async def check_checkpoints(
    store: AuditStore,
    keys: Sequence[VerifierKey],
    notes: Iterable[CheckpointInput] = (),
    *,
    stored: bool = True,
    origin_prefix: str | None = None,
    progress: Callable[[int], None] | None = None,
    max_findings: int = 1000,
    pruned_leaves: Mapping[str, Sequence[bytes]] | None = None,
) -> CheckpointReport:
    """Verify the store's chain and check it against signed checkpoints, in one pass.

    The checkpoints are ``notes`` and, with ``stored``, those in the store's own table.
    Notes come from anywhere, e.g.::

        keys = [VerifierKey.parse(Path("audit.pub").read_text().strip())]
        notes = [CheckpointInput(note, f"sink {path}") for path, note in read_sink(dir)]
        notes.append(CheckpointInput(Path("q1.checkpoint").read_bytes(), "q1", prove=True))
        report = await check_checkpoints(store, keys, notes)

    ``prove``: also make and verify the consistency proof from that checkpoint to the log's
    current size (``report.proofs``). Without ``keys``, stored checkpoints are only
    counted (``unchecked``), and other notes are a ``ValueError``. ``report.ok`` when the
    chain is intact and every checkpoint is validly signed and reproduced by the log.
    """
    notes = list(notes)
    if notes and not keys:
        raise ValueError("checking checkpoints needs at least one verifier key")
    own = await stored_checkpoints(store) if stored else []
    if keys:
        notes = own + notes
    report = await check_rows(
        store.iter_chain_rows(),
        keys,
        notes,
        origin_prefix=origin_prefix,
        progress=progress,
        max_findings=max_findings,
        evidence=await store.evidence(),
        pruned_leaves=pruned_leaves,
    )
    if not keys:
        report.unchecked = len(own)
    return report


# Names from before the vocabulary settled on "checkpoint" (docs/checkpoints.md).
_DEPRECATED: dict[str, Any] = {
    "AnchorReport": CheckpointReport,
    "AnchorFinding": CheckpointFinding,
    "AnchorChecker": CheckpointChecker,
    "LogAnchors": LogCheckpoints,
    "check_anchors": check_checkpoints,
}


def __getattr__(name: str) -> object:
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{name} is deprecated; use {new.__name__}", DeprecationWarning, stacklevel=2)
    return new
