"""Chain verification: prove a log intact, or name the first broken entry.

The verifier trusts nothing but the stored entry bytes. It reads every row of a log
in stored seq order (one row of look-ahead and a bounded window of recent hashes, so
memory stays flat), hashes the bytes, parses them, and checks:

- each row's hash and index columns against its own entry (``modified``,
  ``column_mismatch``, ``malformed``). A row whose hash column alone was changed is told
  apart from a modified entry by the next entry, whose ``prev_hash`` vouches for the
  entry as stored; the last row has no such witness and is reported as ``modified``;
- positions: the seq columns count 1, 2, 3... and each row holds the entry of its own
  seq (``gap``, ``duplicate``, ``reordered``);
- links: each entry's ``prev_hash`` is the hash of the entry of the seq before it
  (``broken_link``), matched by the seq the entries carry, so that links between
  reordered rows are checked too. A broken link between k and k+1 cannot say which of
  the two was rewritten; the finding is reported at k+1 and names k.

A modified or malformed entry is not trusted for anything else: its seq and prev_hash
are ignored, and the next entry is expected to link to its hash column (the hash it had);
after a malformed entry, a link to the hash of its bytes as stored is accepted too (an
application restarted on a damaged file chains on from the bytes it finds).

Each finding names the log, the seq and the kind of damage; findings are ordered by
log, then seq. Truncating the newest entries, or rewriting the newest entry with its
hash, leaves a valid shorter chain; only checkpoints kept elsewhere can prove that.

Beside the rows, a store hands the verifier what it knows of itself (``StoreEvidence``):

- ``storage_damaged``: the database's own check found its storage damaged (SQLite's
  ``PRAGMA quick_check``), or reading the rows stopped at a damaged page. Such findings
  belong to the store as a whole (no log, no seq) and come first;
- ``checkpoints_removed``: the checkpoint table proves rows were deleted from it (SQLite
  counts every id it ever gave out), or a trusted key record (``checkpoint.key_rotated``)
  has no stored checkpoint by that key covering it, though the issuer signs one at once;
- warnings: protections found missing (append-only triggers dropped or disabled);
- the ``audit.erased`` records, against which the personal data of format-2 entries is
  checked (``auditmw._stores.personal_check``: ``personal_modified``,
  ``erased_without_record``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson

from auditmw._errors import StorageDamagedError
from auditmw._event import (
    ENTRY_FIELDS,
    FORMAT_2_FIELDS,
    GENESIS_HASH,
    ROW_FIELDS,
    TEXT_COLUMNS,
    entry_hash,
)
from auditmw._personal import FORMAT, PERSONAL_FIELDS
from auditmw._retention.cuts import FORGED_PRUNE, CutRecord, PruneChecker
from auditmw._stores.personal_check import (
    ERASED_WITHOUT_RECORD,
    PERSONAL_MODIFIED,
    ErasureRecord,
    PersonalCheck,
)
from auditmw._stores.verify_report import Finding, LogSummary, VerifyReport
from auditmw._text import column_text
from auditmw._transparency.key_record import KEY_RESOURCE, KEY_ROTATED_ACTION

# Columns kept beside the entry for indexing; each must equal the entry's own field (a
# text column: its column form, or the exact text as stores written before that rule hold).
INDEX_COLUMNS = tuple(
    name for name in ROW_FIELDS if name not in ("log", "seq", "hash", "entry", "personal")
)
_TEXT_COLUMNS = frozenset(TEXT_COLUMNS)

MODIFIED = "modified"
COLUMN_MISMATCH = "column_mismatch"
MALFORMED = "malformed"
GAP = "gap"
DUPLICATE = "duplicate"
REORDERED = "reordered"
BROKEN_LINK = "broken_link"
# Beside the chain (StoreEvidence): damage the database reports in its own storage, and
# checkpoints the store's records prove removed.
STORAGE_DAMAGED = "storage_damaged"
CHECKPOINTS_REMOVED = "checkpoints_removed"

_T = TypeVar("_T")
_ENTRY_KEYS = frozenset(ENTRY_FIELDS)
_FORMAT_2_KEYS = _ENTRY_KEYS | frozenset(FORMAT_2_FIELDS)

# How many recent entries the verifier remembers to check links across reordered rows.
LINK_WINDOW = 4096
# verify_rows lets the event loop run other tasks after this many rows (5-10 ms of work);
# it divides 10,000, the progress step.
YIELD_EVERY = 200


class ChainRow(NamedTuple):
    """One stored row, as the verifier reads it."""

    log: str
    seq: int
    hash: str
    entry: bytes
    columns: tuple[Any, ...]  # values of INDEX_COLUMNS, in that order
    personal: Any = None  # the openings column (format 2): JSON text, or None


@dataclass(frozen=True, slots=True)
class StoreEvidence:
    """What a store knows of itself beside its rows, gathered before the pass.

    - ``damage``: what the database's own check found wrong with its storage;
    - ``removed_checkpoints``: checkpoint rows its records prove deleted;
    - ``checkpoint_sizes``: for each (log, verifier key), the largest size of a checkpoint
      it holds signed by that key (per the table's unsigned columns), to check the key
      records against; None: not checked (its table could not be read);
    - ``warnings``: protections found missing;
    - ``cuts``: the rows of ``auditmw_cuts`` (where each pruned log starts), and
      ``cut_problems``: rows of it that could not be read as cuts (edited).
    - ``erasures``: the ``audit.erased`` records its columns show; None: not known (then
      a missing opening is not judged).
    """

    damage: tuple[str, ...] = ()
    removed_checkpoints: tuple[str, ...] = ()
    checkpoint_sizes: Mapping[tuple[str, str], int] | None = None
    warnings: tuple[str, ...] = ()
    cuts: tuple[CutRecord, ...] = ()
    cut_problems: tuple[str, ...] = ()
    erasures: tuple[ErasureRecord, ...] | None = None


class _Waiter(NamedTuple):
    """An entry read before its predecessor (rows out of order): its link is checked later."""

    row_seq: int  # where the entry is stored, where a broken link is reported
    seq: int
    prev_hash: str


class ChainVerifier:
    """Feed rows in (log, seq) order, then call ``finish()``.

    Links are checked by the seq the entries themselves carry, through a window of at
    least the last ``window`` entries read: a link between reordered rows is still
    checked, whichever of the two is read first. Memory stays bounded by the window.
    """

    def __init__(
        self,
        max_findings: int = 1000,
        window: int = LINK_WINDOW,
        on_leaf: Callable[[str, str], None] | None = None,
        evidence: StoreEvidence | None = None,
    ) -> None:
        self.report = VerifyReport()
        # Called with (log, hash) for every row, in row order: the hash is recomputed
        # from the stored entry bytes, never the hash column (the Merkle leaves of
        # auditmw._transparency.external, which checks the log against signed checkpoints).
        self._on_leaf = on_leaf
        self._max_findings = max_findings
        self._window = max(window, 1)
        self._pending: ChainRow | None = None
        self._checkpoint_sizes: Mapping[tuple[str, str], int] | None = None
        self._prune = PruneChecker(
            () if evidence is None else evidence.cuts,
            () if evidence is None else evidence.cut_problems,
        )
        self._personal = PersonalCheck(None if evidence is None else evidence.erasures)
        if evidence is not None:
            for message in evidence.damage:
                self._add_store_finding(STORAGE_DAMAGED, message)
            for message in evidence.removed_checkpoints:
                self._add_store_finding(CHECKPOINTS_REMOVED, message)
            self.report.warnings.extend(evidence.warnings)
            self._checkpoint_sizes = evidence.checkpoint_sizes
        self._start_log()

    def _start_log(self) -> None:
        # entry seq -> the hash(es) the next entry may carry as prev_hash (several when
        # more than one row claims the same seq)
        self._linked: dict[int, list[str]] = {}
        self._waiting: dict[int, list[_Waiter]] = {}  # keyed by the seq they wait for
        self._last_row_seq: int | None = None  # highest seq column read so far in this log

    def feed(self, row: ChainRow) -> None:
        row = _sane(row)
        if self._pending is not None:
            same_log = row.log == self._pending.log
            self._check(self._pending, row if same_log else None)
            if not same_log:
                self._start_log()
        self._pending = row

    def finish(self) -> VerifyReport:
        if self._pending is not None:
            self._check(self._pending, None)
            self._pending = None
        prune = self._prune
        for message in prune.findings():
            self._add_store_finding(FORGED_PRUNE, message)
        self.report.warnings.extend(prune.warnings())
        self.report.pruned = prune.newest
        for record in self._personal.unconfirmed():
            self._add(
                record.log,
                record.seq,
                ERASED_WITHOUT_RECORD,
                "the store's columns show an audit.erased entry here that was not read "
                "intact: the erasures it records are not proven",
            )
        return self.report

    def unreadable(self, error: StorageDamagedError) -> None:
        """Reading the rows stopped at damaged storage: say so, then ``finish()``.

        Stores read rows in chunks, so the damage lies somewhere after the last row read,
        not necessarily right after it."""
        last = self._pending
        read = self.report.entries + (last is not None)
        where = (
            "before its first row"
            if last is None
            else (f"after {read} row(s) (the last read: log {last.log!r} seq {last.seq})")
        )
        self._add_store_finding(
            STORAGE_DAMAGED,
            f"reading the log stopped {where}: {error}; the rows after it were not verified",
        )

    def _add(self, log: str, seq: int, kind: str, message: str) -> None:
        """Record a finding, keeping the list ordered by seq within each log."""
        findings = self.report.findings
        at = len(findings)
        while at > 0 and findings[at - 1].log == log and (findings[at - 1].seq or 0) > seq:
            at -= 1  # a link checked late (rows out of order) belongs before later findings
        self._insert(at, Finding(log, seq, kind, message))

    def _add_store_finding(self, kind: str, message: str) -> None:
        """Record a finding about the store as a whole: after those, before any log's."""
        findings = self.report.findings
        at = 0
        while at < len(findings) and findings[at].log is None:
            at += 1
        self._insert(at, Finding(None, None, kind, message))

    def _insert(self, at: int, finding: Finding) -> None:
        """Count the finding; list it at ``at`` if it is among the first ``max_findings``."""
        self.report.total_findings += 1
        findings = self.report.findings
        if at >= self._max_findings:
            return
        findings.insert(at, finding)
        if len(findings) > self._max_findings:
            findings.pop()

    def _check(self, row: ChainRow, successor: ChainRow | None) -> None:
        summary = self.report.logs.setdefault(row.log, LogSummary())
        summary.entries += 1
        summary.last_seq = row.seq
        summary.head_hash = row.hash
        computed = entry_hash(row.entry)
        if self._on_leaf is not None:
            self._on_leaf(row.log, computed)
        entry = _parse(row.entry)
        linked = [computed]  # what the next entry may carry as prev_hash
        wrong: list[str] = []  # columns that disagree with a trusted entry

        if entry is None:
            self._add(row.log, row.seq, MALFORMED, "stored entry is not a valid auditmw entry")
            # The hash it had, or (after a restart) the hash of the bytes the store found.
            linked = [row.hash, computed]
        elif computed != row.hash:
            if successor is not None and _prev_hash(successor) == computed:
                wrong.append("hash")  # the next entry vouches for the entry as stored
            else:
                self._add(
                    row.log, row.seq, MODIFIED, "entry bytes do not match their recorded hash"
                )
                entry = None  # its content is not to be trusted for anything else
                linked = [row.hash]

        if entry is not None:
            if entry["log"] != row.log:
                wrong.append("log")
            if "commitments" in entry:
                problems, opened = self._personal.check(entry, row.personal)
                for kind, message in problems:
                    self._add(row.log, row.seq, kind, message)
                # The index columns hold the opened values (None once erased); the parsed
                # entry is ours, and its personal fields are null.
                for name in PERSONAL_FIELDS:
                    entry[name] = opened.get(name)
            elif row.personal is not None:
                self._add(row.log, row.seq, PERSONAL_MODIFIED, "openings beside a format-1 entry")
            wrong.extend(
                name
                for name, value in zip(INDEX_COLUMNS, row.columns, strict=True)
                if entry[name] != value and not _column_form_of(name, entry[name], value)
            )
            if wrong:
                message = f"column(s) {', '.join(wrong)} differ from the entry"
                if wrong[0] == "hash":
                    message += " (the next entry links to the entry as stored)"
                self._add(row.log, row.seq, COLUMN_MISMATCH, message)

        cut = self._prune.cut_of(row.log)
        if cut is not None and self._last_row_seq is None and row.seq > 1:
            # A pruned log starts after its cut (or within it, while a prune is unfinished):
            # its first kept entry links to the cut's head; rows missing after it are a gap.
            self._last_row_seq = min(row.seq, cut.last_seq + 1) - 1
            self._linked[cut.last_seq] = [cut.head]
        if cut is not None and row.seq <= cut.last_seq:
            problem = self._prune.below_cut(row.log, row.seq, computed)
            if problem is not None:
                self._add(row.log, row.seq, FORGED_PRUNE, problem)
        self._check_position(row)
        seq = row.seq
        if entry is not None:
            self._prune.entry(entry, row.log)
            seq = entry["seq"]
            if seq != row.seq:
                self._add(
                    row.log,
                    row.seq,
                    REORDERED,
                    f"the row at seq {row.seq} holds the entry of seq {seq}",
                )
            self._check_link(row, seq, entry["prev_hash"])
            if not wrong:
                self._personal.confirm(row.log, seq, entry)
            if self._checkpoint_sizes is not None and entry["action"] == KEY_ROTATED_ACTION:
                self._check_key_record(row, seq, entry)
        self._remember(row, seq, linked)

    def _check_key_record(self, row: ChainRow, seq: int, entry: dict[str, Any]) -> None:
        """A trusted record of the key that signs the log's checkpoints from here on. The
        issuer signs a checkpoint covering its record at once (_transparency.checkpoints), so
        the store must hold one by that key of at least this entry's size."""
        details = entry["details"]
        key = details.get("new_key") if isinstance(details, dict) else None
        if entry["resource"] != KEY_RESOURCE or not isinstance(key, str):
            return  # not a record the issuer wrote
        assert self._checkpoint_sizes is not None
        if self._checkpoint_sizes.get((row.log, key), 0) >= seq:
            return
        name = "+".join(key.split("+", 2)[:2])  # name+key id (names hold no "+")
        self._add(
            row.log,
            row.seq,
            CHECKPOINTS_REMOVED,
            f"this entry records that key {name} signs the log's checkpoints from here on, "
            "and the issuer signs one covering it at once, but the store holds no checkpoint "
            f"by that key of size {seq} or more: they were removed (or the issuer never "
            "managed to store one: see its logged errors)",
        )

    def _check_position(self, row: ChainRow) -> None:
        """The seq columns must count 1, 2, 3... (one row each)."""
        last = self._last_row_seq
        if row.seq < 1:
            self._add(row.log, row.seq, MALFORMED, f"seq column {row.seq} is not a position")
            return
        expected = 1 if last is None else last + 1
        if last is not None and row.seq == last:
            self._add(row.log, row.seq, DUPLICATE, f"more than one row holds seq {row.seq}")
        elif row.seq > expected:
            missing = f"{expected}" if row.seq == expected + 1 else f"{expected}..{row.seq - 1}"
            self._add(row.log, expected, GAP, f"seq {missing} missing (entries deleted)")
        elif row.seq < expected:
            self._add(row.log, row.seq, REORDERED, f"seq {row.seq} stored after seq {last}")
        self._last_row_seq = row.seq if last is None else max(last, row.seq)

    def _check_link(self, row: ChainRow, seq: int, prev_hash: str) -> None:
        """Entry ``seq`` must carry the hash of entry ``seq - 1`` as its prev_hash."""
        if seq == 1:
            if prev_hash != GENESIS_HASH:
                self._add(
                    row.log,
                    row.seq,
                    BROKEN_LINK,
                    "prev_hash of seq 1 is not the genesis hash (64 zeros): seq 1 was forged",
                )
            return
        candidates = self._linked.get(seq - 1)
        if candidates is None:
            # Not read yet (rows out of order), or missing (already reported as a gap).
            self._waiting.setdefault(seq - 1, []).append(_Waiter(row.seq, seq, prev_hash))
            if len(self._waiting) > 2 * self._window:
                self._waiting = _newest(self._waiting, self._window)
        elif prev_hash not in candidates:
            self._broken_link(row.log, row.seq, seq)

    def _remember(self, row: ChainRow, seq: int, linked: list[str]) -> None:
        self._linked.setdefault(seq, []).extend(linked)
        if len(self._linked) > 2 * self._window:
            self._linked = _newest(self._linked, self._window)
        for waiter in self._waiting.pop(seq, ()):
            if waiter.prev_hash not in self._linked[seq]:
                self._broken_link(row.log, waiter.row_seq, waiter.seq)

    def _broken_link(self, log: str, row_seq: int, seq: int) -> None:
        self._add(
            log,
            row_seq,
            BROKEN_LINK,
            f"prev_hash does not match the hash of seq {seq - 1}: seq {seq - 1} was "
            f"rewritten (with its hash), or seq {seq} was forged",
        )


def _column_form_of(name: str, field: object, column: object) -> bool:
    """Whether ``column`` holds the column form of the entry's text ``field``."""
    return name in _TEXT_COLUMNS and isinstance(field, str) and column == column_text(field)


def _newest(items: dict[int, _T], keep: int) -> dict[int, _T]:
    """The ``keep`` items inserted last (pruning in bulk keeps each row O(1) amortized)."""
    return dict(list(items.items())[-keep:])


def _sane(row: ChainRow) -> ChainRow:
    """The row with values of the declared types.

    An attacker may rebuild the table without its NOT NULL constraints or column types:
    a NULL or a blob where text is expected is damage to report, never a crash.
    """
    if (
        isinstance(row.log, str)
        and type(row.seq) is int
        and isinstance(row.hash, str)
        and isinstance(row.entry, bytes)
    ):
        return row
    return ChainRow(
        _as_text(row.log),
        row.seq if type(row.seq) is int else 0,
        _as_text(row.hash),
        row.entry if isinstance(row.entry, bytes) else b"",
        row.columns,
    )


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _prev_hash(row: ChainRow) -> str | None:
    entry = _parse(row.entry)
    return None if entry is None else str(entry["prev_hash"])


def _parse(entry: bytes) -> dict[str, Any] | None:
    """The entry as a dict when it has exactly the entry fields, else None."""
    try:
        data = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if data.keys() == _FORMAT_2_KEYS:
        # (a commitment that is not a string matches no opening: personal_modified)
        if data["format"] != FORMAT or type(data["format"]) is not int:
            return None
        if not isinstance(data["commitments"], dict):
            return None
    elif data.keys() != _ENTRY_KEYS:
        return None
    if (
        type(data["seq"]) is not int
        or not isinstance(data["prev_hash"], str)
        or not isinstance(data["log"], str)
    ):
        return None
    return data


async def verify_rows(
    rows: AsyncIterable[ChainRow],
    progress: Callable[[int], None] | None = None,
    max_findings: int = 1000,
    on_leaf: Callable[[str, str], None] | None = None,
    evidence: StoreEvidence | None = None,
) -> VerifyReport:
    """Verify a stream of rows ordered by (log, seq); ``progress`` gets the row count,
    ``on_leaf`` each row's log and recomputed hash, ``evidence`` what the store knows of
    itself (see ``ChainVerifier``). Rows that stop at damaged storage
    (``StorageDamagedError``) are a finding, not an error.

    Runs on the event loop of the app it is part of (the admin app's ``/verify``): it
    lets other tasks run every ``YIELD_EVERY`` rows, as the stores hand over rows in
    chunks of a thousand without a pause in between.
    """
    verifier = ChainVerifier(max_findings, on_leaf=on_leaf, evidence=evidence)
    count = 0
    try:
        async for row in rows:
            verifier.feed(row)
            count += 1
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if progress is not None and count % 10_000 == 0:
                    progress(count)
    except StorageDamagedError as exc:
        verifier.unreadable(exc)
    if progress is not None:
        progress(count)
    return verifier.finish()
