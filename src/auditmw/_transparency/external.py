"""Checking a log against signed checkpoints kept elsewhere.

The hash chain (``auditmw._stores.verify``) proves that each entry links to the one before; it
cannot see a rewrite of the whole chain, nor its newest entries cut off. A signed
checkpoint, "log L had n entries and their Merkle root was R" (docs/checkpoints.md), kept
outside the database can. For every checkpoint given (the store's own table, an auditor's
files, the external sink):

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

from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from auditmw._stores.verify import ChainRow, StoreEvidence, VerifyReport, _printable, verify_rows
from auditmw._transparency.merkle import Frontier, consistency_ranges, node_hash, verify_consistency
from auditmw._transparency.sinks import SUFFIX as SINK_SUFFIX

# auditmw._transparency.notes needs cryptography (the "checkpoints" extra): it is imported where a
# note or key is opened, so that the rest (the reports, the pass) never needs it.
if TYPE_CHECKING:
    from auditmw._stores.store import AuditStore
    from auditmw._transparency.notes import VerifierKey

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

# A signed note is at most 1 MiB (auditmw._transparency.notes.MAX_NOTE_BYTES): reading one byte
# more is enough to reject a huge file without reading it all.
_MAX_READ = (1 << 20) + 1


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


@dataclass(frozen=True, slots=True)
class AnchorFinding:
    """A checkpoint that could not be trusted, or that the log does not match."""

    kind: str
    source: str
    message: str
    log: str | None = None
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": _printable(self.source),
            "log": None if self.log is None else _printable(self.log),
            "size": self.size,
            "message": _printable(self.message),
        }

    def line(self) -> str:
        where = "" if self.log is None else f"log {_printable(self.log)!r} "
        where += "" if self.size is None else f"size {self.size} "
        return f"{self.kind}: {where}({_printable(self.source)}): {_printable(self.message)}"


@dataclass(frozen=True, slots=True)
class CheckedCheckpoint:
    """A validly signed checkpoint of a log, and what the log said to it.

    ``status`` is ``anchors`` (the log reproduces its root), ``FORK`` or ``TRUNCATED``.
    """

    size: int
    root: str
    sources: tuple[str, ...]
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root,
            "sources": [_printable(source) for source in self.sources],
            "status": self.status,
        }


@dataclass(slots=True)
class LogAnchors:
    """One log: its size and root as stored now, and how much of it checkpoints anchor."""

    entries: int
    root: str
    anchored: int = 0  # size of the newest checkpoint whose root the log reproduces
    anchored_by: tuple[str, ...] = ()
    checkpoints: list[CheckedCheckpoint] = field(default_factory=list)

    @property
    def not_yet_anchored(self) -> int:
        """Entries after the newest matching checkpoint: only the chain vouches for them."""
        return max(self.entries - self.anchored, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "root": self.root,
            "anchored": self.anchored,
            "anchored_by": [_printable(source) for source in self.anchored_by],
            "not_yet_anchored": self.not_yet_anchored,
            "checkpoints": [checkpoint.to_dict() for checkpoint in self.checkpoints],
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 consistency proof from an auditor's checkpoint to the log as it is now;
    ``verified`` when it recomputes both the checkpoint's (signed) root and the log's."""

    log: str
    source: str
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: tuple[str, ...]
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": _printable(self.log),
            "source": _printable(self.source),
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root,
            "new_root": self.new_root,
            "proof": list(self.proof),
            "verified": self.verified,
        }


@dataclass(slots=True)
class AnchorReport:
    """The chain report plus what the checkpoints say. ``ok`` when neither found damage."""

    chain: VerifyReport
    findings: list[AnchorFinding] = field(default_factory=list)
    logs: dict[str, LogAnchors] = field(default_factory=dict)
    proofs: list[ConsistencyProof] = field(default_factory=list)
    checked: int = 0  # checkpoint notes checked with the keys
    unchecked: int = 0  # stored checkpoints not checked: no verifier key was given
    keys: int = 0

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.findings

    def summary(self) -> str:
        """One line: chain damage first, then checkpoint findings, else the chain's OK."""
        if not self.chain.ok or not self.findings:
            return self.chain.summary()
        first = self.findings[0]
        where = "" if first.log is None else f" log {_printable(first.log)!r}"
        where += "" if first.size is None else f" size {first.size}"
        return (
            f"DAMAGED: the chain is intact ({self.chain.entries} entries) but "
            f"{len(self.findings)} checkpoint finding(s); first: {first.kind}{where} "
            f"({_printable(first.source)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "unchecked": self.unchecked,
            "keys": self.keys,
            "findings": [finding.to_dict() for finding in self.findings],
            "logs": {_printable(name): log.to_dict() for name, log in self.logs.items()},
            "consistency_proofs": [proof.to_dict() for proof in self.proofs],
        }


# --- reading notes -------------------------------------------------------------------------


def read_note_file(path: str | Path, source: str, *, prove: bool = False) -> CheckpointInput:
    """A checkpoint file, read up to just past the largest valid note (a huge or endless
    file is then rejected as MALFORMED without being read). ``OSError`` if unreadable."""
    with open(path, "rb") as file:
        return CheckpointInput(file.read(_MAX_READ), source, prove=prove)


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
    # Like auditmw._transparency.sinks.read_sink, but each file read only up to the note size limit.
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
    from auditmw._transparency.notes import VerifierKey

    keys: list[VerifierKey] = []
    for path in paths:
        with open(path, "rb") as file:
            data = file.read(_MAX_READ)
        if len(data) == _MAX_READ:
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


