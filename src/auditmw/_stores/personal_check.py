"""Verifying the personal data of format-2 entries: each opening against its commitment,
and each missing opening against the erasures the log records.

An entry of format 2 commits to its personal values (``auditmw._personal``); their
openings live beside it in an erasable column. The chain verifier (``verify.py``) hands
every trusted entry of format 2 to ``PersonalCheck``, which finds:

- ``personal_modified``: an opening that does not match its commitment (a personal value
  edited), an opening without a commitment, or an openings column that is not JSON;
- ``erased_without_record``: an opening gone although no ``audit.erased`` entry covers
  it: one for the entry's actor (user_id), or, for a personal detail, for the person the
  entry is about (resource ``user``, resource_id), recorded at or after the entry's
  time. Each such record, gathered from the store before the pass (``ErasureRecord``),
  must then be read intact in the pass, else the erasures it covers are not proven.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from auditmw._personal import (
    ERASED_ACTION,
    ERASED_RESOURCE,
    PERSON_RESOURCES,
    POINTER_FIELDS,
)
from auditmw._text import column_text

PERSONAL_MODIFIED = "personal_modified"
ERASED_WITHOUT_RECORD = "erased_without_record"
_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """An ``audit.erased`` entry as the store's columns show it (before the pass)."""

    log: str
    seq: int
    user_id: str  # the erased person: the entry's resource_id, in its column form
    timestamp: str


class PersonalCheck:
    """Checks the personal data of format-2 entries, in chain order.

    ``erasures``: the store's ``audit.erased`` records; None when there is no store to
    ask (an export: an opening may be gone, only present ones are checked)."""

    def __init__(self, erasures: Iterable[ErasureRecord] | None) -> None:
        self._lenient = erasures is None
        self._unconfirmed: dict[tuple[str, int], ErasureRecord] = {}
        self._erased_until: dict[str, str] = {}  # person -> latest erasure time
        for record in erasures or ():
            self._unconfirmed[(record.log, record.seq)] = record
            latest = self._erased_until.get(record.user_id)
            if latest is None or record.timestamp > latest:
                self._erased_until[record.user_id] = record.timestamp

    def check(
        self, entry: Mapping[str, Any], personal: object
    ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """The findings (kind, message) for one trusted entry of format 2 and its
        openings column; and the opened values of its committed fields (user_email...),
        which the index columns must hold (None where erased).

        Runs for every entry verified: written for speed (one parse of the column, one
        hash per opening, a value parsed only where an index column holds it)."""
        findings: list[tuple[str, str]] = []
        fields: dict[str, Any] = {}
        commitments = entry["commitments"]
        openings = _openings(personal)
        if openings is None:
            findings.append((PERSONAL_MODIFIED, "the openings column is not a JSON object"))
            openings = {}
        present = 0
        for pointer, commitment in commitments.items():
            opening = openings.get(pointer)
            if opening is None:
                if not self._covered(pointer, entry):
                    findings.append(
                        (
                            ERASED_WITHOUT_RECORD,
                            f"the value of {pointer} was removed, but no audit.erased entry "
                            "records the erasure of this entry's person",
                        )
                    )
                continue
            present += 1
            try:
                salt, text = opening
                matches = _sha256(bytes.fromhex(salt) + text.encode()).hexdigest() == commitment
                name = POINTER_FIELDS.get(pointer)
                if name is not None:  # the index column holds it: read the value
                    fields[name] = orjson.loads(text)
            except (ValueError, TypeError, AttributeError):
                matches = False  # not [salt hex, JSON text]
            if not matches:
                findings.append(
                    (PERSONAL_MODIFIED, f"the value of {pointer} does not match its commitment")
                )
        if len(openings) > present:
            extra = sorted(set(openings) - set(commitments))
            findings.append(
                (
                    PERSONAL_MODIFIED,
                    f"opening(s) without a commitment in the entry: {', '.join(extra[:5])}",
                )
            )
        return findings, fields

    def _covered(self, pointer: str, entry: Mapping[str, Any]) -> bool:
        """Whether an erasure record covers the missing opening at ``pointer``."""
        if self._lenient:
            return True
        timestamp = entry["timestamp"]
        people = [entry["user_id"]]  # the actor: every personal value
        if pointer not in POINTER_FIELDS and entry["resource"] in PERSON_RESOURCES:
            people.append(entry["resource_id"])  # the subject: the personal details
        for person in people:
            if isinstance(person, str):
                until = self._erased_until.get(column_text(person))
                if until is not None and timestamp <= until:
                    return True
        return False

    def confirm(self, log: str, seq: int, entry: Mapping[str, Any]) -> None:
        """An intact entry read in the pass: if it is an erasure record gathered before,
        it is proven."""
        if entry["action"] != ERASED_ACTION or entry["resource"] != ERASED_RESOURCE:
            return
        record = self._unconfirmed.get((log, seq))
        person = entry["resource_id"]
        if (
            record is not None
            and isinstance(person, str)
            and record.user_id == column_text(person)
            and record.timestamp == entry["timestamp"]
        ):
            del self._unconfirmed[(log, seq)]

    def unconfirmed(self) -> list[ErasureRecord]:
        """The erasure records not read intact in the pass (call after it)."""
        return sorted(self._unconfirmed.values(), key=lambda r: (r.log, r.seq))


def _openings(personal: object) -> dict[str, Any] | None:
    """The openings column parsed; {} when NULL; None when it is not a JSON object."""
    if personal is None:
        return {}
    try:
        openings = orjson.loads(personal)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        return None
    return openings if isinstance(openings, dict) else None
