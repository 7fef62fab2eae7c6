"""Legal holds: while one is active, pruning refuses (docs/retention.md).

A hold is placed and released by appending an event (``audit.hold_placed`` /
``audit.hold_released``, resource ``legal_hold``, the hold's name as resource id), so
its state is in the hash chain: removing or editing a hold's event is tampering that
``verify`` finds. The active holds are those placed and not released since, read from
those events in chain order. An active hold's event is never pruned: a prune refuses
while it is active.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from auditmw._event import Event, NewEvent
from auditmw._stores.filters import EventFilter

HOLD_PLACED = "audit.hold_placed"
HOLD_RELEASED = "audit.hold_released"
HOLD_RESOURCE = "legal_hold"
MAX_HOLD_NAME = 200


class HoldSource(Protocol):
    def iter_events(self, filter: EventFilter) -> AsyncIterator[Event]: ...


@dataclass(frozen=True, slots=True)
class LegalHold:
    """An active hold: its ``name``, ``reason``, when and by whom it was placed, and the
    id of the event that placed it."""

    name: str
    reason: str
    placed_at: str
    placed_by: str | None
    event_id: str


async def active_holds(source: HoldSource) -> list[LegalHold]:
    """The holds placed and not released since, in the order they were placed."""
    events = [e async for e in source.iter_events(EventFilter(action=HOLD_PLACED))]
    events += [e async for e in source.iter_events(EventFilter(action=HOLD_RELEASED))]
    events.sort(key=lambda event: (event.log, event.seq))
    holds: dict[str, LegalHold] = {}
    for event in events:
        if event.resource != HOLD_RESOURCE or event.resource_id is None:
            continue
        if event.action == HOLD_RELEASED:
            holds.pop(event.resource_id, None)
            continue
        details = event.details if isinstance(event.details, dict) else {}
        reason = details.get("reason")
        holds[event.resource_id] = LegalHold(
            event.resource_id,
            reason if isinstance(reason, str) else "",
            event.timestamp,
            event.user_id,
            event.id,
        )
    return list(holds.values())


def hold_event(action: str, name: str, reason: str | None, actor: str | None) -> NewEvent:
    if not name or len(name) > MAX_HOLD_NAME or not name.isprintable():
        raise ValueError(f"a hold's name is 1 to {MAX_HOLD_NAME} printable characters")
    details = None if reason is None else {"reason": reason}
    return NewEvent(
        action=action,
        resource=HOLD_RESOURCE,
        resource_id=name,
        user_id=actor,
        details=details,
    )