# --- opening notes ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Signed:
    """A validly signed checkpoint of ``log`` (one per distinct log, size and root)."""

    log: str
    size: int
    root: bytes
    sources: list[str]
    prove: list[str]  # the sources asking for a consistency proof


def log_of_origin(origin: str, prefix: str | None = None) -> str | None:
    """The log whose checkpoints have this origin (``log_origin(prefix, log)``), or None.

    The log is the part after the last ``/``, percent-decoded; only the canonical encoding
    is accepted, so that one log has one origin. Any prefix unless ``prefix`` is given.
    """
    head, slash, tail = origin.rpartition("/")
    if not slash or (prefix is not None and head != prefix):
        return None
    try:
        log = unquote(tail, errors="strict")
    except UnicodeDecodeError:
        return None
    return log if log and quote(log, safe="") == tail else None


def _open_all(
    inputs: Iterable[CheckpointInput], keys: Sequence[VerifierKey], prefix: str | None
) -> tuple[list[_Signed], list[AnchorFinding], int]:
    """Open every note: the valid ones grouped by (log, size, root), and the findings."""
    from auditmw._transparency.notes import CheckpointError, open_checkpoint

    signed: dict[tuple[str, int, bytes], _Signed] = {}
    findings: list[AnchorFinding] = []
    count = 0
    for item in inputs:
        count += 1
        try:
            checkpoint = open_checkpoint(item.note, keys).checkpoint
        except CheckpointError as exc:
            findings.append(AnchorFinding(exc.kind, item.source, str(exc)))
            continue
        log = log_of_origin(checkpoint.origin, prefix)
        if log is None:
            expected = f"{prefix}/<log>" if prefix is not None else "<prefix>/<log>"
            findings.append(
                AnchorFinding(
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
                AnchorFinding(
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

    def __init__(self, log: str, checkpoints: list[_Signed]) -> None:
        self.log = log
        self.frontier = Frontier()
        self.by_size: dict[int, list[_Signed]] = {}
        for checkpoint in checkpoints:
            self.by_size.setdefault(checkpoint.size, []).append(checkpoint)
        self._sizes = sorted(self.by_size, reverse=True)  # next size last: pop() is O(1)
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

    def finish(self, report: AnchorReport) -> None:
        """Judge every checkpoint of this log; called once the pass is over."""
        entries, root = self.frontier.size, self.frontier.root()
        summary = report.logs.setdefault(self.log, LogAnchors(entries, root.hex()))
        for size in sorted(self.by_size):
            groups = self.by_size[size]
            if len(groups) > 1:
                roots = "; ".join(f"{g.root.hex()} ({', '.join(g.sources)})" for g in groups)
                report.findings.append(
                    AnchorFinding(
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

    def _judge(self, checkpoint: _Signed, report: AnchorReport) -> str:
        size, entries = checkpoint.size, self.frontier.size
        sources = ", ".join(checkpoint.sources)
        if size > entries:
            report.findings.append(
                AnchorFinding(
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
                AnchorFinding(
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
        self, checkpoint: _Signed, size: int, proof: list[bytes], report: AnchorReport
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


class AnchorChecker:
    """Feed it ``(log, recomputed hash)`` for every row in (log, seq) order (the chain
    verifier's ``on_leaf``), then call ``finish``."""

    def __init__(self, checkpoints: Iterable[_Signed]) -> None:
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
            tree = self._trees[log] = _LogTree(log, self._by_log.get(log, []))
        self._log, self._tree = log, tree
        return tree

    def finish(self, report: AnchorReport) -> AnchorReport:
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
) -> AnchorReport:
    """Verify the chain of ``rows`` (ordered by log, seq) and check it against ``notes``;
    ``evidence``: what the store knows of itself (``auditmw._stores.verify.StoreEvidence``)."""
    signed, findings, count = _open_all(notes, keys, origin_prefix) if keys else ([], [], 0)
    checker = AnchorChecker(signed)
    # Without a key there is nothing to compare roots with: the chain alone, at its speed.
    on_leaf = checker.leaf if keys else None
    chain = await verify_rows(rows, progress, max_findings, on_leaf, evidence)
    report = AnchorReport(chain, findings, checked=count, keys=len(keys))
    return checker.finish(report) if keys else report


async def check_anchors(
    store: AuditStore,
    keys: Sequence[VerifierKey],
    notes: Iterable[CheckpointInput] = (),
    *,
    stored: bool = True,
    origin_prefix: str | None = None,
    progress: Callable[[int], None] | None = None,
    max_findings: int = 1000,
) -> AnchorReport:
    """Verify the store's chain and check it against signed checkpoints, in one pass.

    The checkpoints are ``notes`` and, with ``stored``, those in the store's own table.
    Notes come from anywhere, e.g.::

        keys = [VerifierKey.parse(Path("audit.pub").read_text().strip())]
        notes = [CheckpointInput(note, f"sink {path}") for path, note in read_sink(dir)]
        notes.append(CheckpointInput(Path("q1.checkpoint").read_bytes(), "q1", prove=True))
        report = await check_anchors(store, keys, notes)

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
        evidence=await store._evidence(),
    )
    if not keys:
        report.unchecked = len(own)
    return report
