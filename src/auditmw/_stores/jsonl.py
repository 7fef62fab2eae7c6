"""JSON Lines exports: writing an event's line, and verifying a file offline with the
same checks as a store.

``auditmw export`` writes each line as the event's entry exactly as it was hashed (RFC 8785
canonical JSON) with ``"hash"`` added (see docs/format.md) and, for an entry of format 2,
then ``"openings"``: its personal values still present, each checked against its
commitment (an erased one is simply absent). An opening's value is a JSON string, so no
unescaped ``"hash":"`` can follow the real one: the last is the cut. So the entry
is cut out of the line as bytes and hashed as it is: no number is parsed and written again,
and the verdict never depends on how numbers are read. The entry must be canonical JSON
(its members in order, no member name twice: a reader could see one value while the hash
covers another); that check is the only one that reads numbers, as IEEE 754 doubles.

``reserialized=True`` (``--reserialized``) is for a file another tool rewrote: each line is
parsed strictly, ``hash`` removed and the rest written anew as RFC 8785 JSON. Members may
then come in any order and numbers in any spelling of the same double, so that path checks
values, not bytes. Lines of different logs may be interleaved.

A filtered export holds some entries of a log, not all. So the lines of each log are cut
into *runs* of consecutive seqs, and each run goes, as ``ChainRow``s, to a fresh
``ChainVerifier`` (the store verifier's own): it checks every hash and every link within
the run. Between runs the chain cannot be checked; a seq that does not go up is damage.

A file whose only flaw is gaps between runs is a *subset*: every entry in it is intact
and neighbours link up, but a file with lines deleted looks the same. Only an export of
the whole log (one run from seq 1) shows the log complete, up to its last entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditmw._canonical import MAX_SAFE_INTEGER, canonical_json, check_json
from auditmw._errors import ValidationError
from auditmw._event import (
    ENTRY_FIELDS,
    FORMAT_2_FIELDS,
    MAX_DETAILS_DEPTH,
    Event,
    as_doubles,
    entry_hash,
)
from auditmw._personal import FORMAT, PERSONAL_FIELDS, opened_value, parse_openings
from auditmw._stores.report import Report, finding_lines
from auditmw._stores.verify import GAP, INDEX_COLUMNS, ChainRow, ChainVerifier
from auditmw._stores.verify_report import Finding, LogSummary

_ENTRY_FIELDS = frozenset(ENTRY_FIELDS)
_FORMAT_2_FIELDS = _ENTRY_FIELDS | frozenset(FORMAT_2_FIELDS)
MAX_PROBLEMS = 100


def jsonl_line(event: Event) -> bytes:
    """The JSON Lines line of an event: its canonical entry plus ``hash`` (and, for
    format 2, ``openings``), and ``\\n``."""
    stored = event.stored
    if stored is not None:  # the bytes as hashed, and the openings as stored
        line = stored.entry[:-1] + b',"hash":"%s"' % event.hash.encode()
        if stored.format == FORMAT and stored.personal is not None:
            line += b',"openings":%s' % stored.personal.encode()
        return line + b"}\n"
    entry = event.to_dict()
    hash_ = entry.pop("hash")
    # Sorted-key orjson is the canonical form of most entries; the hash tells for sure
    # (it is the hash of the exact entry bytes). Otherwise: the full RFC 8785 writer.
    encoded = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    if entry_hash(encoded) != hash_:
        encoded = canonical_json(entry, fast=check_json(entry, "event", MAX_DETAILS_DEPTH + 2))
    return encoded[:-1] + b',"hash":"%s"}\n' % hash_.encode()


@dataclass(slots=True)
class JsonlReport(Report):
    """What ``verify_jsonl`` found. ``findings`` and ``problems`` are damage (the first
    ones; ``total_*`` counts all); gaps are not damage, unless ``complete_required``
    (``--complete``): then a subset is not ``ok``."""

    logs: dict[str, LogSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    total_findings: int = 0
    problems: list[str] = field(default_factory=list)  # "line N: ..."
    total_problems: int = 0
    gaps: int = 0  # places where entries of a log are missing
    missing_ranges: list[str] = field(default_factory=list)  # the first gaps, "line N: ..."
    lines: int = 0
    complete_required: bool = False
    warnings: list[str] = field(default_factory=list)  # none so far: the shared shape

    @property
    def entries(self) -> int:
        return sum(summary.entries for summary in self.logs.values())

    @property
    def missing(self) -> int:
        """Entries of the logs missing from the file, below each log's last seq."""
        return sum(summary.last_seq - summary.entries for summary in self.logs.values())

    @property
    def damaged(self) -> bool:
        """A line is unreadable or out of order, or an entry is modified or mislinked."""
        return self.total_problems > 0 or self.total_findings > 0

    @property
    def subset(self) -> bool:
        """Intact, but entries of the log are missing between or before those present."""
        return not self.damaged and self.gaps > 0

    @property
    def incomplete(self) -> bool:
        """The whole log was required, and entries of it are missing."""
        return self.complete_required and self.subset

    @property
    def ok(self) -> bool:
        """No damage found: the file is the whole log, or an intact subset of it (unless
        the whole log was required)."""
        return not self.damaged and not self.incomplete

    def summary(self) -> str:
        """One line for people."""
        if self.damaged:
            count = self.total_problems + self.total_findings
            first = self.problems[0] if self.problems else "see the findings"
            if not self.problems and self.findings:
                first = self.findings[0].line()
            return f"DAMAGED: {count} problem(s); first: {first}"
        heads = "; ".join(
            f"log {name!r}: last seq {s.last_seq}, head {s.head_hash}"
            for name, s in self.logs.items()
        )
        if self.subset:
            return (
                f"SUBSET: {self.entries} entries intact, {self.missing} entries of the log "
                f"not in this file ({heads}). This is a filtered export: each entry's hash "
                "checks out and entries that follow each other link up, but a subset "
                "cannot show that nothing was removed; verify a whole-log export or the "
                "store for that."
            )
        return f"OK: {self.entries} entries intact, the whole log from seq 1 ({heads})"

    def details(self) -> list[str]:
        """The unreadable lines, then the damage; with ``complete_required``, the gaps."""
        lines = [f"  {problem}" for problem in self.problems]
        if self.total_problems > len(self.problems):
            lines.append(
                f"  ... and {self.total_problems - len(self.problems)} more unreadable lines"
            )
        if self.damaged:  # gaps are expected in a subset: list only the damage
            damage = [finding for finding in self.findings if finding.kind != GAP]
            lines.extend(finding_lines(damage, len(damage), ""))
        elif self.incomplete:  # the gaps are what is wrong
            lines.extend(f"  {missing}" for missing in self.missing_ranges)
            if self.gaps > len(self.missing_ranges):
                lines.append(f"  ... and {self.gaps - len(self.missing_ranges)} more gaps")
        return lines

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "subset": self.subset,
            "entries": self.entries,
            "missing": self.missing,
            "gaps": self.gaps,
            "missing_ranges": self.missing_ranges,
            "lines": self.lines,
            "logs": {name: summary.to_dict() for name, summary in self.logs.items()},
            "findings": [finding.to_dict() for finding in self.findings],
            "total_findings": self.total_findings,
            "problems": self.problems,
            "total_problems": self.total_problems,
        }


