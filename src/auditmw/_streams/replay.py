"""Replaying a stream from an earlier point (``auditmw stream --from SEQ|DATE``): the log
is the buffer, so a destination can be sent again anything still in the store.

The reset is itself recorded in the log, as an ``audit.stream_reset`` event (resource
``stream``, resource id the stream's name, details: the point and the cursors before and
after), before the cursors move.
"""

from __future__ import annotations

from auditmw._event import NewEvent
from auditmw._stores.filters import EventFilter, parse_time
from auditmw._stores.store import AuditStore
from auditmw._streams.cursor import StreamCursor

RESET_ACTION = "audit.stream_reset"


async def replay_cursors(store: AuditStore, point: str) -> dict[str, int]:
    """Per log, the cursor that makes delivery restart at ``point``: a seq (every log
    from that seq on) or an ISO 8601 date or date-time (each log from its first event at
    or after it). ``ValueError`` (a ``QueryError`` for a date) when it is neither."""
    backend = store.backend
    heads = {log: await backend.last_seq(log) for log in await backend.logs()}
    if point.isdigit():
        seq = int(point)
        if seq < 1:
            raise ValueError("--from: a seq starts at 1")
        return {log: min(seq - 1, head) for log, head in heads.items()}
    moment = parse_time("from", point)
    return {log: await _before(store, log, head, moment) for log, head in heads.items()}


async def _before(store: AuditStore, log: str, head: int, moment: str) -> int:
    """The seq before ``log``'s first event at or after ``moment``: a bisection over seq
    (timestamps follow seq, up to the clocks of several writers), a few reads of one
    event each."""
    low, high = 1, head + 1  # the answer, plus one, is in [low, high]
    while low < high:
        middle = (low + high) // 2
        found = await store.backend.events_after(log, middle - 1, head, 1, EventFilter())
        if not found or found[0].timestamp >= moment:
            high = middle
        else:
            low = found[0].seq + 1
    return low - 1


async def reset_stream(
    store: AuditStore, cursor: StreamCursor, cursors: dict[str, int], point: str
) -> None:
    """Record the reset in the log, then move the held ``cursor`` to ``cursors``."""
    await store.append(
        NewEvent(
            action=RESET_ACTION,
            resource="stream",
            resource_id=cursor.name,
            details={
                "from": point,
                "cursors_before": dict(cursor.state.cursors),
                "cursors_after": cursors,
            },
        )
    )
    await cursor.save(cursors=cursors, last_error=None)
