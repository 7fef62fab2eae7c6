"""How far behind each stream is: per log, its cursor, the log's head, the events between
(lag in events) and the age of the oldest of them (lag in seconds). What ``auditmw
streams`` prints (and an admin view would show)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auditmw._stores.filters import EventFilter
from auditmw._stores.store import AuditStore
from auditmw._stores.stream_state import StreamState


@dataclass(frozen=True, slots=True)
class LogLag:
    """One log of one stream."""

    log: str
    cursor: int  # last seq delivered
    head: int  # last seq committed
    oldest_waiting: str | None  # timestamp of the first event not delivered yet

    @property
    def events(self) -> int:
        return max(self.head - self.cursor, 0)

    def seconds(self, now: float) -> float:
        if self.oldest_waiting is None:
            return 0.0
        return max(now - _epoch(self.oldest_waiting), 0.0)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A stream's state and how far behind it is in each log of the store."""

    state: StreamState
    logs: list[LogLag]
    checked_at: float  # Unix time of the look

    @property
    def held(self) -> bool:
        """Whether a forwarder holds the stream's lease now."""
        return self.state.lease_owner is not None and self.state.lease_expires > self.checked_at

    def to_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "name": state.name,
            "settings": state.settings,
            "created_at": state.created_at,
            "delivered_at": state.delivered_at,
            "last_error": state.last_error,
            "lease_owner": state.lease_owner if self.held else None,
            "lease_expires": state.lease_expires if self.held else None,
            "logs": [
                {
                    "log": lag.log,
                    "cursor": lag.cursor,
                    "head": lag.head,
                    "lag_events": lag.events,
                    "lag_seconds": round(lag.seconds(self.checked_at), 3),
                }
                for lag in self.logs
            ],
        }


async def stream_statuses(store: AuditStore, name: str | None = None) -> list[StreamStatus]:
    """The status of stream ``name`` (every stream when None), by name."""
    backend = store.backend
    states = await backend.stream_states(name)
    if not states:
        return []
    heads = {log: await backend.last_seq(log) for log in await backend.logs()}
    statuses = []
    now = time.time()
    for state in states:
        lags = []
        for log in sorted(heads.keys() | state.cursors.keys()):
            cursor, head = state.cursors.get(log, 0), heads.get(log, 0)
            oldest = None
            if head > cursor:
                waiting = await backend.events_after(log, cursor, head, 1, EventFilter())
                oldest = waiting[0].timestamp if waiting else None
            lags.append(LogLag(log, cursor, head, oldest))
        statuses.append(StreamStatus(state, lags, now))
    return statuses


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