@dataclass(slots=True)
class _Run:
    """Consecutive entries of one log, checked by one ``ChainVerifier``."""

    start: int
    last: int
    verifier: ChainVerifier


def verify_jsonl(
    lines: Iterable[bytes],
    *,
    reserialized: bool = False,
    complete: bool = False,
    max_findings: int = 1000,
    progress: Callable[[int], None] | None = None,
    first_line: int = 1,
    on_row: Callable[[ChainRow], None] | None = None,
    starts: Mapping[str, int] | None = None,
) -> JsonlReport:
    """Verify the lines of a JSONL export (bytes, with or without line ends).

    ``reserialized``: accept lines that another tool rewrote (see the module's docstring).
    ``complete``: require the whole log (a subset is then not ``ok``).
    ``first_line``: the number of the first line (after an archive's header, 2).
    ``on_row``: called with each entry read, in order, after the verifier saw it.
    ``starts``: the seq a log starts at, when not 1 (an archive of a log pruned before:
    the entries before it are no gap).
    """
    report = JsonlReport(complete_required=complete)
    runs: dict[str, _Run] = {}

    def problem(number: int, text: str) -> None:
        report.total_problems += 1
        if len(report.problems) < MAX_PROBLEMS:
            report.problems.append(f"line {number}: {text}")

    def gap(number: int, log: str, first: int, last: int) -> None:
        report.gaps += 1
        if len(report.missing_ranges) < MAX_PROBLEMS:
            seqs = f"seq {first}" if first == last else f"seqs {first}..{last}"
            report.missing_ranges.append(f"line {number}: log {log!r} {seqs} not in the file")

    def finish(log: str, run: _Run) -> None:
        found = run.verifier.finish()
        # A run that starts after seq 1 is reported with the entries before it missing:
        # that is the gap already counted, not damage.
        leading = [f for f in found.findings if f.kind == GAP and (f.seq or 0) < run.start]
        report.total_findings += found.total_findings - len(leading)
        for finding in found.findings:
            if finding not in leading and len(report.findings) < max_findings:
                report.findings.append(finding)
        summary = report.logs.setdefault(log, LogSummary())
        summary.entries += found.logs[log].entries
        summary.last_seq = found.logs[log].last_seq
        summary.head_hash = found.logs[log].head_hash

    for number, line in enumerate(lines, first_line):
        if not line.strip(_JSON_WHITESPACE):
            continue
        report.lines += 1
        if progress is not None and report.lines % 10_000 == 0:
            progress(report.lines)
        try:
            row = chain_row(line, reserialized=reserialized)
        except ValueError as exc:
            problem(number, str(exc))
            continue
        run = runs.get(row.log)
        if run is not None and row.seq <= run.last:
            problem(number, f"log {row.log!r} seq {row.seq} comes after seq {run.last}")
            continue
        if run is None or row.seq > run.last + 1:
            if run is not None:
                finish(row.log, run)
            start = 1 if starts is None else starts.get(row.log, 1)
            if row.seq > start or run is not None:
                gap(number, row.log, 1 if run is None else run.last + 1, row.seq - 1)
            # (the leading gap's finding needs room next to the first row's own findings)
            run = runs[row.log] = _Run(row.seq, row.seq, ChainVerifier(max(max_findings, 8)))
        run.last = row.seq
        run.verifier.feed(row)
        if on_row is not None:
            on_row(row)
    for log, run in runs.items():
        finish(log, run)
    if progress is not None:
        progress(report.lines)
    return report


