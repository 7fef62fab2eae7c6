"""Erasing a person's personal data (GDPR Art. 17), leaving every entry and proof intact.

Entries of format 2 hold no personal value, only salted commitments to them; the values
and salts (the openings) lie beside the entry in an erasable column (``auditmw._personal``).
Erasing a person removes openings, through the one UPDATE the events table takes:

- from each entry the person made (user_id): every opening (user_email, ip_address,
  user_agent, personal details), and the clear index columns of those fields;
- from each entry about the person (resource ``user``, resource_id), made by someone
  else: the openings of the personal details (they describe the person), not the
  actor's own fields.

The erasure is recorded first, as an appended ``audit.erased`` entry (resource ``user``,
resource_id the person, details: counts and the reason, no personal data); then the
openings of the entries up to its time are removed. A crash between the two leaves a
record and the data: run erase again. ``verify`` accepts a missing opening only where
such a record covers it. Entries of format 1 (written before format 2) hold personal
values inside the hashed entry: they cannot be erased without breaking the chain and
leave the store only by pruning (docs/retention.md); erase counts them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditmw._errors import ValidationError
from auditmw._event import Event, NewEvent, text_field
from auditmw._personal import (
    ERASED_ACTION,
    ERASED_RESOURCE,
    PERSON_RESOURCES,
    field_name,
    is_field_pointer,
    openings_text,
    parse_openings,
    redact_details,
)
from auditmw._stores.rows import PersonalUpdate, SubjectRow
from auditmw._text import column_text

MAX_REASON_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What ``AuditStore.erase`` did.

    ``entries``: entries whose personal data was removed; ``fields``: how many values of
    each field (``user_email``, ``details.email``...); ``format_1_entries``: entries of
    format 1 that hold the person's data and cannot be erased (prune them, see
    docs/retention.md); ``record``: the appended ``audit.erased`` event.
    """

    user_id: str
    entries: int
    fields: dict[str, int]
    format_1_entries: int
    record: Event
    notes: tuple[str, ...] = field(default=())  # e.g. what the database keeps a while

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "entries": self.entries,
            "fields": self.fields,
            "format_1_entries": self.format_1_entries,
            "record": {"log": self.record.log, "seq": self.record.seq, "id": self.record.id},
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        fields = ", ".join(f"{name} {count}" for name, count in sorted(self.fields.items()))
        text = (
            f"erased the personal data of user {self.user_id!r} from {self.entries} "
            f"entries ({fields or 'nothing left to erase'}); recorded as log "
            f"{self.record.log!r} seq {self.record.seq}"
        )
        if self.format_1_entries:
            text += (
                f". {self.format_1_entries} entries of format 1 (written before format 2) "
                "hold this person's data inside the hashed entry: they cannot be erased, "
                "only pruned (docs/retention.md)"
            )
        return text


@dataclass(slots=True)
class _Plan:
    updates: list[tuple[str, PersonalUpdate]] = field(default_factory=list)  # (timestamp, ...)
    fields: Counter[str] = field(default_factory=Counter)
    format_1_entries: int = 0


def plan_erasure(person: str, rows: Sequence[SubjectRow], keys: frozenset[str]) -> _Plan:
    """The updates that erase ``person`` (a user id in its column form) from ``rows``."""
    plan = _Plan()
    for row in rows:
        actor = row.user_id == person
        data = orjson.loads(row.entry)
        if "commitments" not in data:
            if _format_1_personal(data, actor, keys):
                plan.format_1_entries += 1
            continue
        openings = parse_openings(row.personal)
        if actor:
            removed = list(openings)
            kept: dict[str, Any] = {}
        else:  # the person is what the entry is about: its personal details
            removed = [pointer for pointer in openings if not is_field_pointer(pointer)]
            kept = {p: o for p, o in openings.items() if is_field_pointer(p)}
        if not removed:
            continue
        plan.fields.update(field_name(pointer) for pointer in removed)
        update = PersonalUpdate(row.log, row.seq, openings_text(kept), actor)
        plan.updates.append((row.timestamp, update))
    return plan


def _format_1_personal(data: dict[str, Any], actor: bool, keys: frozenset[str]) -> bool:
    """Whether a format-1 entry holds personal data of the person (as actor: any
    committed field or personal detail; as subject: a personal detail)."""
    if actor and any(data.get(name) is not None for name in ("user_email", "ip_address")):
        return True
    if actor and data.get("user_agent") is not None:
        return True
    details = data.get("details")
    return isinstance(details, dict) and bool(redact_details(details, keys)[1])


async def erase_person(
    *,
    user_id: object,
    reason: object,
    max_chars: int,
    keys: frozenset[str],
    subject_rows: Callable[[str, Sequence[str]], Awaitable[list[SubjectRow]]],
    append: Callable[[NewEvent], Awaitable[Event]],
    remove: Callable[[list[PersonalUpdate]], Awaitable[list[str]]],
) -> ErasureReport:
    """Erase the person ``user_id`` (see the module docstring)."""
    person = text_field("user_id", user_id, max_chars, required=True)
    note = text_field("reason", reason, MAX_REASON_CHARS)
    assert person is not None  # required
    column = column_text(person)
    rows = await subject_rows(column, PERSON_RESOURCES)
    if not rows:
        raise ValidationError(
            "user_id",
            f"no entry of the store has user {person!r} as its actor or subject "
            "(nothing to erase; check the id)",
        )
    plan = plan_erasure(column, rows, keys)
    details: dict[str, Any] = {
        "reason": note,
        # [field, count] pairs, not an object: a field named like a personal key
        # (ip_address) must not be taken for personal data itself.
        "erased": [[name, count] for name, count in sorted(plan.fields.items())],
        "entries": len(plan.updates),
        "format_1_entries": plan.format_1_entries,
    }
    record = await append(
        NewEvent(
            action=ERASED_ACTION,
            resource=ERASED_RESOURCE,
            resource_id=person,
            details=details,
        )
    )
    # Only what the record covers: an entry appended since keeps its data.
    updates = [update for timestamp, update in plan.updates if timestamp <= record.timestamp]
    notes = await remove(updates)
    return ErasureReport(
        person, len(updates), dict(plan.fields), plan.format_1_entries, record, tuple(notes)
    )