_JSON_WHITESPACE = b" \t\r\n"
# The members after the entry in every line auditmw writes: the bytes before are the entry.
_HASH_MEMBER = re.compile(rb',"hash":"([0-9a-f]{64})"(?:,"openings":(\{.*\}))?\}', re.DOTALL)
_DEPTH = MAX_DETAILS_DEPTH + 2  # the entry object and details sit above the details' depth


def chain_row(line: bytes, *, reserialized: bool = False) -> ChainRow:
    """The ``ChainRow`` of one export line; ``ValueError`` when it is not an event."""
    line = line.rstrip(b"\r\n")
    if reserialized:
        return _reserialized_row(line)
    at = line.rfind(b',"hash":"')
    found = _HASH_MEMBER.fullmatch(line, at) if at >= 0 else None
    if found is None:
        raise ValueError(
            'does not end with its "hash" member as auditmw writes it (if another tool '
            "rewrote the file, use --reserialized)"
        )
    entry = line[:at] + b"}"
    try:
        data = orjson.loads(entry)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({_cut(exc)})") from None
    _check_entry(data)
    if not _canonical(entry, data):
        raise ValueError(
            f"log {data['log']!r} seq {data['seq']}: not RFC 8785 canonical JSON (members "
            "reordered, repeated or re-escaped, spaces added, or a number not written as RFC "
            "8785 writes it; if another tool rewrote the file, use --reserialized)"
        )
    return _row(data, found[1].decode(), entry, found[2])


def _canonical(entry: bytes, data: dict[str, Any]) -> bool:
    """Whether ``entry`` is the RFC 8785 form of ``data``, its own parse.

    Exact with numbers read as doubles (orjson reads big integers exactly or as doubles;
    ``as_doubles`` makes those beyond 2**53 doubles): a canonical number is the shortest
    spelling of its double, so it parses back to that double and is written the same.
    A member given twice is parsed once and written once: not the same bytes.
    """
    data["details"] = as_doubles(data["details"])
    try:
        return canonical_json(data, fast=check_json(data, "entry", _DEPTH)) == entry
    except ValidationError:  # e.g. a lone surrogate, or nested too deep
        return False


def _reserialized_row(line: bytes) -> ChainRow:
    """A line of any equivalent JSON, read strictly; its entry is written anew."""
    try:
        data = json.loads(
            line.decode("utf-8"),
            parse_int=_number,
            parse_float=_number,
            parse_constant=_no_constant,
            object_pairs_hook=_unique,
        )
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({_cut(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("hash"), str):
        raise ValueError('not an event object (no "hash" member)')
    hash_ = data.pop("hash")
    openings = data.pop("openings", None)
    _check_entry(data)
    try:
        canonical = canonical_json(data, fast=check_json(data, "entry", _DEPTH))
    except ValidationError as exc:
        raise ValueError(f"not representable as RFC 8785 JSON ({_cut(exc)})") from None
    return _row(data, hash_, canonical, None if openings is None else orjson.dumps(openings))


def _check_entry(data: object) -> None:
    """Raise ``ValueError`` unless ``data`` has exactly the entry fields, log a string and
    seq an integer."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fields = _FORMAT_2_FIELDS if "format" in data else _ENTRY_FIELDS
    if set(data) != fields:
        missing = sorted(fields - set(data))
        extra = sorted(set(data) - fields)
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(repr(name[:40]) for name in extra[:5])}" if extra else "",
            )
            if part
        )
        raise ValueError(f"not an event object ({what})")
    if type(data["seq"]) is not int or not isinstance(data["log"], str):
        raise ValueError("log must be a string and seq an integer")


def _row(entry: dict[str, Any], hash_: str, canonical: bytes, openings: bytes | None) -> ChainRow:
    """The row a store would hold: its index columns hold the opened values of format 2."""
    fields = entry
    if "format" in entry:
        opened = parse_openings(openings)
        fields = {**entry}
        for name in PERSONAL_FIELDS:
            fields[name] = opened_value(opened.get("/" + name))[1]
    columns = tuple(fields[name] for name in INDEX_COLUMNS)
    return ChainRow(entry["log"], entry["seq"], hash_, canonical, columns, openings)


def _number(text: str) -> int | float:
    # JSON numbers are doubles (RFC 8785), also when written without a fraction: 1e20 is
    # written 100000000000000000000. Integral ones within ±(2**53-1) are ints, as auditmw
    # writes them; this is how docs/verify_jsonl.py and JavaScript read numbers.
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("a member name occurs twice")
    return dict(pairs)


def _cut(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:120] + "…"
